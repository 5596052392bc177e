"""Values a vendor CLI would read as flags are refused before any vendor call (exit 2, one
line): `--image=--privileged` once reached `docker run` as a flag. So are CPU counts of
inf/nan/1e999. The stand-in vendors record every call: none may be made."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.conftest import PROVIDER, provider_toml
from tests.faults.test_vendor_faults import one_line_error

CREATE = ("host", "create", "a", "-p", PROVIDER)

REFUSED = [
    ("docker", "--image=--privileged", "--image: '--privileged' starts with '-'"),
    ("docker", "--gpus=--privileged", "--gpu '--privileged': expected a count"),
    ("docker", "--volume=--privileged", "--volume: '--privileged' starts with '-'"),
    ("docker", "--dockerfile=-f", "--dockerfile: '-f' starts with '-'"),
    ("docker", "--cpus=inf", "--cpus 'inf': expected a number greater than 0"),
    ("docker", "--cpus=nan", "--cpus 'nan': expected a number greater than 0"),
    ("docker", "--cpus=1e999", "--cpus '1e999': expected a number greater than 0"),
    ("aws", "--image=-x", "--image: '-x' starts with '-'"),
    ("aws", "--ami=--dry-run", "--ami: '--dry-run' starts with '-'"),
    ("aws", "--instance-type=-x", "--instance-type: '-x' starts with '-'"),
    ("aws", "--subnet=-x", "--subnet: '-x' starts with '-'"),
    ("aws", "--key-name=-x", "--key-name: '-x' starts with '-'"),
    ("modal", "--image=--help", "--image: '--help' starts with '-'"),
    ("modal", "--gpu=-x", "--gpu '-x': expected a count"),
    ("modal", "--region=-x", "--region: '-x' starts with '-'"),
    ("modal", "--cpus=inf", "--cpus 'inf': expected a number greater than 0"),
]


@pytest.mark.parametrize(("backend", "flag", "said"), REFUSED)
def test_a_flag_like_value_is_a_usage_error_before_any_vendor_call(
    vendor_for, mngr, backend: str, flag: str, said: str
) -> None:
    vendor = vendor_for(backend)
    result = mngr(*CREATE, flag)
    assert result.exit_code == 2, result.stderr
    assert said in one_line_error(result)
    assert vendor.calls() == []


SETTINGS = [
    ("docker", "image", "--privileged"),
    ("docker", "network", "--privileged"),
    ("docker", "context", "-x"),
    ("aws", "ami", "-x"),
    ("aws", "security_group_ids", ["sg-1", "--dry-run"]),
    ("aws", "ssh_user", "-oProxyCommand=x"),
    ("modal", "image", "--help"),
]


@pytest.mark.parametrize(("backend", "key", "value"), SETTINGS)
def test_a_flag_like_setting_is_a_configuration_error_before_any_vendor_call(
    vendor_for, mngr, user_settings: Path, backend: str, key: str, value: object
) -> None:
    vendor = vendor_for(backend)
    user_settings.write_text(provider_toml(backend, {**vendor.settings, key: value}))
    result = mngr(*CREATE)
    assert result.exit_code == 2, result.stderr
    assert f"provider '{PROVIDER}': {key}" in one_line_error(result)
    assert vendor.calls() == []
