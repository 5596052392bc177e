"""Fault injection for every real backend, through the real runner, engine and CLI.

Each backend's vendor (docker, aws, ssh, the Modal shim's interpreter, a `mngr serve`) is a
stand-in that fails the way the real one does: its real error text and exit code, output
that is not JSON or cut short, a hang past the deadline, death by a signal, absence. Each
gives the documented exit code and a one-line message; `host list` keeps listing the other
providers (exit 6 and an error row); a create that fails half-way undoes what it allocated.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.faults.conftest import (
    BACKENDS,
    GARBAGE,
    HANG,
    KILLED,
    MODAL_NO_SHIM,
    MODAL_TOKEN_MISSING,
    PROVIDER,
    SSH_DENIED,
    SSH_REFUSED,
    SSH_UNKNOWN_KEY,
    Vendor,
    aws_error,
    docker_error,
    fixture_text,
    http_error,
    modal_error,
    ok,
    point_at_nothing,
)

# A hang must end as an error within the provider's timeout plus this.
HANG_TIMEOUT_S = 1.0
HANG_BOUND_S = HANG_TIMEOUT_S + 4.0


def one_line_error(result) -> str:  # noqa: ANN001 - the CLI fixture's Result
    """The CLI's only stderr line: an error message, never a traceback."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr
    return lines[0]


def list_beside_local(mngr, vendor: Vendor) -> dict:  # noqa: ANN001
    """`host list` with a local host made beforehand: still listed, the vendor an error row."""
    assert mngr("host", "create", "keep", "-p", "local").exit_code == 0
    start = time.monotonic()
    result = mngr("host", "list", "--format", "json")
    elapsed = time.monotonic() - start
    assert result.exit_code == 6, result.stderr
    doc = json.loads(result.stdout)
    assert [(h["name"], h["provider"]) for h in doc["hosts"]] == [("keep", "local")]
    [row] = doc["errors"]
    assert row["provider"] == PROVIDER
    assert "\n" not in row["message"] and "Traceback" not in row["message"]
    doc["elapsed"] = elapsed
    return doc


def truncated(vendor: Vendor) -> dict:
    return ok(vendor.listed[: len(vendor.listed) // 2])


# --- host list ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("fault", "kind"),
    [("garbage", "bad-output"), ("truncated", "bad-output"), ("killed", None)],
)
def test_list_with_unreadable_or_killed_vendor_keeps_the_local_host(
    vendor_for, mngr, backend: str, fault: str, kind: str | None
) -> None:
    vendor = vendor_for(backend)
    answer = {"garbage": GARBAGE, "truncated": truncated(vendor), "killed": KILLED}[fault]
    vendor.answer(vendor.list_verb, answer)
    row = list_beside_local(mngr, vendor)["errors"][0]
    if kind:
        assert row["kind"] == kind
    elif backend == "mngr":  # the server died mid-request: the connection closed unanswered
        assert row["kind"] == "unreachable" and "closed connection" in row["message"]
    else:  # an error row saying what happened, never an internal crash
        assert row["kind"] in ("error", "unreachable") and "killed by SIGKILL" in row["message"]


@pytest.mark.parametrize("backend", ["aws", "modal", "mngr"])
def test_list_with_empty_vendor_output_is_an_error_row_not_no_hosts(
    vendor_for, mngr, backend: str
) -> None:
    """Nothing where JSON was due is bad output (`docker ps --format` and the ssh read script
    print nothing for none, so there it is a valid empty answer)."""
    vendor = vendor_for(backend)
    vendor.answer(vendor.list_verb, ok(""))
    assert list_beside_local(mngr, vendor)["errors"][0]["kind"] == "bad-output"


def test_aws_paging_in_a_circle_is_bad_output_not_an_endless_list(vendor_for, mngr) -> None:
    vendor = vendor_for("aws")
    page = {**json.loads(vendor.listed), "NextToken": "page-2"}
    vendor.answer("describe-instances", ok(json.dumps(page)))  # every page says: one more
    row = list_beside_local(mngr, vendor)["errors"][0]
    assert row["kind"] == "bad-output" and "NextToken" in row["message"]
    assert len(vendor.calls("describe-instances")) == 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_list_with_a_hung_vendor_times_out_and_keeps_the_local_host(
    vendor_for, mngr, backend: str
) -> None:
    vendor = vendor_for(backend, timeout_s=HANG_TIMEOUT_S)
    vendor.answer(vendor.list_verb, HANG)
    doc = list_beside_local(mngr, vendor)
    assert doc["errors"][0]["kind"] == "timeout"
    assert "within 1s" in doc["errors"][0]["message"]
    assert doc["elapsed"] < HANG_BOUND_S


@pytest.mark.parametrize("verb", ["list", "create"])
def test_a_server_trickling_its_answer_times_out_like_one_that_hangs(
    vendor_for, mngr, verb: str
) -> None:
    """Each byte comes inside the socket timeout; the whole answer never comes in time."""
    vendor = vendor_for("mngr", timeout_s=HANG_TIMEOUT_S)
    body = vendor.listed if verb == "list" else vendor.answers["create"][0]["out"]
    vendor.answer(verb, {"status": 200, "out": body, "trickle_s": HANG_TIMEOUT_S / 4})
    start = time.monotonic()
    if verb == "list":
        assert list_beside_local(mngr, vendor)["errors"][0]["kind"] == "timeout"
    else:
        result = mngr(*CREATE)
        assert result.exit_code == 1 and "within 1s" in one_line_error(result)
    assert time.monotonic() - start < HANG_BOUND_S


@pytest.mark.parametrize("backend", BACKENDS)
def test_list_with_the_vendor_missing_keeps_the_local_host(
    vendor_for, mngr, user_settings: Path, backend: str
) -> None:
    vendor = vendor_for(backend)
    point_at_nothing(vendor, user_settings)
    row = list_beside_local(mngr, vendor)["errors"][0]
    # No program to miss for the mngr backend: a server nobody answers for is unreachable.
    assert row["kind"] == ("unreachable" if backend == "mngr" else "vendor-missing")


LIST_ERRORS = [
    ("docker", docker_error("daemon_down"), "unreachable", "cannot reach the Docker daemon"),
    ("docker", docker_error("permission_denied"), "unauthorised", "not allowed to use"),
    ("docker", docker_error("ssh_denied"), "unauthorised", "ssh refused the login"),
    ("docker", docker_error("context_missing"), "config", "context not found"),
    ("aws", aws_error("no-credentials"), "unauthorised", "Unable to locate credentials"),
    ("aws", aws_error("auth-failure"), "unauthorised", "AuthFailure"),
    ("aws", aws_error("access-denied"), "unauthorised", "not authorized"),
    ("aws", aws_error("endpoint-unreachable"), "unreachable", "Could not connect"),
    ("aws", aws_error("profile-not-found"), "config", "could not be found"),
    ("ssh", SSH_REFUSED, "unreachable", "Connection refused"),
    ("ssh", SSH_DENIED, "unauthorised", "Permission denied"),
    ("ssh", SSH_UNKNOWN_KEY, "host-key", "host key is unknown"),
    ("modal", MODAL_TOKEN_MISSING, "unauthorised", "Token missing"),
    ("modal", MODAL_NO_SHIM, "vendor-missing", "cannot run the Modal shim"),
    ("modal", modal_error("unreachable", "could not connect"), "unreachable", "unreachable"),
    ("mngr", http_error(401, "unauthorised", "the bearer token is not valid"), "unauthorised", ""),
    ("mngr", {"status": 502, "out": "<html>Bad Gateway</html>"}, "unreachable", "Bad Gateway"),
    ("mngr", http_error(500, "error", "provider exploded"), "error", "provider exploded"),
]


@pytest.mark.parametrize(
    ("backend", "answer", "kind", "text"),
    LIST_ERRORS,
    ids=[f"{c[0]}-{c[2]}-{i}" for i, c in enumerate(LIST_ERRORS)],
)
def test_list_with_a_real_vendor_error_is_an_error_row(
    vendor_for, mngr, backend: str, answer: dict, kind: str, text: str
) -> None:
    vendor = vendor_for(backend)
    vendor.answer(vendor.list_verb, answer)
    row = list_beside_local(mngr, vendor)["errors"][0]
    assert row["kind"] == kind
    assert text in row["message"]


# --- verbs: exit codes --------------------------------------------------------------------

CREATE = ("host", "create", "a", "-p", PROVIDER)
STOP = ("host", "stop", "web", "-p", PROVIDER)
DESTROY = ("host", "destroy", "web", "-p", PROVIDER, "--yes")

VERB_ERRORS = [
    ("docker", CREATE, "run", docker_error("permission_denied"), 5, "not allowed to use"),
    ("docker", CREATE, "run", docker_error("image_missing"), 3, "could not be pulled"),
    ("docker", CREATE, "run", docker_error("daemon_down"), 1, "cannot reach the Docker"),
    ("docker", CREATE, "run", docker_error("start_failed"), 1, "no-such-binary"),
    ("docker", STOP, "stop", docker_error("stop_missing"), 3, "No such container"),
    ("aws", CREATE, "describe-instances", aws_error("no-credentials"), 5, "credentials"),
    ("aws", CREATE, "describe-instances", aws_error("profile-not-found"), 2, "profile"),
    ("aws", CREATE, "describe-instances", aws_error("endpoint-unreachable"), 1, "connect"),
    ("aws", STOP, "stop-instances", aws_error("instance-not-found"), 3, "does not exist"),
    ("ssh", (*CREATE, "--machine", "m1"), "claim", SSH_DENIED, 5, "Permission denied"),
    ("ssh", CREATE, "claim", SSH_DENIED, 5, "Permission denied"),
    ("ssh", CREATE, "claim", SSH_REFUSED, 1, "Connection refused"),
    ("ssh", DESTROY, "release", SSH_DENIED, 5, "Permission denied"),
    ("modal", CREATE, "create", MODAL_TOKEN_MISSING, 5, "modal token new"),
    ("modal", CREATE, "create", MODAL_NO_SHIM, 4, "cannot run the Modal shim"),
    ("modal", STOP, "stop", modal_error("not-found", "sandbox sb-1 has finished"), 3, "finished"),
    ("modal", CREATE, "create", modal_error("error", "quota exceeded"), 1, "quota exceeded"),
    ("mngr", CREATE, "create", http_error(401, "unauthorised", "bad token"), 5, "refused"),
    ("mngr", STOP, "stop", http_error(404, "not-found", "no host 'web'"), 3, "no host 'web'"),
    ("mngr", CREATE, "create", http_error(500, "error", "disk full"), 1, "disk full"),
]


@pytest.mark.parametrize(
    ("backend", "args", "verb", "answer", "code", "text"),
    VERB_ERRORS,
    ids=[f"{c[0]}-{c[1][1]}-{c[4]}-{i}" for i, c in enumerate(VERB_ERRORS)],
)
def test_a_real_vendor_error_gives_the_documented_exit_code(
    vendor_for, mngr, backend: str, args: tuple, verb: str, answer: dict, code: int, text: str
) -> None:
    vendor = vendor_for(backend)
    vendor.answer(vendor.list_verb, ok(vendor.listed))  # `web` exists, for stop and destroy
    vendor.answer(verb, answer)
    result = mngr(*args)
    assert result.exit_code == code, result.stderr
    assert text in one_line_error(result)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "ssh"])  # ssh parses no answer
@pytest.mark.parametrize("fault", ["garbage", "truncated"])
def test_create_with_unreadable_vendor_output_is_a_one_line_error(
    vendor_for, mngr, backend: str, fault: str
) -> None:
    vendor = vendor_for(backend)
    answer = GARBAGE if fault == "garbage" else ok(fixture_text_of_create(vendor)[:40])
    vendor.answer(vendor.create_verb, answer if backend != "mngr" else {**answer, "status": 201})
    result = mngr(*CREATE)
    assert result.exit_code == 1
    one_line_error(result)


def fixture_text_of_create(vendor: Vendor) -> str:
    [answer] = vendor.answers[vendor.create_verb]
    return answer["out"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_create_with_a_hung_vendor_ends_within_its_timeout(vendor_for, mngr, backend: str) -> None:
    vendor = vendor_for(backend, timeout_s=HANG_TIMEOUT_S)
    vendor.answer(vendor.create_verb, HANG)
    start = time.monotonic()
    result = mngr(*CREATE)
    assert time.monotonic() - start < HANG_BOUND_S + 1.0  # the undo makes one more call
    assert result.exit_code == 1
    assert "within 1s" in one_line_error(result)


DELETE_VERBS = {
    "docker": "rm",
    "aws": "terminate-instances",
    "ssh": "release",
    "modal": "terminate",
    "mngr": "destroy",
}


@pytest.mark.parametrize("backend", BACKENDS)
def test_destroy_with_a_hung_vendor_ends_within_its_timeout(vendor_for, mngr, backend: str) -> None:
    vendor = vendor_for(backend, timeout_s=HANG_TIMEOUT_S)
    vendor.answer(vendor.list_verb, ok(vendor.listed))
    vendor.answer(DELETE_VERBS[backend], HANG)
    start = time.monotonic()
    result = mngr(*DESTROY)
    assert time.monotonic() - start < HANG_BOUND_S
    assert result.exit_code == 1
    assert "within 1s" in one_line_error(result)
    assert len(vendor.calls(DELETE_VERBS[backend])) == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_create_with_a_killed_vendor_is_an_error_not_a_crash(
    vendor_for, mngr, backend: str
) -> None:
    vendor = vendor_for(backend)
    vendor.answer(vendor.create_verb, KILLED)
    result = mngr(*CREATE)
    assert result.exit_code == 1
    line = one_line_error(result)
    assert "internal error" not in line
    assert ("closed connection" if backend == "mngr" else "killed by SIGKILL") in line


@pytest.mark.parametrize("backend", BACKENDS)
def test_create_with_the_vendor_missing_exits_4(
    vendor_for, mngr, user_settings: Path, backend: str
) -> None:
    vendor = vendor_for(backend)
    point_at_nothing(vendor, user_settings)
    result = mngr(*CREATE)
    line = one_line_error(result)
    assert "could not undo" not in line  # nothing started, so nothing to undo
    if backend == "mngr":  # a server, not a program: unreachable
        assert result.exit_code == 1 and "cannot reach" in line
    else:
        assert result.exit_code == 4 and "not found" in line


# --- a create failing half-way undoes what it allocated -----------------------------------


def value_after(argv: list[str], flag: str) -> str:
    for index, word in enumerate(argv):
        if word == flag:
            return argv[index + 1]
        if word.startswith(flag + "="):
            return word.split("=", 1)[1]
    raise AssertionError(f"{flag} not in {argv}")


MADE = "d0" * 32  # the id of the container a failed `docker run` left


def test_docker_build_then_failed_run_removes_the_container_and_the_image(
    vendor_for, mngr, tmp_path: Path
) -> None:
    vendor = vendor_for("docker")
    vendor.answer("run", docker_error("start_failed"))  # created, then failed to start
    vendor.answer("ps", ok(MADE + "\n"))  # what carries this create's host-id label
    (tmp_path / "ctx").mkdir()
    result = mngr(*CREATE, "--build", str(tmp_path / "ctx"))
    assert result.exit_code == 1
    assert vendor.verbs() == ["build", "run", "ps", "rm", "rmi"]
    [build], [ps] = vendor.calls("build"), vendor.calls("ps")
    [rm], [rmi] = vendor.calls("rm"), vendor.calls("rmi")
    host_id = value_after(build, "--tag").removeprefix("mngr-build:")
    assert f"label=mngr.host-id={host_id}" in ps
    assert rm[-1] == MADE and "--force" in rm  # by id, never by the name `a.flaky`
    assert rmi[-1] == value_after(build, "--tag")


def test_docker_run_that_hangs_is_killed_and_its_container_removed(vendor_for, mngr) -> None:
    vendor = vendor_for("docker", timeout_s=HANG_TIMEOUT_S)
    vendor.answer("run", HANG)
    vendor.answer("ps", ok(MADE + "\n"))
    assert mngr(*CREATE).exit_code == 1
    assert vendor.verbs() == ["run", "ps", "rm"] and vendor.calls("rm")[0][-1] == MADE


def test_docker_run_printing_no_container_id_removes_the_container(vendor_for, mngr) -> None:
    vendor = vendor_for("docker")
    vendor.answer("run", GARBAGE)
    vendor.answer("ps", ok(MADE + "\n"))
    assert mngr(*CREATE).exit_code == 1
    assert vendor.verbs() == ["run", "ps", "rm"] and vendor.calls("rm")[0][-1] == MADE


def test_docker_name_conflict_removes_nothing(vendor_for, mngr) -> None:
    """The container of that name belongs to someone else: the undo must not remove it."""
    vendor = vendor_for("docker")
    clash = docker_error("name_conflict")
    clash["err"] = clash["err"].replace("busy.local_docker", f"a.{PROVIDER}")
    vendor.answer("run", clash)
    result = mngr(*CREATE)
    assert result.exit_code == 1
    assert f"host 'a' already exists in provider '{PROVIDER}'" in one_line_error(result)
    assert vendor.verbs() == ["run"]


def test_aws_launch_then_failed_wait_terminates_the_instance(vendor_for, mngr) -> None:
    vendor = vendor_for("aws")
    empty = ok(fixture_text("aws/describe-instances-empty.json"))
    vendor.answer("describe-instances", empty, aws_error("auth-failure"))  # check ok, wait fails
    result = mngr(*CREATE)
    assert result.exit_code == 5
    one_line_error(result)
    launched = json.loads(fixture_text("aws/run-instances.json"))["Instances"][0]["InstanceId"]
    assert vendor.verbs()[-1] == "terminate-instances"
    assert value_after(vendor.calls("terminate-instances")[0], "--instance-ids") == launched


def test_aws_launch_that_hangs_is_found_by_its_tag_and_terminated(vendor_for, mngr) -> None:
    vendor = vendor_for("aws", timeout_s=HANG_TIMEOUT_S)
    empty = ok(fixture_text("aws/describe-instances-empty.json"))
    vendor.answer("describe-instances", empty, ok(vendor.listed))  # then: what the tag finds
    vendor.answer("run-instances", HANG)
    assert mngr(*CREATE).exit_code == 1
    [run] = vendor.calls("run-instances")
    host_id = value_after(run, "--client-token")
    lookup = vendor.calls("describe-instances")[1]
    assert host_id in value_after(lookup, "--filters")
    assert value_after(vendor.calls("terminate-instances")[0], "--instance-ids") == (
        "i-0123456789abcdef0"
    )


def test_aws_launch_printing_garbage_terminates_what_its_tag_finds(vendor_for, mngr) -> None:
    vendor = vendor_for("aws")
    empty = ok(fixture_text("aws/describe-instances-empty.json"))
    vendor.answer("describe-instances", empty, ok(vendor.listed))
    vendor.answer("run-instances", GARBAGE)
    assert mngr(*CREATE).exit_code == 1
    assert vendor.verbs() == [
        "describe-images",
        "describe-instances",
        "run-instances",
        "describe-instances",
        "terminate-instances",
    ]


@pytest.mark.parametrize("fault", ["fails", "hangs"])
def test_ssh_claim_then_failure_releases_the_machine(vendor_for, mngr, fault: str) -> None:
    vendor = vendor_for("ssh", timeout_s=HANG_TIMEOUT_S)
    if fault == "fails":  # claimed, then the record cannot be written
        vendor.answer("write", SSH_REFUSED)
    else:  # the claim never answers: it may have happened remotely
        vendor.answer("claim", HANG)
    result = mngr(*CREATE)
    assert result.exit_code == 1
    one_line_error(result)
    [claim], [release] = vendor.calls("claim"), vendor.calls("release")
    # the same host id and name (a claim also names the provider)
    assert claim[-1].split()[-3:-1] == release[-1].split()[-2:]
    assert vendor.verbs()[-1] == "release"


@pytest.mark.parametrize("fault", ["hangs", "truncated"])
def test_modal_create_that_fails_terminates_the_sandbox(vendor_for, mngr, fault: str) -> None:
    vendor = vendor_for("modal", timeout_s=HANG_TIMEOUT_S)
    vendor.answer("create", HANG if fault == "hangs" else ok('{"id": "host-'))
    assert mngr(*CREATE).exit_code == 1
    [create], [terminate] = vendor.calls("create"), vendor.calls("terminate")
    assert value_after(terminate, "--host-id") == value_after(create, "--host-id")


# --- signals during a create of several hosts ---------------------------------------------


def wait_for(check, timeout_s: float = 20.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize(
    ("backend", "sig"),
    [
        ("docker", signal.SIGINT),
        ("docker", signal.SIGTERM),
        ("modal", signal.SIGTERM),
        ("ssh", signal.SIGINT),
    ],
)
def test_signal_during_a_create_of_several_hosts_undoes_each(
    vendor_for, backend: str, sig: signal.Signals
) -> None:
    vendor = vendor_for(backend, timeout_s=30)
    stuck = "write" if backend == "ssh" else vendor.create_verb  # ssh: claimed, then stuck
    vendor.answer(stuck, HANG)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mngr", "host", "create", "a", "b", "c", "-p", PROVIDER],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_for(lambda: len(vendor.calls(stuck)) == 3), vendor.verbs()
        proc.send_signal(sig)
        code = proc.wait(30)
    finally:
        proc.kill()
    stderr = proc.stderr.read()
    assert code == 130, stderr
    lines = stderr.strip().splitlines()
    assert lines[-1] == "error: interrupted", stderr
    assert not any("kept" in line for line in lines), stderr  # none was whole: none kept
    # docker: each undo looks up the container carrying its own create's host-id label.
    undo = {"docker": "ps", "modal": "terminate", "ssh": "release"}[backend]
    assert len(vendor.calls(undo)) == 3, vendor.verbs()
    if backend == "docker":
        labels = {w for c in vendor.calls("ps") for w in c if w.startswith("label=mngr.host-id=")}
        assert len(labels) == 3


def test_ctrl_c_during_a_list_waiting_on_a_hung_vendor_exits_130_at_once(vendor_for) -> None:
    vendor = vendor_for("docker", timeout_s=30)
    vendor.answer("ps", HANG)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mngr", "host", "list"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_for(lambda: len(vendor.calls("ps")) == 1)
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
    finally:
        proc.kill()
    assert time.monotonic() - start < 5  # the hung docker is killed, not waited for
    assert code == 130 and proc.stderr.read().strip() == "error: interrupted"
