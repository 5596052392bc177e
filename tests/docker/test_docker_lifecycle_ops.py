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


# --- gc -------------------------------------------------------------------------------------


def test_gc_lists_and_removes_exactly_the_orphans(docker_env: DockerEnv, service, tmp_path):
    import time

    from tests.docker.dockerd import TEST_IMAGE

    p, engine = docker_env.provider, docker_env.engine
    svc = service()
    kept = svc.run_one(svc.prepare_create(["kept"], provider=p))
    kept_snap = svc.run_one(svc.prepare_snapshot("kept", p, "kept-snap"))
    svc.run_one(svc.prepare_create(["gone"], provider=p))
    gone_snap = svc.run_one(svc.prepare_snapshot("gone", p, "gone-snap"))
    svc.run_one(svc.prepare_on_hosts("destroy", ["gone"], p, force=True))

    def labels(**pairs: str) -> list[str]:
        return [a for k, v in pairs.items() for a in ("--label", f"mngr.{k}={v}")]

    # What killed creates leave, made with docker itself, carrying mngr's marker:
    half = f"{'0' * 31}1"
    made = engine.docker(
        "create", "--name", f"half.{p}",
        *labels(**{"kind": "host", "provider": p, "host-id": f"host-{half}",
                   "host-name": "half", "created-at": "2026-01-01T00:00:00Z"}),
        TEST_IMAGE, "true",
    ).stdout.strip()  # fmt: skip
    partial = engine.docker(
        "create", *labels(provider=p, kind="host"), TEST_IMAGE, "true"
    ).stdout.strip()
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text(f"FROM {TEST_IMAGE}\n")
    build_labels = labels(**{"kind": "build", "provider": p, "host-id": "host-" + "2" * 32,
                             "host-name": "built"})  # fmt: skip
    engine.docker("build", "--quiet", "--tag", "mngr-build:host-" + "2" * 32,
                  *build_labels, str(tmp_path / "ctx"))  # fmt: skip
    # Not mngr's: no marker.
    unmarked = engine.docker("create", TEST_IMAGE, "true").stdout.strip()
    try:
        # Old enough: this provider's creates now take at most 3 s.
        with docker_env.settings.open("a") as f:
            f.write("timeout_s = 1\nbuild_timeout_s = 1\n")
        time.sleep(3.5)
        svc = service()
        report, batch = svc.prepare_gc([p])
        build_tag = "mngr-build:host-" + "2" * 32
        assert {o.id for o in report.delete if o.kind == "container"} == {made, partial}
        assert [o.name for o in report.delete if o.kind == "image"] == [build_tag]
        [(snap, why)] = report.kept
        assert snap.name == gone_snap.handle and "--snapshots" in why

        report, batch = svc.prepare_gc([p], snapshots=True)
        assert len(report.delete) == 4
        assert [o.error for o in svc.run(batch)] == [None] * 4

        assert svc.prepare_gc([p], snapshots=True)[0].delete == []
        [host] = service().list_hosts([p]).hosts
        assert (host.id, host.state) == (kept.id, "running")
        assert [s.id for s in svc.list_snapshots([p])[0]] == [kept_snap.id]
        assert engine.docker("inspect", unmarked, check=False).returncode == 0
    finally:
        engine.docker("rm", "--force", unmarked, check=False)


def test_gc_removes_exactly_what_creates_killed_at_each_step_left(
    docker_env: DockerEnv, mngr, tmp_path
) -> None:
    """Creates killed (SIGKILL of mngr) right after `docker build` and after `docker run`:
    the first leaves a build image no container uses, the second a host."""
    import json
    import time

    from tests.docker.dockerd import DOCKER, TEST_IMAGE
    from tests.support.killed_create import run_killed, vendor

    p, engine = docker_env.provider, docker_env.engine
    assert mngr("host", "create", "kept", "-p", p).exit_code == 0
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text(f"FROM {TEST_IMAGE}\nRUN touch /built\n")
    settings = docker_env.settings.read_text()
    for name, after in (("built", " build "), ("ran", " run ")):
        killing = vendor(tmp_path, DOCKER, kill_after=after)
        docker_env.settings.write_text(settings + f'binary = "{killing}"\n')
        run_killed("host", "create", name, "-p", p, "--build", str(tmp_path / "ctx"))
    # Old enough: this provider's creates now take at most 3 s.
    docker_env.settings.write_text(settings + "timeout_s = 1\nbuild_timeout_s = 1\n")
    time.sleep(3.5)

    def gc_plan() -> list[tuple[str, str, str | None]]:
        listed = mngr("gc", "-p", p, "--dry-run", "-f", "json")
        assert listed.exit_code == 0, listed.stderr
        return [(o["action"], o["kind"], o["name"]) for o in json.loads(listed.stdout)["orphans"]]

    [(action, kind, tag)] = gc_plan()
    assert (action, kind) == ("delete", "image") and tag.startswith("mngr-build:host-")
    labels = engine.docker("image", "inspect", tag, "--format", "{{json .Config.Labels}}")
    assert json.loads(labels.stdout)["mngr.host-name"] == "built"
    done = mngr("gc", "-p", p, "--yes")
    assert done.exit_code == 0, done.stderr

    assert gc_plan() == []
    assert engine.docker("image", "inspect", tag, check=False).returncode != 0
    listed = json.loads(mngr("host", "list", "-p", p, "-f", "json").stdout)["hosts"]
    assert {h["name"]: h["state"] for h in listed} == {"kept": "running", "ran": "running"}
    assert len(docker_env.labelled("ps")) == 2
