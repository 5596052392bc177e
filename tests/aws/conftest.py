"""Fixtures of the aws backend tests: a backend over a recording runner (for `fp` tests), the
in-process CLI, and a real moto server driven by the real aws CLI."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.aws.motoserver import CREDENTIALS, IMAGE, MotoServer, aws_binary, moto_available
from tests.conftest import require


@pytest.fixture
def aws_backend() -> Callable[..., Any]:
    """An AwsBackend named `cloud` (binary `aws`) that never sleeps between retries or polls."""
    from mngr_backends.aws import AwsBackend, AwsConfig

    from mngr.runner import Runner

    def make(**settings: Any) -> AwsBackend:
        fields = {"name": "cloud", "backend": "aws", "region": "us-east-1", **settings}
        backend = AwsBackend(AwsConfig(**fields), Runner())
        backend.retry_delays_s = (0.0, 0.0, 0.0)
        backend.poll_delays_s = (0.0,)
        return backend

    return make


@pytest.fixture
def aws_settings(user_settings: Path) -> Callable[..., Path]:
    """Write aws providers to the user settings: aws_settings(name={key: value, ...})."""

    def write(**providers: dict[str, Any]) -> Path:
        lines = []
        for name, settings in providers.items():
            lines += [f"[providers.{name}]", 'backend = "aws"']
            lines += [f"{key} = {_toml(value)}" for key, value in settings.items()]
            lines.append("")
        user_settings.write_text("\n".join(lines), encoding="utf-8")
        return user_settings

    return write


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- the real aws CLI against a local moto server -----------------------------------------


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    require(aws_binary() is not None, "the aws CLI is not installed (pip install awscli)")
    require(moto_available(), "moto is not installed (pip install 'moto[server]')")
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    server.stop()


@pytest.fixture
def moto(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """A clean moto server, and dummy credentials in the environment (never in argv)."""
    moto_server.reset()
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(key, raising=False)
    return moto_server


@pytest.fixture
def moto_provider(moto: MotoServer) -> Callable[..., dict[str, Any]]:
    """Settings of a provider on the moto server (region us-east-1 unless given). Its
    instances have no reachable address: create returns once they run (`wait_for_ssh`)."""

    def settings(**overrides: Any) -> dict[str, Any]:
        return {
            "region": "us-east-1",
            "endpoint_url": moto.url,
            "ami": IMAGE,
            "binary": aws_binary(),
            "wait_timeout_s": 30,
            "wait_for_ssh": False,
            **overrides,
        }

    return settings
