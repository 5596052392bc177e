"""Fixtures of the docker backend tests: captured vendor output, the CLI in-process, and the
real components (a Docker engine, an sshd for the ssh transport) the suite starts itself."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require
from tests.docker import dockerd, sshd

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "docker"


@pytest.fixture
def mngr_process() -> Callable[..., subprocess.Popen[str]]:
    """Start the CLI as its own process (for signals and attached stdio)."""

    def start(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "mngr", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    return start


def fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def captured_errors(case: str) -> list[dict[str, Any]]:
    """The real stderr of one failure, once per docker client release it was captured with."""
    return json.loads(fixture_text("errors.json"))[case]


# --- real components --------------------------------------------------------------------


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[dockerd.Engine]:
    """A real Docker engine: the running one, else a private dockerd started here."""
    why = dockerd.missing()
    require(why is None, why or "")
    try:
        engine = dockerd.find_or_start()
    except RuntimeError as exc:
        require(False, f"no Docker engine: {exc}")
        raise
    try:
        engine.build_test_image()
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def docker_sshd(docker_engine: dockerd.Engine) -> Iterator[sshd.Sshd]:
    why = sshd.missing()
    require(why is None, why or "")
    server = sshd.start(docker_engine.host)
    yield server
    server.stop()


@dataclass
class DockerEnv:
    """Providers of one test on the real engine; everything they labelled is removed after."""

    engine: dockerd.Engine
    provider: str  # backend docker, host = the engine
    settings: Path
    extra: list[str] = field(default_factory=list)

    def add_provider(self, suffix: str, **fields: str) -> str:
        """Another docker provider, named after this test's so cleaning up never touches
        anyone else's containers on a shared daemon."""
        name = f"{self.provider}-{suffix}"
        body = "".join(f"{k} = {json.dumps(v)}\n" for k, v in fields.items())
        with self.settings.open("a") as f:
            f.write(f'\n[providers.{name}]\nbackend = "docker"\n{body}')
        self.extra.append(name)
        return name

    def labelled(self, kind: str, provider: str | None = None) -> list[str]:
        """Ids of containers (kind "ps") or images (kind "image ls") of a provider."""
        label = f"label=mngr.provider={provider or self.provider}"
        args = ["ps", "-aq"] if kind == "ps" else ["image", "ls", "-aq"]
        return self.engine.docker(*args, "--filter", label).stdout.split()


@pytest.fixture
def docker_env(docker_engine: dockerd.Engine, user_settings: Path) -> Iterator[DockerEnv]:
    env = DockerEnv(docker_engine, f"dk-{secrets.token_hex(3)}", user_settings)
    with env.settings.open("a") as f:
        f.write(f'[providers.{env.provider}]\nbackend = "docker"\nhost = "{docker_engine.host}"\n')
        f.write(f'image = "{dockerd.TEST_IMAGE}"\n')
    yield env
    for provider in (env.provider, *env.extra):
        docker_engine.remove_labelled(provider)
