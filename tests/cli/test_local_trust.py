"""The local backend removes, stops and signals only what is its own (issue 11): an undo only
what its step made, a stale verb only the host it looked up, a stop only the processes its
host started, and a snapshot restores what it captured without writing outside the host."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from tests.conftest import Result

PAUSED = str(Path(__file__).resolve().parents[1] / "support" / "paused_mngr.py")


def hosts(mngr) -> dict[str, dict]:  # noqa: ANN001
    return {
        h["name"]: h for h in json.loads(mngr("host", "list", "--format", "json").stdout)["hosts"]
    }


def run(*args: str) -> Result:
    done = subprocess.run(
        [sys.executable, "-m", "mngr", *args], capture_output=True, text=True, timeout=60
    )
    return Result(done.returncode, done.stdout, done.stderr)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# --- 1. an undo removes only what its own step made -------------------------------------


def test_a_failed_create_never_removes_a_host_that_took_the_name_meanwhile(
    mngr, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    assert mngr("host", "create", "src").exit_code == 0
    assert mngr("host", "snapshot", "create", "src", "--name", "s").exit_code == 0
    folder = Path(hosts(mngr)["src"]["address"]["path"]).with_name("web")
    real_extract = tarfile.TarFile.extractall

    def extract_then_fail(self: tarfile.TarFile, *args: object, **kwargs: object) -> None:
        real_extract(self, *args, **kwargs)
        # Meanwhile the half-made directory is removed by hand (as the "holds no host record"
        # message advises) and another mngr process creates a host of the same name.
        shutil.rmtree(folder)
        other = run("host", "create", "web")
        assert other.exit_code == 0, other.stderr
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(tarfile.TarFile, "extractall", extract_then_fail)
        failed = mngr("host", "create", "web", "--from-snapshot", "s")
    assert failed.exit_code == 1
    [line] = failed.stderr.strip().splitlines()
    assert line.endswith("No space left on device")  # nothing left for the undo to do
    survivor = hosts(mngr)["web"]  # the other process's host, untouched by the undo
    assert json.loads((folder / ".mngr" / "host.json").read_text())["id"] == survivor["id"]


def test_a_failed_create_removes_the_directory_it_made(mngr) -> None:
    assert mngr("host", "create", "src").exit_code == 0
    assert mngr("host", "snapshot", "create", "src", "--name", "s").exit_code == 0
    root = Path(hosts(mngr)["src"]["address"]["path"]).parent
    archive = next((root / ".snapshots").glob("*.tar.gz"))
    archive.write_bytes(b"not a tar archive")
    failed = mngr("host", "create", "web", "--from-snapshot", "s")
    assert failed.exit_code == 1 and "cannot restore snapshot" in failed.stderr
    assert sorted(p.name for p in root.iterdir()) == [".snapshots", "src"]


# --- 2. a stale verb acts on the host it looked up, never on a newer one of its name -----


def paused(*args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, PAUSED, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None and proc.stderr.readline() == "paused\n"
    return proc


def resume(proc: subprocess.Popen[str]) -> Result:
    out, err = proc.communicate("\n", timeout=60)
    return Result(proc.returncode, out, err)


@pytest.mark.parametrize(
    "verb",
    [
        ("host", "destroy", "web", "--yes"),
        ("host", "stop", "web"),
        ("host", "snapshot", "create", "web"),
    ],
)
def test_a_stale_verb_leaves_a_newer_host_of_the_same_name_alone(mngr, verb: tuple) -> None:  # noqa: ANN001
    assert run("host", "create", "web").exit_code == 0
    stale = paused(*verb)  # A has looked `web` up
    assert run("host", "destroy", "web", "--yes").exit_code == 0  # B destroys it
    assert run("host", "create", "web").exit_code == 0  # C makes a new `web`
    newer = hosts(mngr)["web"]
    assert run("host", "exec", "web", "--", "sh", "-c", "echo mine > data").exit_code == 0

    result = resume(stale)
    assert result.exit_code == 1, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "host 'web' changed since this command looked it up" in line
    assert newer["id"] in line and "nothing done" in line
    after = hosts(mngr)["web"]
    assert after["id"] == newer["id"] and after["state"] == "running"
    assert after["snapshots"] == []
    assert (Path(after["address"]["path"]) / "data").read_text() == "mine\n"
    assert mngr("host", "snapshot", "list", "-q").stdout == ""


def test_a_stale_destroy_of_a_host_destroyed_meanwhile_has_nothing_to_do(mngr) -> None:
    assert run("host", "create", "web").exit_code == 0
    stale = paused("host", "destroy", "web", "--yes")
    assert run("host", "destroy", "web", "--yes").exit_code == 0
    result = resume(stale)
    assert result.exit_code == 0, result.stderr
    assert hosts(mngr) == {}


# --- 3. stop signals only the processes its host started --------------------------------


def test_a_pid_file_naming_0_1_or_mngr_itself_is_never_signalled(
    mngr, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert mngr("host", "create", "svc").exit_code == 0
    pids = Path(hosts(mngr)["svc"]["address"]["path"]) / ".mngr" / "pids"
    pids.mkdir()
    ticks = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]
    for pid in ("0", "1", "-1", "00", str(os.getpid()), str(os.getpgrp())):
        (pids / pid).write_text(f"{ticks} token\nforged\n")
    signalled: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "killpg", lambda pid, sig: signalled.append((pid, sig)))
    monkeypatch.setattr(os, "kill", lambda pid, sig: signalled.append((pid, sig)))
    assert mngr("host", "stop", "svc").exit_code == 0
    assert signalled == []
    assert list(pids.iterdir()) == []  # forgotten, not obeyed
    assert hosts(mngr)["svc"]["state"] == "stopped"


def test_a_pid_file_naming_0_does_not_stop_mngr_itself(mngr) -> None:
    assert mngr("host", "create", "svc").exit_code == 0
    pids = Path(hosts(mngr)["svc"]["address"]["path"]) / ".mngr" / "pids"
    pids.mkdir()
    (pids / "0").write_text("")
    # Its own session, so that a mngr signalling its own process group hits only itself.
    done = subprocess.run(
        [sys.executable, "-m", "mngr", "host", "stop", "svc"],
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
    )
    assert done.returncode == 0, done.stderr  # it was 130: SIGTERM to its own group
    assert hosts(mngr)["svc"]["state"] == "stopped"


def test_a_reused_pid_is_not_signalled_and_stop_still_ends_the_hosts_own(mngr) -> None:
    assert mngr("host", "create", "svc").exit_code == 0
    folder = Path(hosts(mngr)["svc"]["address"]["path"])
    assert mngr("host", "exec", "svc", "--detach", "--", "sleep", "300").exit_code == 0
    [own] = [int(p.name) for p in (folder / ".mngr" / "pids").iterdir()]
    # A process that exited left its pid file; the pid now belongs to an unrelated process
    # (a group leader of its own, as the detached one was), started at another time.
    stranger = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        ticks = Path(f"/proc/{stranger.pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        (folder / ".mngr" / "pids" / str(stranger.pid)).write_text(
            f"{int(ticks) - 1} 0123456789abcdef\nsleep 300\n"
        )
        assert mngr("host", "stop", "svc").exit_code == 0
        deadline = time.monotonic() + 5
        while _alive(own) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(own), "the host's own detached process survived stop"
        time.sleep(0.2)
        assert stranger.poll() is None, "an unrelated process was signalled"
    finally:
        stranger.kill()
        stranger.wait()


def test_stop_ends_a_detached_group_whose_leader_has_exited(mngr) -> None:
    assert mngr("host", "create", "svc").exit_code == 0
    folder = Path(hosts(mngr)["svc"]["address"]["path"])
    script = "sleep 300 & echo $! > child.pid"
    assert mngr("host", "exec", "svc", "--detach", "--", "sh", "-c", script).exit_code == 0
    deadline = time.monotonic() + 5
    while not (folder / "child.pid").exists() or not (folder / "child.pid").read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    child = int((folder / "child.pid").read_text())
    assert _alive(child)
    assert mngr("host", "stop", "svc").exit_code == 0
    deadline = time.monotonic() + 5
    while _alive(child):
        assert time.monotonic() < deadline, "the leaderless group of the host survived stop"
        time.sleep(0.05)


# --- 4. snapshots restore absolute links, and never write outside the new host ----------


def test_absolute_and_relative_links_survive_a_snapshot_round_trip(mngr) -> None:
    assert mngr("host", "create", "venv").exit_code == 0
    script = (
        "mkdir -p bin lib && ln -s /usr/bin/python3 bin/python && ln -s python bin/python3 "
        "&& ln -s /nonexistent/target dangling && echo x > lib/f && ln lib/f lib/hard"
    )
    assert mngr("host", "exec", "venv", "--", "sh", "-c", script).exit_code == 0
    assert mngr("host", "snapshot", "create", "venv", "--name", "s").exit_code == 0
    restored = mngr("host", "create", "copy", "--from-snapshot", "s")
    assert restored.exit_code == 0, restored.stderr
    copy = Path(hosts(mngr)["copy"]["address"]["path"])
    assert os.readlink(copy / "bin" / "python") == "/usr/bin/python3"
    assert os.readlink(copy / "bin" / "python3") == "python"
    assert os.readlink(copy / "dangling") == "/nonexistent/target"
    assert (copy / "lib" / "hard").read_text() == "x\n"
    assert mngr("host", "exec", "copy", "--", "bin/python3", "-c", "pass").exit_code == 0


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", data: bytes = b"") -> tuple:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.mode = 0o644
    return info, data


def _plant_snapshot(root: Path, members: list[tuple]) -> None:
    """A snapshot in the provider's folder as mngr would have written it, but crafted."""
    snaps = root / ".snapshots"
    snaps.mkdir(parents=True, exist_ok=True)
    snap_id = "snap-" + "0" * 32
    with tarfile.open(snaps / f"{snap_id}.tar.gz", "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data else None)
    meta = {"id": snap_id, "name": "evil", "host": "x", "host_id": "host-" + "1" * 32}
    (snaps / f"{snap_id}.json").write_text(json.dumps({**meta, "provider": "local"}))


@pytest.mark.parametrize(
    "case",
    ["through-absolute-link", "through-relative-link", "hard-link-outside", "dot-dot", "device"],
)
def test_a_crafted_snapshot_writes_nothing_outside_the_new_host(
    mngr, isolated_home: Path, tmp_path: Path, case: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "passwd"
    victim.write_text("root:x:0:0\n")
    depth = "../" * 12
    members = {
        "through-absolute-link": [
            _member("a", tarfile.SYMTYPE, str(outside)),
            _member("a/passwd", data=b"pwned\n"),
        ],
        "through-relative-link": [
            _member("b", tarfile.SYMTYPE, f"{depth}{str(outside).lstrip('/')}"),
            _member("b/passwd", data=b"pwned\n"),
        ],
        "hard-link-outside": [
            _member("h", tarfile.LNKTYPE, str(victim)),
            _member("h", data=b"pwned\n"),
        ],
        "dot-dot": [_member(f"{depth}{str(victim).lstrip('/')}", data=b"pwned\n")],
        "device": [_member("null", tarfile.CHRTYPE)],
    }[case]
    root = isolated_home / ".local" / "share" / "mngr" / "local" / "local"
    _plant_snapshot(root, members)
    result = mngr("host", "create", "web", "--from-snapshot", "evil")
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "cannot restore snapshot" in line
    assert victim.read_text() == "root:x:0:0\n" and sorted(os.listdir(outside)) == ["passwd"]
    assert sorted(p.name for p in root.iterdir()) == [".snapshots"]  # the undo removed web


def test_a_snapshot_never_brings_its_own_pid_files_or_record(mngr, isolated_home: Path) -> None:
    root = isolated_home / ".local" / "share" / "mngr" / "local" / "local"
    _plant_snapshot(
        root,
        [_member(".mngr/pids/1", data=b"0 t\n"), _member("kept", data=b"ok\n")],
    )
    assert mngr("host", "create", "web", "--from-snapshot", "evil").exit_code == 0
    assert (root / "web" / "kept").read_text() == "ok\n"
    assert not (root / "web" / ".mngr" / "pids").exists()


# --- 5. providers never share their hosts -----------------------------------------------


def test_two_local_providers_sharing_a_root_are_refused_naming_both(
    mngr, user_settings: Path, isolated_home: Path
) -> None:
    user_settings.write_text(
        '[providers.teama]\nbackend = "local"\nroot = "~/hosts"\n'
        f'[providers.teamb]\nbackend = "local"\nroot = "{isolated_home}/x/../hosts"\n'
    )
    for args in (("host", "list"), ("host", "destroy", "web.teamb", "--yes")):
        result = mngr(*args)
        assert result.exit_code == 2
        [line] = result.stderr.strip().splitlines()
        assert "providers 'teama' and 'teamb' would keep their hosts in one place" in line
        assert str(user_settings) in line and str(isolated_home / "hosts") in line


def test_a_root_that_is_another_providers_default_is_refused(
    mngr, user_settings: Path, isolated_home: Path
) -> None:
    default = isolated_home / ".local" / "share" / "mngr" / "local" / "local"
    user_settings.write_text(f'[providers.mine]\nbackend = "local"\nroot = "{default}"\n')
    result = mngr("host", "list")
    assert result.exit_code == 2 and "providers 'local' and 'mine'" in result.stderr
    user_settings.write_text(
        f'[providers.mine]\nbackend = "local"\nroot = "{default}"\n'
        "[providers.local]\nenabled = false\n"
    )
    assert mngr("host", "list").exit_code == 0  # the built-in one is switched off


def test_a_host_whose_record_names_another_provider_is_neither_listed_nor_touched(
    mngr, user_settings: Path
) -> None:
    user_settings.write_text('[providers.teama]\nbackend = "local"\nroot = "~/hosts"\n')
    assert mngr("host", "create", "web", "-p", "teama").exit_code == 0
    folder = Path(hosts(mngr)["web"]["address"]["path"])
    # The same folder, now configured as another provider's (teama renamed, or a root that
    # two machines' settings point at).
    user_settings.write_text('[providers.teamb]\nbackend = "local"\nroot = "~/hosts"\n')
    listed = mngr("host", "list", "-p", "teamb", "--format", "json")
    assert listed.exit_code == 6 and json.loads(listed.stdout)["hosts"] == []
    [row] = json.loads(listed.stdout)["errors"]
    assert "belongs to provider 'teama'" in row["message"]
    destroyed = mngr("host", "destroy", "web.teamb", "--yes")
    assert destroyed.exit_code == 1 and "belongs to provider 'teama'" in destroyed.stderr
    assert (folder / ".mngr" / "host.json").exists()
