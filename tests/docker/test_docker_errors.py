"""Backend + runner with pytest-subprocess: the argv sent, and every failure (the real stderr
of each docker client release, a missing binary, a timeout, an interrupt) mapped to the
right error."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from mngr_backends.docker import DockerBackend, DockerConfig, DockerCreateOptions

from mngr.backend import CreateRequest
from mngr.errors import (
    ConfigError,
    ConflictError,
    InterruptedByUser,
    MngrError,
    NotFoundError,
    UnauthorisedError,
    UnreachableError,
    VendorMissingError,
    VendorTimeoutError,
)
from mngr.plan import execute
from mngr.records import Host, Snapshot
from mngr.runner import CANCELLED, Runner
from tests.docker.conftest import captured_errors, fixture_text

HOST_ID = "host-" + "a" * 32
CID = "c" * 64


def backend(**fields: object) -> DockerBackend:
    config = DockerConfig.model_validate({"name": "dk", "backend": "docker", **fields})
    return DockerBackend(config, Runner())


def request(**fields: object) -> CreateRequest:
    return CreateRequest(name="web", host_id=HOST_ID, created_at="2025-01-01T10:00:00Z", **fields)  # type: ignore[arg-type]


def a_host(**fields: object) -> Host:
    base = {"id": HOST_ID, "name": "web", "provider": "dk", "backend": "docker"}
    return Host.model_validate({"state": "running", "handle": CID, **base, **fields})


def snapshot(ref: str) -> Snapshot:
    return Snapshot(id="snap-1", name="s", host="web", provider="dk", handle=ref)


def register_failure(fp, argv: list[str], case: dict) -> None:
    fp.register(argv, returncode=case["returncode"], stdout=case["stdout"], stderr=case["stderr"])


def cases(name: str) -> list[dict]:
    return captured_errors(name)


def client_ids(name: str) -> list[str]:
    return [c["client"].split(",")[0] for c in captured_errors(name)]


# --- reaching the daemon ------------------------------------------------------------------


@pytest.mark.parametrize("case", cases("daemon_down"), ids=client_ids("daemon_down"))
def test_daemon_not_running_is_unreachable(fp, case: dict) -> None:
    b = backend(host="unix:///run/nothing.sock")
    register_failure(fp, b.spec.ps_argv(), case)
    with pytest.raises(UnreachableError, match="cannot reach the Docker daemon at unix:///run/"):
        b.list_hosts()


@pytest.mark.parametrize("name", ["tcp_down", "ssh_down"])
def test_remote_daemon_down_is_unreachable(fp, name: str) -> None:
    for case in cases(name):
        b = backend(host="ssh://root@127.0.0.2:1")
        register_failure(fp, b.spec.ps_argv(), case)
        with pytest.raises(UnreachableError) as exc:
            b.list_hosts()
        assert exc.value.exit_code == 1


@pytest.mark.parametrize("name", ["permission_denied", "ssh_denied"])
def test_permission_denied_is_unauthorised(fp, name: str) -> None:
    for case in cases(name):
        b = backend()
        register_failure(fp, b.spec.ps_argv(), case)
        with pytest.raises(UnauthorisedError) as exc:
            b.list_hosts()
        assert exc.value.exit_code == 5


def test_a_missing_context_is_a_configuration_error(fp) -> None:
    for case in cases("context_missing"):
        b = backend(context="no-such-context")
        register_failure(fp, b.spec.ps_argv(), case)
        with pytest.raises(ConfigError, match="no-such-context") as exc:
            b.list_hosts()
        assert exc.value.exit_code == 2


def test_missing_docker_binary_is_vendor_missing() -> None:
    with pytest.raises(VendorMissingError) as exc:
        backend(binary="/nonexistent/docker").list_hosts()
    assert exc.value.exit_code == 4


def stand_in_docker(folder: Path, body: str) -> str:
    """A real process in place of docker (pytest-subprocess cannot make one that hangs)."""
    script = folder / "docker"
    script.write_text(f'#!/bin/sh\necho "$@" >> {folder}/calls.log\n{body}\n')
    script.chmod(0o755)
    return str(script)


def test_a_daemon_that_does_not_answer_times_out(tmp_path: Path) -> None:
    b = backend(binary=stand_in_docker(tmp_path, "sleep 30"), timeout_s=0.3)
    with pytest.raises(VendorTimeoutError, match="did not answer within 0.3s"):
        b.list_hosts()


# --- list ---------------------------------------------------------------------------------


def test_list_is_one_call_whatever_the_number_of_hosts(fp) -> None:
    b = backend()
    fp.register(b.spec.ps_argv(), stdout=fixture_text("ps.jsonl"))
    assert len(b.list_hosts()) == 5
    fp.register(b.spec.ps_argv(), stdout="")
    assert b.list_hosts() == []
    assert len(fp.calls) == 2


def test_a_snapshot_removed_between_ls_and_inspect_drops_out(fp) -> None:
    partial = json.loads(fixture_text("inspect_partial.json"))
    b = backend()
    refs = ["sha256:" + "1" * 64, "mngr-snapshot:gone"]
    fp.register(b.spec.images_argv(), stdout="\n".join(refs) + "\n")
    fields = {k: partial[k] for k in ("returncode", "stdout", "stderr")}
    fp.register(b.spec.image_inspect_argv(refs), **fields)
    assert [s.name for s in b.list_snapshots()] == ["web-base"]


# --- create -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", cases("name_conflict"), ids=client_ids("name_conflict"))
def test_a_name_clash_is_a_conflict_and_removes_nothing(fp, case: dict) -> None:
    b = backend()
    plan = b.create_plan(request())
    register_failure(fp, plan.steps[0].command.argv, case)
    with pytest.raises(ConflictError, match="host 'busy' already exists in provider 'dk'") as exc:
        execute(plan, b)
    assert exc.value.exit_code == 1
    assert len(fp.calls) == 1  # no `docker rm`: the container belongs to the other create


@pytest.mark.parametrize("case", cases("image_missing"), ids=client_ids("image_missing"))
def test_a_missing_image_says_so(fp, case: dict) -> None:
    b = backend()
    plan = b.create_plan(request(image="no-such-image:1"))
    register_failure(fp, plan.steps[0].command.argv, case)
    fp.register(b.spec.by_host_id_argv(HOST_ID), stdout="")  # nothing made: nothing removed
    with pytest.raises(NotFoundError, match="image 'no-such-image:1' is not on the Docker host"):
        execute(plan, b)
    assert len(fp.calls) == 2  # no `docker rm`: `web.dk` may be another host's container


@pytest.mark.parametrize("case", cases("start_failed"), ids=client_ids("start_failed"))
def test_a_container_that_fails_to_start_is_removed(fp, case: dict) -> None:
    b = backend()
    plan = b.create_plan(request())
    register_failure(fp, plan.steps[0].command.argv, case)
    fp.register(b.spec.by_host_id_argv(HOST_ID), stdout=CID + "\n")
    fp.register(b.spec.rm_argv(CID, force=True))
    with pytest.raises(MngrError, match="no such file or directory") as exc:
        execute(plan, b)
    assert "could not undo" not in str(exc.value)
    assert fp.call_count(b.spec.rm_argv(CID, force=True)) == 1  # found by its host-id label


def test_undo_of_a_container_that_was_never_made_is_quiet(fp) -> None:
    b = backend()
    plan = b.create_plan(request())
    fp.register(plan.steps[0].command.argv, returncode=125, stderr="docker: boom\n")
    fp.register(b.spec.by_host_id_argv(HOST_ID), stdout=CID + "\n")
    fp.register(
        b.spec.rm_argv(CID, force=True),
        returncode=1,
        stderr=f"Error response from daemon: No such container: {CID}\n",
    )
    with pytest.raises(MngrError) as exc:
        execute(plan, b)
    assert str(exc.value) == "docker run failed (exit 125): boom"


@pytest.mark.parametrize("case", cases("build_failed"), ids=client_ids("build_failed"))
def test_a_failed_build_shows_the_builders_error_not_its_banner(fp, tmp_path, case: dict) -> None:
    b = backend()
    plan = b.create_plan(request(options=DockerCreateOptions(build=str(tmp_path))))
    register_failure(fp, plan.steps[0].command.argv, case)
    with pytest.raises(MngrError) as exc:
        execute(plan, b)
    assert "returned a non-zero code: 1" in str(exc.value)
    assert "DEPRECATED" not in str(exc.value)
    assert len(fp.calls) == 1


def test_interrupt_during_run_removes_the_built_image_and_the_container(tmp_path: Path) -> None:
    body = f'case "$1" in run) sleep 30;; ps) echo {CID};; esac'
    b = backend(binary=stand_in_docker(tmp_path, body))
    plan = b.create_plan(request(options=DockerCreateOptions(build=str(tmp_path))))
    timer = threading.Timer(0.5, CANCELLED.set)
    timer.start()
    try:
        with pytest.raises(InterruptedByUser):
            execute(plan, b)
    finally:
        timer.cancel()
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["build", "run", "ps", "rm", "rmi"]
    assert f"label=mngr.host-id={HOST_ID}" in calls[2]
    assert calls[3] == f"rm --force --volumes {CID}"
    assert calls[4] == f"rmi mngr-build:{HOST_ID}"


def test_env_values_reach_docker_on_stdin(fp) -> None:
    b = backend()
    seen: list[str] = []
    plan = b.create_plan(request(options=DockerCreateOptions(env=["TOKEN=s3cr3t"])))
    fp.register(plan.steps[0].command.argv, stdout=CID + "\n", stdin_callable=seen.append)
    host = execute(plan, b)
    assert seen == ["TOKEN=s3cr3t\n"] and host.handle == CID
    assert all("s3cr3t" not in " ".join(call) for call in fp.calls)


# --- destroy, stop, snapshots ---------------------------------------------------------------


def test_destroy_of_a_container_already_gone_is_done(fp) -> None:
    b = backend()
    [case] = cases("no_such_container")[1:]  # docker 20.10 wording
    fp.register(b.spec.stop_argv(CID), returncode=1, stderr=case["stderr"])
    fp.register(b.spec.rm_argv(CID, force=False), returncode=1, stderr=case["stderr"])
    execute(b.destroy_plan(a_host()), b)  # raises if "no such container" were a failure
    assert fp.call_count(b.spec.rm_argv(CID, force=False)) == 1


@pytest.mark.parametrize("case", cases("rm_in_progress"), ids=client_ids("rm_in_progress"))
def test_destroy_racing_another_destroy_of_the_host_is_done(fp, case: dict) -> None:
    """Concurrent destroys of one host (two `mngr serve` requests): docker tells all but one
    that the removal is already in progress; that is no failure of destroy."""
    b = backend()
    register_failure(fp, b.spec.rm_argv(CID, force=True), case)
    execute(b.destroy_plan(a_host(), force=True), b)  # raises if the race were a failure
    assert fp.call_count(b.spec.rm_argv(CID, force=True)) == 1


@pytest.mark.parametrize("case", cases("rm_running"), ids=client_ids("rm_running"))
def test_a_host_running_again_under_destroy_is_a_conflict(fp, case: dict) -> None:
    b = backend()
    fp.register(b.spec.stop_argv(CID))  # a running host is stopped first, then removed
    register_failure(fp, b.spec.rm_argv(CID, force=False), case)
    with pytest.raises(ConflictError, match="stop it first, or pass --force"):
        execute(b.destroy_plan(a_host()), b)


@pytest.mark.parametrize("case", cases("stop_missing"), ids=client_ids("stop_missing"))
def test_stop_of_a_missing_container_is_not_found(fp, case: dict) -> None:
    b = backend()
    register_failure(fp, b.spec.stop_argv(CID), case)
    with pytest.raises(NotFoundError) as exc:
        execute(b.stop_plan(a_host()), b)
    assert exc.value.exit_code == 3 and str(exc.value).startswith("No such container")


@pytest.mark.parametrize("case", cases("image_in_use"), ids=client_ids("image_in_use"))
def test_deleting_a_snapshot_a_host_runs_from_is_a_conflict(fp, case: dict) -> None:
    b = backend()
    snap = snapshot("mngr-snapshot:in-use")
    register_failure(fp, b.spec.rmi_argv("mngr-snapshot:in-use"), case)
    with pytest.raises(ConflictError, match="a host still uses this image"):
        execute(b.snapshot_delete_plan(snap), b)


@pytest.mark.parametrize("case", cases("no_such_image"), ids=client_ids("no_such_image"))
def test_deleting_a_snapshot_already_gone_is_done(fp, case: dict) -> None:
    b = backend()
    snap = snapshot("mngr-snapshot:gone")
    register_failure(fp, b.spec.rmi_argv("mngr-snapshot:gone"), case)
    execute(b.snapshot_delete_plan(snap), b)


def test_check_is_one_call_reporting_the_server(fp) -> None:
    b = backend()
    fp.register(b.spec.version_argv(), stdout=fixture_text("version.json"))
    facts = b.check()
    assert facts["reachable"] and facts["server_version"]
    assert len(fp.calls) == 1
