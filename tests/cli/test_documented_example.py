"""mngr's own documented example settings load as written (the README carries them), and with
them `host list` reports every unreachable provider as an error row a user can act on.

The network is answered by stand-ins on loopback: the aws CLI finds no profiles (an empty
config file), `ssh` (which docker runs for `ssh://user@server`) is the real client with a
config that sends `server` to a closed loopback port, and HTTPS goes through a "proxy" on a
closed loopback port. No test here reaches any address but 127.0.0.1, nor asks DNS.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
from pathlib import Path

import pytest

from tests.conftest import require

README = Path(__file__).resolve().parents[2] / "README.md"

# As the issue and mngr's documentation write it, byte for byte.
EXAMPLE = """\
[[providers]]
name = "my-aws-prod"
backend = "aws"
region = "us-east-1"
profile = "production"

[[providers]]
name = "my-aws-dev"
backend = "aws"
region = "us-west-2"
profile = "development"

[[providers]]
name = "remote-docker"
backend = "docker"
host = "ssh://user@server"

[[providers]]
name = "team-mngr"
backend = "mngr"
url = "https://mngr.internal.company.com"
"""

EXAMPLE_NAMES = ["my-aws-prod", "my-aws-dev", "remote-docker", "team-mngr"]


def readme_example() -> str:
    blocks = re.findall(r"```toml\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    found = [b for b in blocks if 'name = "my-aws-prod"' in b]
    assert len(found) == 1, "the README carries the documented example once"
    return found[0]


def closed_loopback_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (connections are refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def example_settings(user_settings: Path) -> Path:
    user_settings.write_text(readme_example(), encoding="utf-8")
    return user_settings


@pytest.fixture
def stand_ins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ssh = shutil.which("ssh")
    require(ssh is not None, "the ssh client (Debian package openssh-client)")
    require(shutil.which("docker") is not None, "the docker CLI (Debian package docker.io)")
    require(shutil.which("aws") is not None, "the aws CLI (pip install awscli)")
    aws = tmp_path / "aws-empty"
    aws.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(aws))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(aws))
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ACCESS_KEY_ID", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    # ssh reads ~/.ssh/config from the passwd home, not $HOME: wrap it to add our own.
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(
        f"Host server\n  HostName 127.0.0.1\n  Port {closed_loopback_port()}\n"
        "  ConnectTimeout 5\n  BatchMode yes\n"
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "ssh"
    wrapper.write_text(f'#!/bin/sh\nexec {ssh} -F {ssh_config} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ.get('PATH', '')}")
    proxy = f"http://127.0.0.1:{closed_loopback_port()}"
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(var, proxy)


def test_the_readme_carries_the_documented_example_verbatim() -> None:
    assert readme_example() == EXAMPLE


def test_provider_list_shows_the_four_beside_the_built_ins(example_settings, mngr) -> None:
    result = mngr("provider", "list", "--format", "json")
    assert result.exit_code == 0, result.stderr
    rows = {row["name"]: row for row in result.json()["providers"]}
    assert set(EXAMPLE_NAMES) <= set(rows) and "local" in rows
    assert rows["team-mngr"]["status"] == "configured without a token"
    assert rows["my-aws-prod"]["status"] == "configured with ssh open to 0.0.0.0/0 (key-only login)"
    table = mngr("provider", "list")
    assert table.exit_code == 0
    assert all(name in table.stdout for name in EXAMPLE_NAMES)


def test_host_list_reports_each_unreachable_provider_in_words_a_user_can_act_on(
    example_settings, stand_ins, mngr
) -> None:
    assert mngr("host", "create", "here").exit_code == 0
    started = time.monotonic()
    result = mngr("host", "list", "--format", "json")
    elapsed = time.monotonic() - started
    assert result.exit_code == 6, result.stderr
    assert elapsed < 30  # every provider failed fast; none waited for its 60 s deadline
    doc = json.loads(result.stdout)
    assert [h["name"] for h in doc["hosts"]] == ["here"]
    errors = {row["provider"]: row for row in doc["errors"]}
    assert sorted(errors) == sorted(EXAMPLE_NAMES)  # one row each
    for name, words in (
        ("my-aws-prod", ["profile (production) could not be found", "aws configure --profile"]),
        ("my-aws-dev", ["profile (development) could not be found"]),
        ("remote-docker", ["cannot reach the Docker daemon at ssh://user@server", "ssh:"]),
        ("team-mngr", ["cannot reach https://mngr.internal.company.com"]),
    ):
        message = errors[name]["message"]
        assert all(w in message for w in words), message
        assert "Traceback" not in message and "Value error" not in message
    assert "docker.example.com" not in errors["remote-docker"]["message"]  # docker's dummy URL
    table = mngr("host", "list")
    assert table.exit_code == 6 and "here" in table.stdout
    assert "Traceback" not in table.stderr
    assert len([line for line in table.stderr.splitlines() if line.startswith("error:")]) == 4


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        (
            '[providers.a]\nbackend = "local"\n\n[[providers]]\nname = "b"\nbackend = "local"\n',
            4,
            "`[[providers]]` cannot follow `[providers.NAME]` (line 1)",
        ),
        (
            EXAMPLE + "\n[providers.local_docker]\nenabled = false\n",
            len(EXAMPLE.splitlines()) + 2,
            "[providers.local_docker] follows a `[[providers]]` entry, so TOML reads it as part "
            "of provider 'team-mngr'",
        ),
    ],
)
def test_one_file_mixing_the_forms_says_what_happened_and_how_to_write_it(
    user_settings: Path, mngr, text: str, line: int, words: str
) -> None:
    user_settings.write_text(text, encoding="utf-8")
    result = mngr("provider", "list")
    assert result.exit_code == 2
    assert f"{user_settings}:{line}: {words}" in result.stderr
    assert "one form per file" in result.stderr
    assert "Cannot overwrite" not in result.stderr and "unknown key" not in result.stderr


@pytest.mark.parametrize(
    ("keys", "words"),
    [
        ("timeout_s = -5", "timeout_s must be greater than 0"),
        ('timeout_s = "soon"', "timeout_s must be a number"),
        ('enabled = "no"', "enabled must be true or false"),
        ('root = ["a"]', "root must be a string"),
    ],
)
def test_settings_errors_are_in_mngrs_words(user_settings: Path, mngr, keys, words) -> None:
    user_settings.write_text(f'[providers.box]\nbackend = "local"\n{keys}\n', encoding="utf-8")
    result = mngr("provider", "list")
    assert result.exit_code == 2
    assert f"provider 'box': {words}" in result.stderr
    assert "Value error" not in result.stderr and "Input should" not in result.stderr
