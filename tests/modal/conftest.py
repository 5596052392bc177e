"""Fixtures for the Modal backend: a local stand-in of Modal's API that the real SDK talks to
(standin.py), a test double of the `modal` SDK where the stand-in cannot go (fake_sdk/, first
on PYTHONPATH so the real shim subprocess imports it), a configured provider, the CLI with
fd-level capture (exec output comes from the shim process) and the shim run directly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Result, require

FAKE_SDK = Path(__file__).with_name("fake_sdk")
NET_GUARD = Path(__file__).with_name("netguard")
TOKEN_ID = "ak-test-token-id"
TOKEN_SECRET = "as-test-token-secret-3f9c"
SHIM = [sys.executable, "-m", "mngr_backends.modal_shim"]
COMMON = ["--app=mngr-cloud", "--volume=mngr-cloud-records"]


class FakeModal:
    """The double's state directory, seen from the test."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self._monkeypatch = monkeypatch

    def fault(self, spec: str) -> None:
        self._monkeypatch.setenv("FAKE_MODAL_FAULT", spec)

    def state(self) -> dict[str, Any]:
        path = self.root / "state.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def sandboxes(self, *, running: bool | None = None) -> list[dict[str, Any]]:
        boxes = list(self.state().get("sandboxes", {}).values())
        return [b for b in boxes if running is None or b["finished"] != running]

    def records(self) -> dict[str, dict[str, Any]]:
        volumes = self.state().get("volumes", {})
        return {
            path.removesuffix(".json").replace("/", ":", 1): json.loads(text)
            for files in volumes.values()
            for path, text in files.items()
        }

    def calls(self) -> list[dict[str, Any]]:
        path = self.root / "calls.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def fake_modal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeModal:
    """The double on PYTHONPATH, state in a temp dir, and a valid token in the environment
    under names the provider settings point at (MY_MODAL_ID / MY_MODAL_SECRET)."""
    root = tmp_path / "modal-service"
    monkeypatch.setenv("FAKE_MODAL_DIR", str(root))
    paths = [str(FAKE_SDK), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    monkeypatch.setenv("FAKE_MODAL_TOKENS", f"{TOKEN_ID}:{TOKEN_SECRET}")
    monkeypatch.setenv("MY_MODAL_ID", TOKEN_ID)
    monkeypatch.setenv("MY_MODAL_SECRET", TOKEN_SECRET)
    for var in ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET", "MODAL_PROFILE", "FAKE_MODAL_FAULT"):
        monkeypatch.delenv(var, raising=False)
    return FakeModal(root, monkeypatch)


@pytest.fixture
def standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The stand-in of Modal's API on a free loopback port, the real SDK pointed at it
    (MODAL_SERVER_URL) with a valid token under the names the provider settings point at, and
    every process of the test barred from any address outside 127.0.0.0/8 (netguard/): the
    test fails if anything tried one."""
    try:
        from tests.modal.standin import StandIn

        server = StandIn(TOKEN_ID, TOKEN_SECRET, tmp_path / "modal-standin").start()
    except Exception as exc:  # noqa: BLE001 - any failure to start is "missing"
        require(False, f"the Modal stand-in cannot start: {exc}")
        raise
    net_log = tmp_path / "non-loopback.log"
    monkeypatch.setenv("MODAL_SERVER_URL", server.url)
    monkeypatch.setenv("MODAL_TEST_NET_LOG", str(net_log))
    monkeypatch.setenv("PYTHONPATH", str(NET_GUARD))  # the real SDK: no double on the path
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("MY_MODAL_ID", TOKEN_ID)
    monkeypatch.setenv("MY_MODAL_SECRET", TOKEN_SECRET)
    for var in ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET", "MODAL_PROFILE", "MODAL_ENVIRONMENT"):
        monkeypatch.delenv(var, raising=False)
    try:
        yield server
    finally:
        server.stop()
    assert not net_log.exists(), f"reached beyond loopback: {net_log.read_text()}"
    assert server.state.unanswered == [], "the SDK asked the stand-in for more"


def _settings_writer(user_settings: Path) -> Callable[..., Path]:
    """Write the user settings: provider `cloud` (backend modal) plus any extra TOML."""

    def write(extra: str = "", **fields: Any) -> Path:
        values = {
            "backend": "modal",
            "token_id_env": "MY_MODAL_ID",
            "token_secret_env": "MY_MODAL_SECRET",
            "timeout_s": 20,
            **fields,
        }
        lines = ["[providers.cloud]"]
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items() if v is not None]
        user_settings.write_text("\n".join(lines) + "\n" + extra)
        return user_settings

    write()
    return write


@pytest.fixture
def modal_settings(user_settings: Path, fake_modal: FakeModal) -> Callable[..., Path]:
    return _settings_writer(user_settings)


@pytest.fixture
def standin_settings(user_settings: Path, standin: Any) -> Callable[..., Path]:
    return _settings_writer(user_settings)


@pytest.fixture
def cli(capfd: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """Run the CLI in-process; capture at fd level, where an attached shim writes."""
    from mngr.cli import run

    def invoke(*args: str) -> Result:
        capfd.readouterr()
        code = run(list(args))
        out, err = capfd.readouterr()
        return Result(code, out, err)

    return invoke


@pytest.fixture
def shim(fake_modal: FakeModal) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the real shim against the double: shim("list") or shim("create", "--name=a")."""
    return _shim_runner()


@pytest.fixture
def sdk_shim(standin: Any) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the real shim with the real SDK against the stand-in, as `shim` runs it."""
    return _shim_runner()


def _shim_runner() -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(
        verb: str, *args: str, token: bool = True, provider: str = "cloud", **kwargs: Any
    ) -> Any:
        env = dict(os.environ)
        if token:
            env.update(MODAL_TOKEN_ID=TOKEN_ID, MODAL_TOKEN_SECRET=TOKEN_SECRET)
        env.update(kwargs.pop("env", {}))
        return subprocess.run(
            [*SHIM, verb, *COMMON, f"--provider={provider}", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            **kwargs,
        )

    return run
