"""Fixtures of the ssh pool backend tests: a private control-socket directory per test, the
CLI in-process and as a real process, and pools of real sshd daemons on loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Result, require
from tests.ssh.sshd_pool import Pool, keygen, missing


@pytest.fixture(autouse=True)
def runtime_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Control sockets of this test only, in a short path (sockets need < 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="mngr-rt-", dir="/tmp" if os.path.isdir("/tmp") else None))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(path))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def mngr_process() -> Callable[..., Result]:
    """Run the CLI as its own process (exec/shell hand their stdio to ssh)."""

    def invoke(*args: str, stdin: str | None = None, timeout: float = 60) -> Result:
        done = subprocess.run(
            [sys.executable, "-m", "mngr", *args],
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return Result(done.returncode, done.stdout, done.stderr)

    return invoke


@pytest.fixture(scope="session")
def client_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("ssh-keygen") is None:
        require(False, "ssh-keygen is not installed")
    return keygen(tmp_path_factory.mktemp("ssh-client") / "id_ed25519")


@pytest.fixture
def sshd_pool(
    tmp_path: Path, client_key: Path, user_settings: Path
) -> Iterator[Callable[..., Pool]]:
    """start(count, **settings): `count` real sshd machines, configured as provider `pool`
    in the user settings file (each machine with its own host_dir under this test's tmp)."""
    require(missing() is None, f"real sshd cannot run here: {missing()}")
    pools: list[Pool] = []

    def start(count: int, **settings: object) -> Pool:
        pool = Pool.start(tmp_path / f"pool{len(pools)}", count, client_key)
        pools.append(pool)
        user_settings.write_text(pool.provider_toml(**settings))
        return pool

    yield start
    for pool in pools:
        pool.stop()
