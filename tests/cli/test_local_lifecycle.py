"""The local backend's whole lifecycle through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def hosts(mngr) -> dict[str, dict]:
    return {
        h["name"]: h for h in json.loads(mngr("host", "list", "--format", "json").stdout)["hosts"]
    }


def test_create_list_destroy_round_trip(mngr) -> None:
    assert mngr("host", "create", "web-1", "--tag", "team=a b,c=d").exit_code == 0
    listed = mngr("host", "list", "--format", "json")
    assert listed.exit_code == 0
    doc = json.loads(listed.stdout)
    assert doc["schema_version"] == 1 and doc["errors"] == []
    [host] = doc["hosts"]
    assert host["name"] == "web-1" and host["provider"] == "local" and host["state"] == "running"
    assert host["tags"] == {"team": "a b,c=d"}
    assert host["id"].startswith("host-") and len(host["id"]) == 37
    for key in ("backend", "image", "created_at", "resources", "address", "snapshots"):
        assert key in host
    assert mngr("host", "destroy", "web-1", "--yes").exit_code == 0
    assert hosts(mngr) == {}


def test_list_filters_formats_and_quiet(mngr) -> None:
    mngr("host", "create", "a", "b", "-t", "role=db")
    mngr("host", "create", "c")
    assert mngr("host", "list", "-q").stdout.split() == ["a", "b", "c"]
    assert mngr("host", "list", "-q", "--tag", "role=db").stdout.split() == ["a", "b"]
    lines = mngr("host", "list", "--format", "jsonl").stdout.splitlines()
    assert [json.loads(line)["name"] for line in lines] == ["a", "b", "c"]
    mngr("host", "stop", "c")
    assert mngr("host", "list", "-q", "--state", "stopped").stdout.split() == ["c"]
    table = mngr("host", "list").stdout
    assert "NAME" in table and "role=db" in table


def test_host_is_a_directory_and_exec_passes_the_exit_code(mngr) -> None:
    mngr("host", "create", "box")
    folder = Path(hosts(mngr)["box"]["address"]["path"])
    assert folder.is_dir() and (folder / ".mngr" / "host.json").exists()
    code = mngr("host", "exec", "box", "--", "sh", "-c", "echo hi > made; exit 7").exit_code
    assert code == 7
    assert (folder / "made").read_text() == "hi\n"


def test_stop_ends_detached_processes_and_start_allows_exec_again(mngr) -> None:
    mngr("host", "create", "svc")
    folder = Path(hosts(mngr)["svc"]["address"]["path"])
    assert mngr("host", "exec", "svc", "--detach", "--", "sleep", "300").exit_code == 0
    [pid_file] = (folder / ".mngr" / "pids").iterdir()
    pid = int(pid_file.name)
    os.kill(pid, 0)  # running
    assert mngr("host", "stop", "svc").exit_code == 0
    assert hosts(mngr)["svc"]["state"] == "stopped"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if (
            not Path(f"/proc/{pid}").exists()
            or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
        ):
            break
        time.sleep(0.05)
    else:
        raise AssertionError("detached process survived stop")
    refused = mngr("host", "exec", "svc", "--", "true")
    assert refused.exit_code == 1 and "is stopped" in refused.stderr
    assert mngr("host", "start", "svc").exit_code == 0
    assert mngr("host", "exec", "svc", "--", "true").exit_code == 0


def test_snapshot_create_list_restore_delete(mngr) -> None:
    mngr("host", "create", "src")
    mngr("host", "exec", "src", "--", "sh", "-c", "mkdir -p d && echo data > d/f")
    made = mngr("host", "snapshot", "create", "src", "--name", "s1", "--format", "json")
    assert made.exit_code == 0
    [snap] = json.loads(made.stdout)["snapshots"]
    listed = json.loads(mngr("host", "snapshot", "list", "--format", "json").stdout)
    assert listed["schema_version"] == 1
    assert listed["snapshots"] == [snap]
    assert set(snap) == {"id", "name", "host", "provider", "created_at"}
    assert snap["name"] == "s1" and snap["host"] == "src" and snap["provider"] == "local"
    assert mngr("host", "create", "copy", "--from-snapshot", "s1").exit_code == 0
    copy = Path(hosts(mngr)["copy"]["address"]["path"])
    assert (copy / "d" / "f").read_text() == "data\n"
    # destroying the source keeps its snapshots; delete removes it
    assert mngr("host", "destroy", "src", "--yes").exit_code == 0
    assert mngr("host", "snapshot", "list", "-q").stdout.split() == [snap["id"]]
    assert mngr("host", "snapshot", "delete", snap["id"], "--yes").exit_code == 0
    assert mngr("host", "snapshot", "list", "-q").stdout.split() == []


def test_destroy_purge_removes_snapshots_and_only_the_host_dir(mngr) -> None:
    mngr("host", "create", "a", "b")
    mngr("host", "snapshot", "create", "a", "--name", "keep-not")
    folder_b = Path(hosts(mngr)["b"]["address"]["path"])
    assert mngr("host", "destroy", "a", "--purge", "--yes").exit_code == 0
    assert mngr("host", "snapshot", "list", "-q").stdout == ""
    assert folder_b.is_dir()


def test_destroy_of_missing_host_is_exit_3_unless_missing_ok(mngr) -> None:
    result = mngr("host", "destroy", "ghost", "--yes")
    assert result.exit_code == 3 and "no host 'ghost'" in result.stderr
    result = mngr("host", "destroy", "ghost", "--yes", "--missing-ok")
    assert result.exit_code == 0 and "no such host" in result.stderr


def test_destroy_without_yes_off_a_terminal_is_refused(mngr) -> None:
    mngr("host", "create", "keep")
    result = mngr("host", "destroy", "keep")
    assert result.exit_code == 2 and "--yes" in result.stderr
    assert "keep" in hosts(mngr)


def test_dry_run_creates_nothing(mngr) -> None:
    result = mngr("host", "create", "dry", "--dry-run")
    assert result.exit_code == 0 and "create directory" in result.stdout
    assert hosts(mngr) == {}


def test_same_name_twice_is_a_clear_conflict(mngr) -> None:
    mngr("host", "create", "dup")
    again = mngr("host", "create", "dup")
    assert again.exit_code == 1 and "already exists" in again.stderr


def test_concurrent_creates_of_one_name_end_with_one_host(isolated_home: Path) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "mngr", "host", "create", "race"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [(p.wait(30), p.stderr.read()) for p in procs]
    assert sorted(code for code, _ in results) == [0, 1, 1, 1]
    assert all("already exists" in err for code, err in results if code)
    listed = subprocess.run(
        [sys.executable, "-m", "mngr", "host", "list", "-q"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert listed.stdout.split() == ["race"]


def test_twenty_concurrent_creates_of_distinct_names(mngr) -> None:
    result = mngr("--jobs", "8", "host", "create", *[f"k{i}" for i in range(20)])
    assert result.exit_code == 0
    assert sorted(hosts(mngr)) == sorted(f"k{i}" for i in range(20))


def test_host_by_id_and_by_name_dot_provider(mngr) -> None:
    mngr("host", "create", "x")
    host_id = hosts(mngr)["x"]["id"]
    assert mngr("host", "exec", host_id, "--", "true").exit_code == 0
    assert mngr("host", "exec", "x.local", "--", "true").exit_code == 0
    missing = mngr("host", "exec", "x.nope", "--", "true")
    assert missing.exit_code == 3 and "no provider named 'nope'" in missing.stderr


def test_exec_of_an_unknown_command_and_a_killed_one_answer_as_a_shell(mngr) -> None:
    mngr("host", "create", "sh1")
    assert mngr("host", "exec", "sh1", "--", "no-such-command-here").exit_code == 127
    assert mngr("host", "exec", "sh1", "--", "sh", "-c", "kill -9 $$").exit_code == 137
    # arguments are never shell text
    assert mngr("host", "exec", "sh1", "--", "test", "$(false)", "=", "$(false)").exit_code == 0


def test_concurrent_snapshots_of_one_host_all_land_in_its_record(isolated_home: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "mngr", "host", "create", "busy"], check=True, capture_output=True
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "mngr", "host", "snapshot", "create", "busy", "--name", f"s{i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(4)
    ]
    assert [p.wait(60) for p in procs] == [0, 0, 0, 0]
    listed = subprocess.run(
        [sys.executable, "-m", "mngr", "host", "list", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    [host] = json.loads(listed.stdout)["hosts"]
    assert len(host["snapshots"]) == 4
