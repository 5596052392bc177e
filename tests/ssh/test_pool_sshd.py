"""The ssh pool against real sshd daemons on loopback (127.0.0.2, 127.0.0.3, ...), started
by the suite with generated host keys, a client key and a private known_hosts."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.ssh.sshd_pool import keygen

pytestmark = pytest.mark.sshd


def listed(mngr) -> dict:  # noqa: ANN001
    result = mngr("host", "list", "-p", "pool", "--format", "json")
    doc = json.loads(result.stdout)
    doc["exit_code"] = result.exit_code
    return doc


def machines_of(doc: dict) -> dict[str, str]:
    return {h["name"]: h["address"]["machine"] for h in doc["hosts"]}


def claim_dirs(pool) -> list[str]:  # noqa: ANN001
    return sorted(
        m.name for m in pool.machines if (pool.root / "remote" / m.name / "claim").exists()
    )


def test_create_claims_every_machine_then_one_more_fails_cleanly(sshd_pool, mngr) -> None:  # noqa: ANN001
    pool = sshd_pool(3)
    assert mngr("host", "create", "a", "b", "c", "-p", "pool", "-t", "team=x y").exit_code == 0
    doc = listed(mngr)
    assert doc["exit_code"] == 0 and doc["errors"] == []
    assert sorted(machines_of(doc).values()) == ["m1", "m2", "m3"]
    assert all(h["state"] == "running" and h["tags"] == {"team": "x y"} for h in doc["hosts"])

    more = mngr("host", "create", "d", "-p", "pool")
    assert more.exit_code == 1
    assert "no free machine in provider 'pool'" in more.stderr
    assert sorted(machines_of(listed(mngr))) == ["a", "b", "c"]
    assert claim_dirs(pool) == ["m1", "m2", "m3"]  # nothing half-claimed or released


def test_exec_passes_the_exit_code_and_no_value_reaches_a_shell(
    sshd_pool,
    mngr,
    mngr_process,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    pool = sshd_pool(2)
    assert mngr("host", "create", "web", "-p", "pool", "--machine", "m2").exit_code == 0

    result = mngr_process("host", "exec", "web", "--", "sh", "-c", "pwd; exit 7")
    assert result.exit_code == 7, result.stderr
    assert result.stdout.strip() == str(pool.root / "remote" / "m2" / "hosts" / "web")

    trap = tmp_path / "pwned"
    nasty = f"$(touch {trap}); `touch {trap}` $HOME '\" *"
    echoed = mngr_process("host", "exec", "web", "--", "printf", "%s", nasty)
    assert echoed.exit_code == 0 and echoed.stdout == nasty
    assert not trap.exists()

    assert mngr_process("host", "exec", "web", "--", "true").exit_code == 0
    missing = mngr_process("host", "exec", "web", "--", "no-such-command-here")
    assert missing.exit_code == 127
    plain = mngr_process("host", "exec", "web", "--", "sh", "-c", "echo true > plain")
    assert plain.exit_code == 0
    assert mngr_process("host", "exec", "web", "--", "./plain").exit_code == 126
    killed = mngr_process("host", "exec", "web", "--", "sh", "-c", "kill -9 $$")
    assert killed.exit_code == 137, killed.stderr  # as in a shell; ssh alone says 255


def test_shell_without_a_tty_reads_commands_from_stdin(sshd_pool, mngr, mngr_process) -> None:  # noqa: ANN001
    pool = sshd_pool(1)
    assert mngr("host", "create", "web", "-p", "pool").exit_code == 0
    result = mngr_process("host", "shell", "web", stdin="pwd\nexit 3\n")
    assert result.exit_code == 3, result.stderr
    assert result.stdout.strip().endswith(str(pool.root / "remote" / "m1" / "hosts" / "web"))


def test_destroy_frees_the_machine_and_touches_nothing_else(sshd_pool, mngr) -> None:  # noqa: ANN001
    pool = sshd_pool(2)
    assert mngr("host", "create", "a", "b", "-p", "pool").exit_code == 0
    where = machines_of(listed(mngr))
    base = pool.root / "remote" / where["a"]
    (base / "hosts" / "a" / "work.txt").write_text("x")
    (base / "keep.txt").write_text("kept")
    assert mngr("host", "create", "c", "-p", "pool").exit_code == 1

    assert mngr("host", "destroy", "a", "-p", "pool", "--yes").exit_code == 0
    assert sorted(p.name for p in base.iterdir()) == ["hosts", "keep.txt"]
    assert list((base / "hosts").iterdir()) == []

    created = mngr("host", "create", "c", "-p", "pool", "--format", "json")
    assert created.exit_code == 0, created.stderr
    assert json.loads(created.stdout)["hosts"][0]["address"]["machine"] == where["a"]
    assert machines_of(listed(mngr)) == {"b": where["b"], "c": where["a"]}
    gone = mngr("host", "destroy", "a", "-p", "pool", "--yes", "--missing-ok")
    assert gone.exit_code == 0  # gone: fine with --missing-ok


def test_a_stopped_sshd_is_an_error_row_while_the_others_are_listed(sshd_pool, mngr) -> None:  # noqa: ANN001
    pool = sshd_pool(3)
    assert mngr("host", "create", "a", "b", "c", "-p", "pool").exit_code == 0
    down = machines_of(listed(mngr))["b"]
    next(m for m in pool.machines if m.name == down).stop()

    started = time.monotonic()
    doc = listed(mngr)
    assert time.monotonic() - started < 10
    assert doc["exit_code"] == 6
    assert sorted(machines_of(doc)) == ["a", "c"]
    [row] = doc["errors"]
    assert row["provider"] == "pool" and row["kind"] == "unreachable"
    assert row["message"].startswith(f"machine '{down}'") and "Connection refused" in row["message"]

    # Its host may still exist: never reported as gone, so never "nothing to do".
    gone = mngr("host", "destroy", "b", "-p", "pool", "--yes")
    assert gone.exit_code == 1 and "cannot tell whether host 'b' exists" in gone.stderr


def test_a_changed_host_key_is_refused(sshd_pool, mngr) -> None:  # noqa: ANN001
    pool = sshd_pool(2)
    assert mngr("host", "create", "a", "-p", "pool", "--machine", "m1").exit_code == 0
    pool.machines[0].new_host_key()  # m1 reinstalled, or someone in the middle

    doc = listed(mngr)
    assert doc["exit_code"] == 6 and doc["hosts"] == []
    [row] = doc["errors"]
    assert row["kind"] == "host-key" and "host key has CHANGED" in row["message"]
    assert "refusing to connect" in row["message"]

    chosen = mngr("host", "create", "b", "-p", "pool", "--machine", "m1")
    assert chosen.exit_code == 1 and "host key has CHANGED" in chosen.stderr


def test_accept_new_never_accepts_a_changed_host_key(sshd_pool, mngr, user_settings) -> None:  # noqa: ANN001
    pool = sshd_pool(1, accept_new=True)
    assert listed(mngr)["exit_code"] == 0
    pool.machines[0].new_host_key()
    doc = listed(mngr)
    assert doc["exit_code"] == 6 and doc["errors"][0]["kind"] == "host-key"
    assert "CHANGED" in doc["errors"][0]["message"]


def test_an_unknown_host_key_is_refused_unless_accept_new(
    sshd_pool,
    mngr,
    user_settings: Path,  # noqa: ANN001
) -> None:
    pool = sshd_pool(1)
    pool.known_hosts.write_text("")
    doc = listed(mngr)
    assert doc["exit_code"] == 6 and doc["errors"][0]["kind"] == "host-key"
    assert "host key is unknown" in doc["errors"][0]["message"]

    user_settings.write_text(pool.provider_toml(accept_new=True))
    assert listed(mngr)["exit_code"] == 0
    assert pool.known_hosts.read_text().strip()  # trusted on first use, and recorded


def test_a_wrong_client_key_is_not_authorised(
    sshd_pool,
    mngr,
    user_settings: Path,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    pool = sshd_pool(1)
    stranger = keygen(tmp_path / "stranger")
    user_settings.write_text(pool.provider_toml().replace(str(pool.client_key), str(stranger)))
    result = mngr("host", "create", "web", "-p", "pool", "--machine", "m1")
    assert result.exit_code == 5 and "not authorised" in result.stderr


def test_two_concurrent_creates_for_the_last_machine_one_wins(sshd_pool, mngr) -> None:  # noqa: ANN001
    pool = sshd_pool(2)
    assert mngr("host", "create", "first", "-p", "pool").exit_code == 0
    racers = [
        subprocess.Popen(
            [sys.executable, "-m", "mngr", "host", "create", name, "-p", "pool"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("x", "y")
    ]
    results = [(p.wait(timeout=60), p.stderr.read()) for p in racers]  # type: ignore[union-attr]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    loser = next(err for code, err in results if code == 1)
    assert "no free machine" in loser
    doc = listed(mngr)
    assert len(doc["hosts"]) == 2 and sorted(machines_of(doc).values()) == ["m1", "m2"]
    assert claim_dirs(pool) == ["m1", "m2"]


def test_one_name_is_one_host_across_the_pool(sshd_pool, mngr) -> None:  # noqa: ANN001
    pool = sshd_pool(2)
    assert mngr("host", "create", "web", "-p", "pool").exit_code == 0
    again = mngr("host", "create", "web", "-p", "pool")
    assert again.exit_code == 1 and "host 'web' already exists" in again.stderr
    assert claim_dirs(pool) == ["m1"]  # the second claim was released


def test_detached_processes_end_with_the_host(sshd_pool, mngr, mngr_process) -> None:  # noqa: ANN001
    sshd_pool(1)
    assert mngr("host", "create", "web", "-p", "pool").exit_code == 0
    started = mngr_process("host", "exec", "--detach", "web", "--", "sleep", "300")
    assert started.exit_code == 0, started.stderr
    pid = int(started.stdout.split("started pid ")[1].split()[0])
    assert _alive(pid)
    assert mngr("host", "destroy", "web", "-p", "pool", "--yes").exit_code == 0
    deadline = time.monotonic() + 5
    while _alive(pid):
        if time.monotonic() > deadline:
            pytest.fail(f"detached process {pid} outlived its host")
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    """Running (an ended, unreaped orphan is a zombie: ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_connection_reuse_keeps_sockets_in_a_private_dir(sshd_pool, mngr, runtime_dir) -> None:  # noqa: ANN001
    sshd_pool(2)
    assert listed(mngr)["exit_code"] == 0
    sockets_dir = runtime_dir / "mngr-ssh"
    assert sockets_dir.stat().st_mode & 0o777 == 0o700
    sockets = list(sockets_dir.iterdir())
    assert len(sockets) == 2 and all(len(str(s)) < 100 for s in sockets)


def test_provider_check_counts_free_machines_and_names_a_dead_one(sshd_pool, mngr) -> None:  # noqa: ANN001
    pool = sshd_pool(2)
    assert mngr("host", "create", "web", "-p", "pool", "--machine", "m2").exit_code == 0
    ok = mngr("provider", "check", "pool", "--format", "json")
    assert ok.exit_code == 0, ok.stderr
    [row] = json.loads(ok.stdout)["providers"]
    assert row["details"] == {"machines": 2, "free": 1, "claimed": {"m2": "web"}}

    pool.machines[0].stop()
    bad = mngr("provider", "check", "pool", "--format", "json")
    assert bad.exit_code == 1
    [row] = json.loads(bad.stdout)["providers"]
    assert row["ok"] is False and row["details"]["error"].startswith("machine 'm1'")


def test_a_half_made_claim_is_an_error_row_not_a_free_machine(sshd_pool, mngr) -> None:  # noqa: ANN001
    pool = sshd_pool(2)
    (pool.root / "remote" / "m1" / "claim").mkdir(parents=True)  # no owner: interrupted
    doc = listed(mngr)
    assert doc["exit_code"] == 6 and doc["hosts"] == []
    assert "claim exists without an owner" in doc["errors"][0]["message"]
    chosen = mngr("host", "create", "web", "-p", "pool", "--machine", "m1")
    assert chosen.exit_code == 1 and "without an owner" in chosen.stderr
    assert mngr("host", "create", "web", "-p", "pool").exit_code == 0  # m2 is free
    assert machines_of(listed(mngr)) == {"web": "m2"}
