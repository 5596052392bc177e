"""The docker backend on the real dockerd: start from a chosen snapshot, the refusal to change
tags (stated as data), and gc."""

from __future__ import annotations

import subprocess

import pytest

from mngr.errors import UnsupportedError
from tests.docker.conftest import DockerEnv

pytestmark = pytest.mark.docker


def read(svc, host: str, path: str) -> str:
    command = svc.exec_command(host, ["cat", path])
    return subprocess.run(command.argv, capture_output=True, text=True, check=True).stdout


def write(svc, host: str, path: str, text: str) -> None:
    command = svc.exec_command(host, ["sh", "-c", f"printf %s '{text}' > {path}"])
    subprocess.run(command.argv, check=True)


def test_start_from_a_snapshot_brings_the_files_back(docker_env: DockerEnv, service) -> None:
    p = docker_env.provider
    svc = service()
    host = svc.run_one(svc.prepare_create(["web"], provider=p, tags={"team": "a"}))
    write(svc, "web", "/notes", "as at the snapshot")
    svc.run_one(svc.prepare_snapshot("web", p, "first"))
    write(svc, "web", "/notes", "changed later")
    write(svc, "web", "/later", "made later")

    restored = svc.run_one(svc.prepare_restore("web", "first", p))

    assert (restored.id, restored.name, restored.tags) == (host.id, "web", {"team": "a"})
    assert restored.handle != host.handle
    [listed] = service().list_hosts([p]).hosts
    assert (listed.id, listed.state, listed.handle) == (host.id, "running", restored.handle)
    assert read(svc, "web", "/notes") == "as at the snapshot"
    missing = subprocess.run(svc.exec_command("web", ["test", "-e", "/later"]).argv)
    assert missing.returncode == 1
    # The old container is gone: one container of this provider is left.
    assert docker_env.labelled("ps") == [restored.handle[:12]]


def test_a_failed_restore_keeps_the_old_container(docker_env: DockerEnv, service) -> None:
    p = docker_env.provider
    svc = service()
    host = svc.run_one(svc.prepare_create(["web"], provider=p))
    write(svc, "web", "/notes", "before")
    snap = svc.run_one(svc.prepare_snapshot("web", p, "first"))
    batch = svc.prepare_restore("web", "first", p)
    docker_env.engine.docker("rmi", "--force", snap.handle)  # the image goes before the run

    with pytest.raises(Exception, match="mngr-snapshot"):
        svc.run_one(batch)

    [listed] = service().list_hosts([p]).hosts
    assert (listed.id, listed.state, listed.handle) == (host.id, "running", host.handle)
    assert listed.address["container"] == f"web.{p}"
    assert read(svc, "web", "/notes") == "before"
    assert docker_env.labelled("ps") == [host.handle[:12]]


def test_docker_refuses_to_change_tags_and_says_so_as_data(docker_env: DockerEnv, service):
    p = docker_env.provider
    svc = service()
    svc.run_one(svc.prepare_create(["web"], provider=p))
    with pytest.raises(UnsupportedError, match="cannot change tags: .*labels"):
        svc.prepare_tag("web", {"team": "b"}, [], p)
    assert "labels" in svc.provider_row(p)["unsupported"]["tags"]
