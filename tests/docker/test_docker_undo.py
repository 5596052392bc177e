"""Integration: a failed docker create removes only what it made, on a real Docker engine.

The undo of `docker run` once removed the container by *name*: a typo in `--image` then
destroyed the existing host of that name, or a container mngr never made.
"""

from __future__ import annotations

import pytest
from mngr_backends.docker import DockerBackend, DockerConfig

from mngr.backend import CreateRequest
from mngr.errors import VendorTimeoutError
from mngr.names import new_host_id
from mngr.plan import execute
from mngr.records import utc_now
from mngr.runner import Command, Completed, Runner
from tests.docker import dockerd
from tests.docker.conftest import DockerEnv
from tests.server.conftest import serve, server_deps  # noqa: F401 - a real `mngr serve`

pytestmark = pytest.mark.docker

# Not on the engine, and pulling it tries a closed loopback port: fails with no traffic out.
MISSING_IMAGE = "127.0.0.1:1/mngr-no-such-image:1"


def container_id(docker_env: DockerEnv, name: str) -> str | None:
    done = docker_env.engine.docker("inspect", "--format", "{{.Id}}", name, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def test_a_failed_second_create_keeps_the_existing_host(docker_env: DockerEnv, mngr):
    p = docker_env.provider
    assert mngr("host", "create", "web", "-p", p).exit_code == 0
    before = container_id(docker_env, f"web.{p}")
    failed = mngr("host", "create", "web", "-p", p, "--image", MISSING_IMAGE)
    assert failed.exit_code == 3, failed.stderr
    assert "is not on the Docker host" in failed.stderr
    assert "could not undo" not in failed.stderr
    assert before is not None and container_id(docker_env, f"web.{p}") == before
    listed = mngr("host", "list", "-p", p, "--format", "json").json()["hosts"]
    assert [(h["name"], h["state"]) for h in listed] == [("web", "running")]


def test_a_failed_create_keeps_a_container_mngr_never_made(docker_env: DockerEnv, mngr):
    p = docker_env.provider
    engine = docker_env.engine
    stranger = engine.docker(
        "run", "--detach", "--name", f"web.{p}", dockerd.TEST_IMAGE, "sleep", "300"
    ).stdout.strip()
    try:
        failed = mngr("host", "create", "web", "-p", p, "--image", MISSING_IMAGE)
        assert failed.exit_code == 3, failed.stderr
        assert container_id(docker_env, f"web.{p}") == stranger
    finally:
        engine.docker("rm", "--force", stranger, check=False)


def test_a_failed_create_through_serve_keeps_a_container_of_that_name(
    docker_env: DockerEnv,
    serve,  # noqa: F811 - the fixture imported above
):
    """A read-write token could delete any container of the server's daemon this way."""
    p = docker_env.provider
    engine = docker_env.engine
    settings = f'[providers.{p}]\nbackend = "docker"\nhost = "{engine.host}"\n'
    server = serve("--provider", p, settings=settings)
    stranger = engine.docker(
        "run", "--detach", "--name", f"db.{p}", dockerd.TEST_IMAGE, "sleep", "300"
    ).stdout.strip()
    try:
        answer = server.api(
            "POST", "/v1/hosts", {"name": "db", "provider": p, "image": MISSING_IMAGE}
        )
        assert answer.status == 404, answer.body
        assert container_id(docker_env, f"db.{p}") == stranger
    finally:
        engine.docker("rm", "--force", stranger, check=False)


def test_a_container_that_fails_to_start_is_removed_and_nothing_else(docker_env: DockerEnv, mngr):
    p = docker_env.provider
    assert mngr("host", "create", "keep", "-p", p).exit_code == 0
    kept = container_id(docker_env, f"keep.{p}")
    # Created, then refused at start: the test image has no /etc/passwd.
    failed = mngr("host", "create", "api", "-p", p, "--start-arg=--user=nobody-here")
    assert failed.exit_code == 1, failed.stderr
    assert "could not undo" not in failed.stderr
    assert container_id(docker_env, f"api.{p}") is None
    assert docker_env.labelled("ps") == [kept[:12]]


class TimesOutAfterRun(Runner):
    """`docker run` makes its container, then the call counts as timed out (no id read)."""

    def run(self, command: Command, *, check: bool = True, cancellable: bool = True) -> Completed:
        done = super().run(command, check=check, cancellable=cancellable)
        if "run" in command.argv:
            raise VendorTimeoutError("docker run did not answer within 1s")
        return done


def test_a_run_that_times_out_removes_only_the_container_of_its_own_host_id(
    docker_env: DockerEnv, mngr
):
    p = docker_env.provider
    engine = docker_env.engine
    assert mngr("host", "create", "keep", "-p", p).exit_code == 0
    kept = container_id(docker_env, f"keep.{p}")
    stranger = engine.docker(
        "run", "--detach", "--name", f"late.{p}-x", dockerd.TEST_IMAGE, "sleep", "300"
    ).stdout.strip()
    try:
        config = DockerConfig(name=p, backend="docker", host=engine.host, image=dockerd.TEST_IMAGE)
        backend = DockerBackend(config, TimesOutAfterRun())
        request = CreateRequest(name="late", host_id=new_host_id(), created_at=utc_now())
        with pytest.raises(VendorTimeoutError) as exc:
            execute(backend.create_plan(request), backend)
        assert "could not undo" not in str(exc.value)
        assert container_id(docker_env, f"late.{p}") is None  # found by its label, removed
        assert docker_env.labelled("ps") == [kept[:12]]
        assert container_id(docker_env, f"late.{p}-x") == stranger
    finally:
        engine.docker("rm", "--force", stranger, check=False)
