"""The ssh spec: config validation, argv builders and parsers (pure), and the remote scripts
run by a local `sh` exactly as the remote login shell would run them."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
from mngr_backends.ssh import (
    CLAIM_SCRIPT,
    CLAIMED_EXIT,
    EXEC_SCRIPT,
    READ_SCRIPT,
    RELEASE_SCRIPT,
    SshConfig,
    SshSpec,
    script_command,
)
from pydantic import ValidationError

from mngr.backend import CreateRequest
from mngr.errors import VendorOutputError
from mngr.records import HostState

pytestmark = pytest.mark.sshd

HOST_ID = "host-" + "a" * 32
OTHER_ID = "host-" + "b" * 32


def config(**fields: Any) -> SshConfig:
    machines = fields.pop("machines", None) or [
        {"name": "m1", "address": "10.0.0.1", "user": "dev", "identity_file": "/keys/id"},
        {"name": "m2", "address": "box.example", "port": 2222},
    ]
    return SshConfig(name="pool", backend="ssh", machines=machines, **fields)


def spec(**fields: Any) -> SshSpec:
    return SshSpec(config(known_hosts="/kh/known_hosts", **fields), "/run/user/1/mngr-ssh")


def machine(s: SshSpec, name: str = "m1"):  # noqa: ANN201 - a Machine
    return next(m for m in s.config.machines if m.name == name)


# --- config ---------------------------------------------------------------------------------


def test_defaults_check_host_keys_and_use_home_dir() -> None:
    c = config()
    assert c.accept_new is False and c.host_dir == "~/.mngr" and c.binary == "ssh"
    assert c.machines[1].port == 2222 and c.machines[1].user is None


@pytest.mark.parametrize(
    "host_dir",
    [
        "~/../etc",
        "/srv/../etc",
        "~user/x",
        "$(reboot)",
        "~/a b",
        "~/x;rm",
        "/",
        "~/",
        "-rf",
        "~/-x",
    ],
)
def test_unsafe_host_dir_is_refused(host_dir: str) -> None:
    with pytest.raises(ValidationError, match="host_dir"):
        config(host_dir=host_dir)


@pytest.mark.parametrize("host_dir", ["~/.mngr", "/srv/mngr-pool", "work/mngr", "/tmp/a_b.c"])
def test_plain_host_dirs_are_accepted(host_dir: str) -> None:
    assert config(host_dir=host_dir).host_dir == host_dir


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("address", "-oProxyCommand=x"),
        ("address", "a b"),
        ("user", "root;id"),
        ("name", "M1"),
        ("port", 0),
        ("identity_file", "/keys/%d"),
        ("host_dir", "~/../x"),
    ],
)
def test_unsafe_machine_fields_are_refused(field: str, value: Any) -> None:
    m = {"name": "m1", "address": "10.0.0.1", field: value}
    with pytest.raises(ValidationError, match=field):
        config(machines=[m])


def test_machine_names_must_be_unique() -> None:
    with pytest.raises(ValidationError, match="m1 given twice"):
        config(machines=[{"name": "m1", "address": "a"}, {"name": "m1", "address": "b"}])


def test_known_hosts_with_blanks_is_refused() -> None:
    with pytest.raises(ValidationError, match="known_hosts"):
        config(known_hosts="/my files/known_hosts")


def test_unknown_keys_are_refused() -> None:
    with pytest.raises(ValidationError):
        config(strict_host_key_checking="no")


# --- argv -----------------------------------------------------------------------------------


def test_read_argv_checks_host_keys_reuses_connections_and_quotes_the_remote_command() -> None:
    s = spec()
    command = s.read(machine(s))
    assert command.argv == [
        "ssh",
        "-o", "BatchMode=yes",
        "-o", "ConnectTimeout=10",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "UserKnownHostsFile=/kh/known_hosts",
        "-o", "LogLevel=ERROR",
        "-o", "ControlMaster=auto",
        "-o", "ControlPath=/run/user/1/mngr-ssh/%C",
        "-o", "ControlPersist=60",
        "-i", "/keys/id",
        "-o", "IdentitiesOnly=yes",
        "-p", "22",
        "-l", "dev",
        "-T",
        "--",
        "10.0.0.1",
        shlex.join(["sh", "-c", READ_SCRIPT, "mngr", ".mngr"]),
    ]  # fmt: skip
    assert command.timeout_s == 20.0  # connect timeout + 10, under the provider's 60


def test_accept_new_is_opt_in_and_checking_is_never_off() -> None:
    s = spec(accept_new=True)
    argv = s.read(machine(s, "m2")).argv
    assert "StrictHostKeyChecking=accept-new" in argv
    assert not any(a.startswith("StrictHostKeyChecking=no") for a in argv)


def test_without_connection_reuse_no_control_socket_is_used() -> None:
    s = SshSpec(config(control_persist_s=0), None)
    argv = s.read(machine(s, "m2")).argv
    assert argv[argv.index("ControlMaster=no") - 1] == "-o"
    assert "ControlPath=none" in argv and not any("%C" in a for a in argv)


def test_machine_without_user_or_key_leaves_them_to_ssh() -> None:
    s = spec()
    argv = s.read(machine(s, "m2")).argv
    assert "-l" not in argv and "-i" not in argv
    assert argv[-4:-1] == ["-T", "--", "box.example"] and argv[argv.index("-p") + 1] == "2222"


def test_default_known_hosts_is_the_users(isolated_home: Path) -> None:
    s = SshSpec(config(), None)
    assert s.known_hosts == str(isolated_home / ".ssh" / "known_hosts")


def test_absolute_and_per_machine_host_dirs_reach_the_remote_as_given() -> None:
    s = spec(
        host_dir="/srv/pool",
        machines=[
            {"name": "m1", "address": "a", "host_dir": "~/own"},
            {"name": "m2", "address": "b"},
        ],
    )
    assert shlex.split(s.read(machine(s, "m1")).argv[-1])[-1] == "own"
    assert shlex.split(s.read(machine(s, "m2")).argv[-1])[-1] == "/srv/pool"


def test_exec_passes_every_argument_as_data_never_as_shell_code() -> None:
    s = spec()
    nasty = ["printf", "%s\n", "$(touch /tmp/pwned)", "`id`", "a'b\"c", "; rm -rf ~", "*"]
    command = s.exec(machine(s), "web-1", nasty, tty=False, detach=False)
    assert command.argv[-2] == "10.0.0.1" and command.argv[-4:-2] == ["-T", "--"]
    words = shlex.split(command.argv[-1])  # what the remote login shell hands to `sh`
    assert words == ["sh", "-c", EXEC_SCRIPT, "mngr", ".mngr", "web-1", *nasty]
    assert "BatchMode=yes" not in command.argv  # attached to the user's terminal


def test_exec_asks_for_a_tty_only_when_there_is_one() -> None:
    s = spec()
    assert "-t" in s.exec(machine(s), "h", ["top"], tty=True, detach=False).argv
    assert "-T" in s.exec(machine(s), "h", ["top"], tty=False, detach=False).argv
    assert "-T" in s.shell(machine(s), "h", tty=False).argv
    assert "-t" in s.shell(machine(s), "h", tty=True).argv


def test_invalid_names_and_ids_never_reach_a_command() -> None:
    s = spec()
    with pytest.raises(Exception, match="invalid host name"):
        s.release(machine(s), HOST_ID, "../etc")
    with pytest.raises(Exception, match="invalid host id"):
        s.release(machine(s), "host-$(id)", "web")


def test_record_goes_through_stdin_not_argv() -> None:
    s = spec()
    request = CreateRequest(
        name="web", host_id=HOST_ID, created_at="2024-01-01T00:00:00Z", tags={"k": "$(x) v"}
    )
    command = s.write_record(machine(s), s.record(request, machine(s), "pool"))
    assert "$(x) v" not in " ".join(command.argv)
    assert json.loads(command.stdin or "")["tags"] == {"k": "$(x) v"}


# --- parsing --------------------------------------------------------------------------------


def test_free_machine_parses_to_no_host() -> None:
    s = spec()
    assert s.parse_read(machine(s), "pool", "") is None


def test_claim_without_record_is_a_host_being_built() -> None:
    s = spec()
    host = s.parse_read(machine(s), "pool", f"{HOST_ID} web\n")
    assert host is not None and host.state == HostState.BUILDING and host.name == "web"


def test_record_parses_to_a_running_host_on_its_machine() -> None:
    s = spec()
    record = {
        "id": HOST_ID,
        "name": "web",
        "created_at": "2024-01-01T00:00:00Z",
        "tags": {"a": "b"},
    }
    host = s.parse_read(machine(s, "m2"), "pool", f"{HOST_ID} web\n{json.dumps(record)}\n")
    assert host is not None
    assert (host.id, host.name, host.provider, host.backend) == (HOST_ID, "web", "pool", "ssh")
    assert host.state == HostState.RUNNING and host.tags == {"a": "b"}
    assert host.handle == "m2" and host.address["ssh"] == "box.example:2222"


@pytest.mark.parametrize(
    "out",
    [
        f"{HOST_ID} web\n{{not json",
        "garbage\n",
        f"{HOST_ID} Bad;Name\n",
        f"{HOST_ID} w\n[]",
        f'{HOST_ID} w\n{{"tags": {{"a": 1}}}}',
        f'{HOST_ID} w\n{{"created_at": 5}}',
        f'{HOST_ID} w\n{{"provider": "Not A Name"}}',
    ],
)
def test_unreadable_records_are_errors_naming_the_machine(out: str) -> None:
    s = spec()
    with pytest.raises(VendorOutputError, match="machine 'm1'") as caught:
        s.parse_read(machine(s), "pool", out)
    assert "\n" not in str(caught.value)  # one line, not a pydantic report


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ('{"tags": {"a": 1}}', "tags.a must be a string"),
        ('{"created_at": 5}', "created_at must be a string"),
        ("[]", "not a JSON object"),
        ("{not json", "not a JSON object"),
    ],
)
def test_an_unreadable_record_is_described_in_mngrs_words(record: str, problem: str) -> None:
    s = spec()
    with pytest.raises(VendorOutputError) as caught:
        s.parse_read(machine(s), "pool", f"{HOST_ID} w\n{record}")
    where = "machine 'm1': unreadable host record ~/.mngr/claim/host.json"
    assert str(caught.value) == f"{where}: {problem}"


def test_a_claim_without_owner_is_an_error_never_a_free_machine(tmp_path: Path) -> None:
    """A claim directory left half-made (no owner file, or an empty one) refuses every claim:
    list must say so instead of showing the machine free."""
    s = spec()
    (tmp_path / ".mngr" / "claim").mkdir(parents=True)
    for owner in (None, ""):
        if owner is not None:
            (tmp_path / ".mngr" / "claim" / "owner").write_text(owner)
        out = remote(tmp_path, READ_SCRIPT, ".mngr").stdout
        with pytest.raises(VendorOutputError, match="claim exists without an owner"):
            s.parse_read(machine(s), "pool", out)
        assert remote(tmp_path, CLAIM_SCRIPT, ".mngr", HOST_ID, "web").returncode == CLAIMED_EXIT


# --- the remote scripts, run by a local sh as the remote login shell would ----------------


def remote(
    tmp_path: Path, script: str, *values: str, stdin: str = ""
) -> subprocess.CompletedProcess:
    """Run what ssh would hand the remote login shell, in `tmp_path` as the login dir."""
    return subprocess.run(
        ["sh", "-c", script_command(script, *values)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )


def test_claim_succeeds_once_then_reports_the_owner(tmp_path: Path) -> None:
    assert remote(tmp_path, CLAIM_SCRIPT, ".mngr", HOST_ID, "web", "pool").returncode == 0
    second = remote(tmp_path, CLAIM_SCRIPT, ".mngr", OTHER_ID, "api", "pool")
    assert second.returncode == CLAIMED_EXIT and second.stdout.strip() == f"{HOST_ID} web pool"
    assert (tmp_path / ".mngr" / "claim" / "owner").read_text() == f"{HOST_ID} web pool\n"


def test_claim_reports_why_it_cannot_create_the_host_dir(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    done = remote(tmp_path, CLAIM_SCRIPT, "file/sub", HOST_ID, "web")
    assert done.returncode == 1 and "Not a directory" in done.stderr


def test_release_of_another_hosts_claim_changes_nothing(tmp_path: Path) -> None:
    remote(tmp_path, CLAIM_SCRIPT, ".mngr", HOST_ID, "web")
    (tmp_path / ".mngr" / "hosts" / "web").mkdir(parents=True)
    assert remote(tmp_path, RELEASE_SCRIPT, ".mngr", OTHER_ID, "web").returncode == 0
    assert (tmp_path / ".mngr" / "claim" / "owner").exists()
    assert (tmp_path / ".mngr" / "hosts" / "web").exists()


def test_release_removes_only_the_hosts_dir_and_the_claim(tmp_path: Path) -> None:
    remote(tmp_path, CLAIM_SCRIPT, ".mngr", HOST_ID, "web")
    base = tmp_path / ".mngr"
    (base / "hosts" / "web" / "data").mkdir(parents=True)
    (base / "hosts" / "other").mkdir()
    (base / "keep.txt").write_text("x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (base / "hosts" / "web" / "link").symlink_to(outside)
    assert remote(tmp_path, RELEASE_SCRIPT, ".mngr", HOST_ID, "web").returncode == 0
    assert sorted(p.name for p in base.iterdir()) == ["hosts", "keep.txt"]
    assert [p.name for p in (base / "hosts").iterdir()] == ["other"]
    assert outside.is_dir()
    assert remote(tmp_path, RELEASE_SCRIPT, ".mngr", HOST_ID, "web").returncode == 0  # again


def test_concurrent_releases_of_one_host_all_succeed(tmp_path: Path) -> None:
    """Two destroys of one host at once (two terminals, two `mngr serve` requests): the one
    that finds the claim already released is done, not 'mv: cannot stat claim'."""
    import threading

    remote(tmp_path, CLAIM_SCRIPT, ".mngr", HOST_ID, "web")
    base = tmp_path / ".mngr"
    for i in range(200):  # a tree that takes a while to remove: the releases overlap
        (base / "hosts" / "web" / f"d{i}" / "x").mkdir(parents=True)
    results: list[subprocess.CompletedProcess] = []
    start = threading.Barrier(4)

    def release() -> None:
        start.wait()
        results.append(remote(tmp_path, RELEASE_SCRIPT, ".mngr", HOST_ID, "web"))

    threads = [threading.Thread(target=release) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert [(r.returncode, r.stderr) for r in results] == [(0, "")] * 4
    assert [p.name for p in base.iterdir()] == ["hosts"]
    assert list((base / "hosts").iterdir()) == []


def test_read_prints_nothing_for_a_missing_or_free_host_dir(tmp_path: Path) -> None:
    assert remote(tmp_path, READ_SCRIPT, ".mngr").stdout == ""
    (tmp_path / ".mngr").mkdir()
    assert remote(tmp_path, READ_SCRIPT, ".mngr").stdout == ""


def test_exec_script_runs_argv_in_the_host_dir_without_interpreting_it(tmp_path: Path) -> None:
    (tmp_path / ".mngr" / "hosts" / "web").mkdir(parents=True)
    done = remote(tmp_path, EXEC_SCRIPT, ".mngr", "web", "sh", "-c", 'pwd; echo "$1"', "-", "$(id)")
    assert done.stdout.splitlines() == [str(tmp_path / ".mngr" / "hosts" / "web"), "$(id)"]


def test_exec_script_exits_128_plus_n_for_a_killed_command(tmp_path: Path) -> None:
    """sshd reports a signal (ssh then exits 255) when the script's own process dies by it,
    so the script must outlive the command: run it as the process sshd started would."""
    (tmp_path / ".mngr" / "hosts" / "web").mkdir(parents=True)
    argv = ["sh", "-c", EXEC_SCRIPT, "mngr", ".mngr", "web", "sh", "-c", "kill -9 $$"]
    assert subprocess.run(argv, cwd=tmp_path, capture_output=True).returncode == 137


def test_release_never_signals_pid_0_1_itself_or_a_reused_pid(tmp_path: Path) -> None:
    """`kill` stubbed by a shell function (it takes precedence over the builtin), so that
    nothing is really signalled even where the script would."""
    remote(tmp_path, CLAIM_SCRIPT, ".mngr", HOST_ID, "web", "pool")
    pids = tmp_path / ".mngr" / "claim" / "pids"
    pids.mkdir()
    for name in ("0", "1", "-1", "01", "1x", "*"):
        (pids / name).write_text("")
    (pids / str(os.getpid())).write_text("not its start time\n")
    log = tmp_path / "signalled"
    stub = f'kill() {{ echo "$*" >> {shlex.quote(str(log))}; }}; '
    done = subprocess.run(
        ["sh", "-c", stub + RELEASE_SCRIPT, "mngr", ".mngr", HOST_ID, "web"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert not log.exists(), log.read_text()
    assert not (tmp_path / ".mngr" / "claim").exists()


def test_release_of_another_hosts_claim_says_so_and_signals_nothing(tmp_path: Path) -> None:
    import signal as signals

    remote(tmp_path, CLAIM_SCRIPT, ".mngr", HOST_ID, "web", "pool")
    pids = tmp_path / ".mngr" / "claim" / "pids"
    pids.mkdir()
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        stat = Path(f"/proc/{sleeper.pid}/stat").read_text()
        (pids / str(sleeper.pid)).write_text(stat.rsplit(")", 1)[1].split()[19] + "\n")
        done = remote(tmp_path, RELEASE_SCRIPT, ".mngr", OTHER_ID, "web")
        assert done.returncode == 0 and done.stdout == f"changed {HOST_ID}\n"
        assert sleeper.poll() is None
        # Its own host's release ends it: the recorded start time is the process's.
        assert remote(tmp_path, RELEASE_SCRIPT, ".mngr", HOST_ID, "web").returncode == 0
        assert sleeper.wait(5) == -signals.SIGTERM
    finally:
        sleeper.kill()
        sleeper.wait()


# --- layering -------------------------------------------------------------------------------


def test_the_pool_backend_does_not_import_the_engine() -> None:
    """A backend builds on core and the toolkit; fan-out lives in core (mngr.fanout)."""
    import sys

    code = "import sys, mngr_backends.ssh; print('mngr.engine' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
