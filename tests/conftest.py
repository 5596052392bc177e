"""Shared fixtures. Every test runs with HOME, XDG dirs and the working directory in a fresh
temporary folder, so no test reads or writes the developer's settings or data."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, why: str) -> None:
    """Skip when a real component is missing on a developer machine; fail in CI."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required test component missing in CI: {why}")
    pytest.skip(why)


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@pytest.fixture
def mngr(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """Run the CLI in-process, the way the console script does (after its fast paths)."""
    from mngr.cli import run

    def invoke(*args: str) -> Result:
        capsys.readouterr()
        code = run(list(args))
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return invoke


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "home"
    work = tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var, sub in (
        ("XDG_CONFIG_HOME", ".config"),
        ("XDG_DATA_HOME", ".local/share"),
        ("XDG_CACHE_HOME", ".cache"),
    ):
        monkeypatch.setenv(var, str(home / sub))
    for var in ("MNGR_DEBUG", "NO_COLOR", "DOCKER_HOST", "DOCKER_CONTEXT"):
        monkeypatch.delenv(var, raising=False)
    # The built-in local_docker exists whenever `docker` is on PATH; a test only meets it
    # when it asks for it (unset MNGR_CONFIG), never through a daemon another test started.
    quiet = tmp_path / "builtins-off.toml"
    quiet.write_text("[providers.local_docker]\nenabled = false\n")
    monkeypatch.setenv("MNGR_CONFIG", str(quiet))
    monkeypatch.chdir(work)
    from mngr.runner import CANCELLED

    CANCELLED.clear()
    yield home
    CANCELLED.clear()


@pytest.fixture
def user_settings(isolated_home: Path) -> Path:
    path = isolated_home / ".config" / "mngr" / "settings.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def fake_providers(user_settings: Path, tmp_path: Path) -> Iterator[object]:
    """Configure providers of the stand-in vendor backend: fake_providers(name=fault, ...)."""
    from mngr import registry
    from tests.support.fake_backend import FakeBackend

    registry.register("fakecli", FakeBackend)

    def configure(**faults: str) -> dict[str, Path]:
        dirs = {}
        lines = []
        for name, fault in faults.items():
            dirs[name] = tmp_path / "vendor" / name
            lines += [
                f"[providers.{name}]",
                'backend = "fakecli"',
                f'state_dir = "{dirs[name]}"',
                f'fault = "{fault}"',
                "timeout_s = 3",
                "",
            ]
        user_settings.write_text("\n".join(lines))
        return dirs

    yield configure
    registry.unregister("fakecli")


@pytest.fixture
def service() -> Callable[[], Any]:
    """The use-case layer over the settings as they are now (call it after writing them)."""
    from mngr.config import load
    from mngr.service import Service

    return lambda: Service(load())
