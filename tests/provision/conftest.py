"""Fixtures of the provisioning tests: real pyinfra (the provision extra) driving hosts of the
real Docker engine, of a real sshd pool and of the local backend, through mngr's connector."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import require
from tests.docker.conftest import docker_engine  # noqa: F401 - the session's real engine
from tests.docker.dockerd import TEST_IMAGE, Engine
from tests.ssh.conftest import client_key, runtime_dir, sshd_pool  # noqa: F401

try:
    import pyinfra  # noqa: F401

    PYINFRA = True
except ImportError:
    PYINFRA = False


@pytest.fixture(autouse=True)
def needs_pyinfra() -> None:
    require(PYINFRA, "pyinfra is not installed (pip install -e '.[dev]')")


@pytest.fixture
def add_docker(user_settings: Path) -> Iterator[Callable[[Engine], str]]:
    """Append a docker provider on the engine to the user settings (after a pool, which
    writes the file): its name, unique to this test; its containers are removed after it."""
    added: list[tuple[Engine, str]] = []

    def add(engine: Engine) -> str:
        name = f"dk-{secrets.token_hex(3)}"
        with user_settings.open("a") as f:
            f.write(f'\n[providers.{name}]\nbackend = "docker"\nhost = "{engine.host}"\n')
            f.write(f'image = "{TEST_IMAGE}"\n')
        added.append((engine, name))
        return name

    yield add
    for engine, name in added:
        engine.remove_labelled(name)


def on_host(ref: str, *argv: str) -> str:
    """What argv prints on a host, through mngr's transport."""
    from mngr import config
    from mngr.service import Service

    cmd = Service(config.load(None)).exec_command(ref, list(argv))
    return subprocess.run(cmd.argv, cwd=cmd.cwd, capture_output=True, check=True).stdout.decode()
