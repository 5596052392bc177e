"""The ssh pool acts only on what is its own (issue 11), against real sshd on loopback: a
stale destroy never releases a newer host, release never signals a process it did not
start, and two providers whose pools share a machine never see each other's hosts."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.sshd

PAUSED = str(Path(__file__).resolve().parents[1] / "support" / "paused_mngr.py")


def hosts(mngr, provider: str = "pool") -> dict[str, dict]:  # noqa: ANN001
    listed = mngr("host", "list", "-p", provider, "--format", "json")
    assert listed.exit_code == 0, listed.stderr
    return {h["name"]: h for h in json.loads(listed.stdout)["hosts"]}


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _start_time(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]


def test_a_stale_destroy_never_releases_a_newer_host_of_the_name(sshd_pool, mngr) -> None:  # noqa: ANN001
    pool = sshd_pool(1)
    assert mngr("host", "create", "web", "-p", "pool").exit_code == 0
    stale = subprocess.Popen(
        [sys.executable, PAUSED, "host", "destroy", "web", "-p", "pool", "--yes"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert stale.stderr is not None and stale.stderr.readline() == "paused\n"
    assert mngr("host", "destroy", "web", "-p", "pool", "--yes").exit_code == 0
    assert mngr("host", "create", "web", "-p", "pool").exit_code == 0  # the same machine
    newer = hosts(mngr)["web"]
    work = pool.root / "remote" / "m1" / "hosts" / "web" / "data"
    work.write_text("mine")

    out, err = stale.communicate("\n", timeout=60)
    assert stale.returncode == 1, err
    [line] = err.strip().splitlines()
    assert "host 'web' changed since this command looked it up" in line
    assert newer["id"] in line and "nothing done" in line
    assert hosts(mngr)["web"]["id"] == newer["id"] and work.read_text() == "mine"


def test_release_signals_only_the_processes_its_host_started(
    sshd_pool,
    mngr,
    mngr_process,  # noqa: ANN001
) -> None:
    pool = sshd_pool(1)
    assert mngr("host", "create", "web", "-p", "pool").exit_code == 0
    started = mngr_process("host", "exec", "--detach", "web", "--", "sleep", "300")
    assert started.exit_code == 0, started.stderr
    own = int(started.stdout.split("started pid ")[1].split()[0])
    pids = pool.root / "remote" / "m1" / "claim" / "pids"
    # An exited process's pid file, its pid since reused by an unrelated process; and pid 0,
    # which made the release script signal its own process group.
    stranger = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        (pids / str(stranger.pid)).write_text(f"{int(_start_time(stranger.pid)) - 1}\n")
        (pids / "0").write_text("")
        destroyed = mngr("host", "destroy", "web", "-p", "pool", "--yes")
        assert destroyed.exit_code == 0, destroyed.stderr
        deadline = time.monotonic() + 5
        while _alive(own):
            assert time.monotonic() < deadline, "the host's own detached process survived"
            time.sleep(0.05)
        time.sleep(0.2)
        assert stranger.poll() is None, "an unrelated process was signalled"
        assert hosts(mngr) == {}
    finally:
        stranger.kill()
        stranger.wait()


def test_pools_sharing_a_machine_never_see_or_release_each_others_hosts(
    sshd_pool,
    mngr,
    user_settings: Path,  # noqa: ANN001
) -> None:
    pool = sshd_pool(2)
    user_settings.write_text(pool.provider_toml(name="teama") + pool.provider_toml(name="teamb"))
    assert mngr("host", "create", "web", "-p", "teama", "--machine", "m1").exit_code == 0
    assert hosts(mngr, "teamb") == {}
    gone = mngr("host", "destroy", "web.teamb", "--yes")
    assert gone.exit_code == 3 and "no host 'web.teamb'" in gone.stderr
    assert list(hosts(mngr, "teama")) == ["web"]
    assert (pool.root / "remote" / "m1" / "claim").is_dir()

    taken = mngr("host", "create", "api", "-p", "teamb", "--machine", "m1")
    assert taken.exit_code == 1 and "claimed by host 'web.teama'" in taken.stderr
    # A name is unique within a provider, not across providers that share machines.
    assert mngr("host", "create", "web", "-p", "teamb").exit_code == 0
    assert hosts(mngr, "teamb")["web"]["address"]["machine"] == "m2"
    assert hosts(mngr, "teama")["web"]["address"]["machine"] == "m1"
    checked = mngr("provider", "check", "teamb", "--format", "json")
    [row] = json.loads(checked.stdout)["providers"]
    assert row["details"]["claimed"] == {"m1": "web.teama", "m2": "web"}
    assert mngr("host", "destroy", "web.teamb", "--yes").exit_code == 0
    assert list(hosts(mngr, "teama")) == ["web"]
