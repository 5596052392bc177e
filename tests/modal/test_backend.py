"""ModalBackend: the shim argv it builds (pure), its settings, and mngr <-> shim failure
paths through pytest-subprocess (non-zero exits, garbage JSON, a hang past the deadline)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from mngr_backends.modal import ModalBackend, ModalConfig, ModalCreateOptions
from pydantic import ValidationError

from mngr.backend import CreateRequest
from mngr.errors import (
    ConflictError,
    MngrError,
    NotFoundError,
    UnauthorisedError,
    UnreachableError,
    VendorMissingError,
    VendorOutputError,
    VendorTimeoutError,
)
from mngr.records import Host, HostState, Snapshot
from mngr.runner import Runner

PY = sys.executable
SHIM = [PY, "-m", "mngr_backends.modal_shim"]
COMMON = ["--app=mngr-cloud", "--volume=mngr-cloud-records", "--provider=cloud"]
HOST_ID = "host-" + "a" * 32
SECRET = "as-very-secret-value"


@pytest.fixture
def tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_ID", "ak-id")
    monkeypatch.setenv("MY_SECRET", SECRET)


def backend(**fields: Any) -> ModalBackend:
    values = {"name": "cloud", "backend": "modal", "timeout_s": 2, **fields}
    return ModalBackend(ModalConfig(**values), Runner())


def running(**more: Any) -> Host:
    return Host(
        id=HOST_ID,
        name="web",
        provider="cloud",
        backend="modal",
        state=HostState.RUNNING,
        handle="sb-123",
        **more,
    )


HOST_JSON = {
    "id": HOST_ID,
    "name": "web",
    "state": "running",
    "image": "debian_slim",
    "created_at": "2026-01-01T00:00:00Z",
    "tags": {"team": "a"},
    "resources": {"cpus": 2.0, "memory_gb": 4.0, "gpus": None},
    "sandbox_id": "sb-123",
    "snapshots": [],
}


# --- argv (pure) -------------------------------------------------------------------------


def test_create_argv_carries_the_request_as_flags() -> None:
    from mngr import resources

    options = ModalCreateOptions(timeout=600)
    request = CreateRequest(
        resources=resources.parse(cpus="2", memory="1.5g", gpu="A10G"),
        name="web",
        host_id=HOST_ID,
        created_at="2026-01-01T00:00:00Z",
        image="python:3.12",
        tags={"team": "a b"},
        options=options,
    )
    plan = backend(region="us-east").create_plan(request)
    [step] = plan.steps
    assert step.command is not None
    assert step.command.argv == [
        *SHIM,
        "create",
        *COMMON,
        "--name=web",
        f"--host-id={HOST_ID}",
        "--created-at=2026-01-01T00:00:00Z",
        "--image=python:3.12",
        "--cpus=2",
        "--memory-mib=1536",
        "--gpu=A10G",
        "--timeout=600",
        "--region=us-east",
        "--tag=team=a b",
    ]
    assert step.undo is not None and step.undo_if_failed
    assert step.undo.command.argv == [*SHIM, "terminate", *COMMON, f"--host-id={HOST_ID}"]


def test_create_from_a_snapshot_names_the_snapshot_not_an_image() -> None:
    snap = Snapshot(id="snap-" + "1" * 32, name="s", host="old", provider="cloud")
    request = CreateRequest(
        name="web", host_id=HOST_ID, created_at="t", image="ignored", from_snapshot=snap
    )
    argv = backend(image="debian:12").create_plan(request).steps[0].command.argv
    assert f"--from-snapshot={snap.id}" in argv
    assert not any(a.startswith("--image") for a in argv)


@pytest.mark.parametrize(
    ("text", "mib"), [("512m", 512), ("2g", 2048), ("1.5g", 1536), ("2GiB", 2048), ("1t", 1048576)]
)
def test_memory_sizes_become_mib(text: str, mib: int) -> None:
    from mngr import resources

    request = CreateRequest(
        name="web", host_id=HOST_ID, created_at="2026-01-01T00:00:00Z",
        resources=resources.parse(memory=text),
    )  # fmt: skip
    assert f"--memory-mib={mib}" in backend().create_plan(request).steps[0].command.argv


def test_a_gpu_count_alone_is_refused_modal_needs_a_type() -> None:
    from mngr import resources
    from mngr.errors import UsageError

    request = CreateRequest(
        name="web", host_id=HOST_ID, created_at="2026-01-01T00:00:00Z",
        resources=resources.parse(gpu="2"),
    )  # fmt: skip
    with pytest.raises(UsageError, match="Modal needs a GPU type"):
        backend().create_plan(request)


def test_app_defaults_to_the_provider_name_and_the_environment_is_passed() -> None:
    argv = backend(environment="dev").shim("list").argv
    assert argv[:5] == [*SHIM, "list", "--app=mngr-cloud"]
    assert "--environment=dev" in argv
    assert backend(app="shared").shim("list").argv[4:6] == [
        "--app=shared",
        "--volume=shared-records",
    ]


def test_token_values_travel_in_the_environment_never_in_argv(tokens) -> None:
    command = backend(token_id_env="MY_ID", token_secret_env="MY_SECRET", profile="work").shim(
        "list"
    )
    assert command.env == {
        "MODAL_TOKEN_ID": "ak-id",
        "MODAL_TOKEN_SECRET": SECRET,
        "MODAL_PROFILE": "work",
    }
    assert not any(SECRET in a for a in command.argv)


def test_an_unset_token_variable_is_unauthorised_with_the_fix(monkeypatch) -> None:
    monkeypatch.delenv("MY_ID", raising=False)
    with pytest.raises(UnauthorisedError, match=r"\$MY_ID, which is not set; fix: export MY_ID"):
        backend(token_id_env="MY_ID", token_secret_env="MY_SECRET").shim("list")


def test_token_env_names_go_together_and_must_be_names() -> None:
    with pytest.raises(ValidationError, match="set both or neither"):
        ModalConfig(name="c", backend="modal", token_id_env="A")
    with pytest.raises(ValidationError, match="name of an environment variable"):
        ModalConfig(name="c", backend="modal", token_id_env="ak-123:xyz", token_secret_env="B")


def test_exec_runs_the_shim_attached_with_the_sandbox_id() -> None:
    command = backend().exec_command(running(), ["make", "test"], tty=True)
    assert command.argv == [
        *SHIM,
        "exec",
        *COMMON,
        "--sandbox-id=sb-123",
        "--tty",
        "--",
        "make",
        "test",
    ]


def test_stop_and_start_of_a_host_already_there_do_nothing() -> None:
    stopped = running().model_copy(update={"state": HostState.STOPPED})
    assert backend().stop_plan(stopped).steps == []
    assert backend().start_plan(running()).steps == []


def test_stop_is_one_snapshot_and_terminate_call_with_the_long_deadline() -> None:
    [step] = backend(long_timeout_s=300).stop_plan(running()).steps
    assert step.command.argv[3] == "stop" and step.command.timeout_s == 300
    assert "--sandbox-id=sb-123" in step.command.argv
    assert "--snapshot-timeout=270" in step.command.argv


# --- mngr <-> shim through pytest-subprocess ---------------------------------------------


def shim_call(verb: str) -> list[Any]:
    return [*SHIM, verb, *COMMON]


def test_list_parses_hosts(fp) -> None:
    fp.register(shim_call("list"), stdout=json.dumps({"hosts": [HOST_JSON], "snapshots": []}))
    [host] = backend().list_hosts()
    assert host.name == "web" and host.state == HostState.RUNNING and host.backend == "modal"
    assert host.handle == "sb-123" and host.address == {
        "app": "mngr-cloud",
        "sandbox_id": "sb-123",
    }
    assert host.resources.cpus == 2.0 and host.tags == {"team": "a"}


def test_the_token_reaches_the_shim_environment(fp, tokens) -> None:
    recorder = fp.register(shim_call("list"), stdout='{"hosts": [], "snapshots": []}')
    backend(token_id_env="MY_ID", token_secret_env="MY_SECRET").list_hosts()
    env = recorder.calls[0].kwargs["env"]
    assert env["MODAL_TOKEN_ID"] == "ak-id" and env["MODAL_TOKEN_SECRET"] == SECRET


@pytest.mark.parametrize(
    ("kind", "code", "error", "text"),
    [
        ("unauthorised", 5, UnauthorisedError, "Modal refused provider 'cloud': Token missing."),
        ("not-found", 3, NotFoundError, "modal list: gone"),
        ("conflict", 1, ConflictError, "modal list: taken"),
        ("unreachable", 1, UnreachableError, "Modal is unreachable (modal list)"),
        ("vendor-missing", 4, VendorMissingError, "install mngr[modal]"),
        ("error", 1, MngrError, "modal list: boom"),
    ],
)
def test_the_shim_error_kind_becomes_the_mngr_error(fp, kind, code, error, text) -> None:
    messages = {
        "unauthorised": "Token missing. Could not authenticate client.",
        "not-found": "gone",
        "conflict": "taken",
        "unreachable": "Could not connect",
        "vendor-missing": "no modal",
        "error": "boom",
    }
    fix = "install mngr[modal] or set python" if kind == "vendor-missing" else "run modal token new"
    report = json.dumps({"kind": kind, "message": messages[kind], "fix": fix})
    fp.register(shim_call("list"), returncode=code, stderr=f"UserWarning: noise\n{report}\n")
    with pytest.raises(error) as caught:
        backend().list_hosts()
    assert text in str(caught.value)
    assert type(caught.value).exit_code == error.exit_code


def test_unauthorised_with_token_env_names_points_at_them(fp, tokens) -> None:
    report = {"kind": "unauthorised", "message": "Invalid token", "fix": "x"}
    fp.register(shim_call("list"), returncode=5, stderr=json.dumps(report))
    with pytest.raises(UnauthorisedError) as caught:
        backend(token_id_env="MY_ID", token_secret_env="MY_SECRET").list_hosts()
    assert "check that $MY_ID and $MY_SECRET hold a valid Modal token" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_garbage_json_is_bad_output(fp) -> None:
    fp.register(shim_call("list"), stdout="<html>502 Bad Gateway</html>\n")
    with pytest.raises(VendorOutputError, match="`modal shim list` printed output mngr cannot"):
        backend().list_hosts()


def test_json_of_the_wrong_shape_is_bad_output(fp) -> None:
    fp.register(shim_call("list"), stdout='{"hosts": [{"name": "no id"}]}')
    with pytest.raises(VendorOutputError, match=r"cannot read \(hosts.0.id is required\)"):
        backend().list_hosts()


def test_a_crash_without_json_reports_its_last_line(fp) -> None:
    trace = 'Traceback (most recent call last):\n  File "x"\nRuntimeError: kaboom\n'
    fp.register(shim_call("list"), returncode=1, stderr=trace)
    with pytest.raises(MngrError, match=r"modal shim list failed \(exit 1\): RuntimeError: kaboom"):
        backend().list_hosts()


def test_an_interpreter_without_mngr_is_vendor_missing(fp) -> None:
    stderr = "/usr/bin/python3: Error while finding module specification for "
    stderr += "'mngr_backends.modal_shim' (ModuleNotFoundError: No module named 'mngr_backends')\n"
    fp.register(shim_call("list"), returncode=1, stderr=stderr)
    with pytest.raises(VendorMissingError, match="cannot run the Modal shim"):
        backend().list_hosts()


def test_a_missing_interpreter_is_vendor_missing_naming_the_setting() -> None:
    with pytest.raises(VendorMissingError, match="set python = "):
        backend(python="/nonexistent/python3").list_hosts()


def test_a_hang_past_the_deadline_is_a_timeout(fp) -> None:
    def hang(process: Any) -> None:
        raise subprocess.TimeoutExpired(process.args, 0.1)

    fp.register(shim_call("list"), callback=hang)
    with pytest.raises(VendorTimeoutError, match="did not answer within 2s"):
        backend().list_hosts()


def test_create_plan_parses_the_new_host(fp) -> None:
    from mngr.plan import execute

    fp.register([*shim_call("create"), fp.any()], stdout=json.dumps(HOST_JSON))
    request = CreateRequest(name="web", host_id=HOST_ID, created_at="t")
    host = execute(backend().create_plan(request), backend())
    assert host.id == HOST_ID and host.state == HostState.RUNNING


def test_a_failed_create_terminates_what_it_may_have_made(fp) -> None:
    from mngr.plan import execute

    report = json.dumps({"kind": "error", "message": "set_tags failed", "fix": ""})
    fp.register([*shim_call("create"), fp.any()], returncode=1, stderr=report)
    undo = fp.register([*shim_call("terminate"), f"--host-id={HOST_ID}"], stdout="{}")
    b = backend()
    with pytest.raises(MngrError, match="set_tags failed"):
        execute(b.create_plan(CreateRequest(name="web", host_id=HOST_ID, created_at="t")), b)
    assert undo.call_count() == 1


def test_a_conflicting_create_touches_nothing(fp) -> None:
    from mngr.plan import execute

    report = json.dumps({"kind": "conflict", "message": "already exists", "fix": ""})
    fp.register([*shim_call("create"), fp.any()], returncode=1, stderr=report)
    b = backend()
    with pytest.raises(ConflictError):
        execute(b.create_plan(CreateRequest(name="web", host_id=HOST_ID, created_at="t")), b)
    assert fp.call_count([*shim_call("terminate"), fp.any()]) == 0


def test_snapshots_parse(fp) -> None:
    snap = {"id": "snap-" + "1" * 32, "name": "s", "host": "web", "created_at": "t"}
    fp.register(
        [*shim_call("list-snapshots"), f"--host-id={HOST_ID}"],
        stdout=json.dumps({"snapshots": [{**snap, "image_id": "im-1"}]}),
    )
    [parsed] = backend().list_snapshots(running())
    assert parsed.id == snap["id"] and parsed.provider == "cloud" and parsed.handle == "im-1"


def test_shell_is_an_attached_exec_of_a_login_shell() -> None:
    command = backend().shell_command(running(), tty=True)
    assert command.argv[3] == "exec" and "--tty" in command.argv
    assert command.argv[-3:-1] == ["sh", "-c"] and "bash -l" in command.argv[-1]
