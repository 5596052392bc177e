"""The local backend: changeable tags, start from a chosen snapshot and gc, on the real
filesystem through the use-case layer."""

from __future__ import annotations

from pathlib import Path

import pytest

from mngr.errors import ConflictError, UsageError


def make(service, *names: str, **how):
    return [service.run_one(service.prepare_create([name], **how)) for name in names]


def test_tags_round_trip_and_reach_the_record(service) -> None:
    svc = service()
    [host] = make(svc, "web", tags={"team": "a", "keep": "1"})
    svc.run_one(svc.prepare_tag("web", {"team": "b", "new": "x=y z"}, ["keep", "absent"]))
    [listed] = service().list_hosts().hosts
    assert listed.tags == {"team": "b", "new": "x=y z"}
    assert listed.id == host.id


@pytest.mark.parametrize(
    ("tags", "remove", "says"),
    [
        ({"mngr-x": "1"}, [], "invalid tag key"),
        ({"a": "\n"}, [], "invalid value"),
        ({}, ["bad key"], "invalid tag key"),
        ({"a": "1"}, ["a"], "both set and removed"),
        ({}, [], "no tag given"),
    ],
)
def test_tag_refuses_what_create_refuses(service, tags, remove, says) -> None:
    svc = service()
    make(svc, "web")
    with pytest.raises(UsageError, match=says):
        svc.prepare_tag("web", tags, remove)


def test_start_from_a_snapshot_brings_the_files_back(service) -> None:
    svc = service()
    [host] = make(svc, "web")
    folder = Path(host.address["path"])
    (folder / "notes.txt").write_text("as at the snapshot")
    (folder / "sub").mkdir()
    (folder / "sub" / "kept.txt").write_text("kept")
    snap = svc.run_one(svc.prepare_snapshot("web", None, "first"))
    (folder / "notes.txt").write_text("changed later")
    (folder / "later.txt").write_text("made later")
    svc.run_one(svc.prepare_on_hosts("stop", ["web"]))

    svc.run_one(svc.prepare_restore("web", "first"))

    [after] = service().list_hosts().hosts
    assert (after.id, after.name, after.state) == (host.id, "web", "running")
    assert (folder / "notes.txt").read_text() == "as at the snapshot"
    assert (folder / "sub" / "kept.txt").read_text() == "kept"
    assert not (folder / "later.txt").exists()
    assert after.snapshots == [snap.id]  # the record is the host's own, kept
    # Nothing left beside the host: the unpacked copy became it, the old files are gone.
    assert sorted(p.name for p in folder.parent.iterdir()) == [".snapshots", "web"]


def test_a_failed_restore_leaves_the_host_as_it_was(service) -> None:
    svc = service()
    [host] = make(svc, "web")
    folder = Path(host.address["path"])
    snap = svc.run_one(svc.prepare_snapshot("web", None, "first"))
    (folder / "notes.txt").write_text("now")
    batch = svc.prepare_restore("web", "first")
    # The host is destroyed and made again under its name between the look-up and the swap.
    svc.run_one(svc.prepare_on_hosts("destroy", ["web"]))
    make(svc, "web")
    with pytest.raises(ConflictError, match="changed since this command looked it up"):
        svc.run_one(batch)
    assert sorted(p.name for p in folder.parent.iterdir()) == [".snapshots", "web"]
    assert snap.id


# --- gc -------------------------------------------------------------------------------------


def aged(path: Path, seconds: float = 3600) -> Path:
    """Make a path look `seconds` old (gc never touches what is younger than a create)."""
    import os
    import time

    when = time.time() - seconds
    os.utime(path, (when, when), follow_symlinks=False)
    return path


def test_gc_lists_and_removes_exactly_the_orphans(service) -> None:
    svc = service()
    [kept_host] = make(svc, "kept")
    kept_snap = svc.run_one(svc.prepare_snapshot("kept", None, "kept-snap"))
    make(svc, "gone")
    gone_snap = svc.run_one(svc.prepare_snapshot("gone", None, "gone-snap"))
    svc.run_one(svc.prepare_on_hosts("destroy", ["gone"]))
    root = Path(kept_host.address["path"]).parent
    snaps = root / ".snapshots"
    meta = snaps / f"{gone_snap.id}.json"
    meta.write_text(meta.read_text().replace(gone_snap.created_at, "2026-01-01T00:00:00Z"))
    # What killed operations leave, each with mngr's marker, made old enough:
    half = root / "half"
    (half / ".mngr").mkdir(parents=True)  # a create killed before its record
    aged(half)
    trash = root / ".removing-host-00000000000000000000000000000001"
    (trash / "data").mkdir(parents=True)  # a destroy killed after its rename
    aged(trash)
    stray = snaps / "snap-0000000000000000000000000000000a.tar.gz"
    stray.touch()
    aged(stray)  # a snapshot killed before its description
    # Not mngr's, or too young to judge:
    (root / "mine").mkdir()
    aged(root / "mine")
    (snaps / "notes.txt").write_text("the user's")
    (root / "young" / ".mngr").mkdir(parents=True)
    wanted = {str(half), str(trash), str(stray)}

    report, batch = svc.prepare_gc()
    assert {o.id for o in report.delete} == wanted
    kept = {o.id: why for o, why in report.kept}
    assert "pass --snapshots" in kept[str(snaps / f"{gone_snap.id}.tar.gz")]
    assert "younger than a create" in kept[str(root / "young")]
    assert len(kept) == 2

    report, batch = svc.prepare_gc(snapshots=True)
    assert {o.id for o in report.delete} == wanted | {str(snaps / f"{gone_snap.id}.tar.gz")}
    assert [outcome.error for outcome in svc.run(batch)] == [None] * 4

    left = sorted(p.name for p in root.iterdir())
    assert left == [".snapshots", "kept", "mine", "young"]
    assert sorted(p.name for p in snaps.iterdir()) == sorted(
        [f"{kept_snap.id}.tar.gz", f"{kept_snap.id}.json", "notes.txt"]
    )
    [listed] = service().list_hosts().hosts
    assert listed.id == kept_host.id
    assert svc.prepare_gc(snapshots=True)[0].delete == []


def test_gc_keeps_what_is_younger_than_older_than(service) -> None:
    svc = service()
    make(svc, "web")
    root = Path(svc.list_hosts().hosts[0].address["path"]).parent
    (root / "half" / ".mngr").mkdir(parents=True)
    aged(root / "half", 2 * 86400)
    assert [o.id for o in svc.prepare_gc(older_than_s=86400)[0].delete] == [str(root / "half")]
    [(_, why)] = svc.prepare_gc(older_than_s=7 * 86400)[0].kept
    assert "--older-than" in why


# --- the CLI ----------------------------------------------------------------------------------


def test_the_cli_tags_starts_from_a_snapshot_and_collects(mngr) -> None:
    import json

    assert mngr("host", "create", "web", "-t", "team=a").exit_code == 0
    tagged = mngr("host", "tag", "web", "team=b", "owner=ana", "--remove", "x")
    assert tagged.exit_code == 0, tagged.stderr
    [host] = json.loads(mngr("host", "list", "-f", "json").stdout)["hosts"]
    assert host["tags"] == {"team": "b", "owner": "ana"}
    bad = mngr("host", "tag", "web", "mngr-x=1")
    assert bad.exit_code == 2 and "invalid tag key" in bad.stderr

    folder = Path(host["address"]["path"])
    (folder / "notes.txt").write_text("then")
    assert mngr("host", "snapshot", "create", "web", "-n", "first").exit_code == 0
    (folder / "notes.txt").write_text("now")
    two = mngr("host", "start", "web", "other", "--snapshot", "first")
    assert two.exit_code == 2 and "exactly one" in two.stderr
    started = mngr("host", "start", "web", "--snapshot", "first")
    assert started.exit_code == 0, started.stderr
    assert "started from snapshot first: web.local" in started.stderr
    assert (folder / "notes.txt").read_text() == "then"

    (folder.parent / "half" / ".mngr").mkdir(parents=True)
    aged(folder.parent / "half")
    listed = mngr("gc", "--dry-run", "-f", "json")
    assert listed.exit_code == 0, listed.stderr
    [orphan] = [o for o in json.loads(listed.stdout)["orphans"] if o["action"] == "delete"]
    assert orphan["id"] == str(folder.parent / "half") and orphan["kind"] == "folder"
    refused = mngr("gc")
    assert refused.exit_code == 2 and "without --yes" in refused.stderr
    assert (folder.parent / "half").exists()
    done = mngr("gc", "--yes")
    assert done.exit_code == 0, done.stderr
    assert not (folder.parent / "half").exists() and folder.exists()
    assert "nothing to collect" in mngr("gc").stderr


# --- gc after creates killed at each step (SIGKILL of mngr itself) ------------------------------


def gc_plan(mngr) -> dict[str, set[tuple[str, str]]]:
    """`mngr gc --dry-run -f json`: {action: {(kind, id)}}."""
    import json

    listed = mngr("gc", "--dry-run", "-f", "json")
    assert listed.exit_code == 0, listed.stderr
    found: dict[str, set[tuple[str, str]]] = {"delete": set(), "keep": set()}
    for orphan in json.loads(listed.stdout)["orphans"]:
        found[orphan["action"]].add((orphan["kind"], orphan["id"]))
    return found


def hosts(mngr) -> dict[str, dict]:
    import json

    return {h["name"]: h for h in json.loads(mngr("host", "list", "-f", "json").stdout)["hosts"]}


def test_gc_removes_exactly_what_creates_killed_at_each_step_left(mngr) -> None:
    from tests.support.killed_create import run_killed

    assert mngr("host", "create", "kept").exit_code == 0
    assert mngr("host", "snapshot", "create", "kept", "-n", "first").exit_code == 0
    run_killed("host", "create", "dir-only", step="create directory")
    run_killed("host", "create", "restored", "--from-snapshot", "first", step="restore snapshot")
    run_killed("host", "create", "recorded", step="write host record")
    root = Path(hosts(mngr)["kept"]["address"]["path"]).parent
    for name in ("dir-only", "restored"):
        assert (root / name / ".mngr").is_dir() and not (
            root / name / ".mngr" / "host.json"
        ).exists()
    young = gc_plan(mngr)
    assert young["delete"] == set()
    assert young["keep"] == {("folder", str(root / "dir-only")), ("folder", str(root / "restored"))}
    aged(root / "dir-only")
    aged(root / "restored")

    assert gc_plan(mngr) == {
        "delete": {("folder", str(root / "dir-only")), ("folder", str(root / "restored"))},
        "keep": set(),
    }
    done = mngr("gc", "--yes")
    assert done.exit_code == 0, done.stderr

    assert gc_plan(mngr) == {"delete": set(), "keep": set()}
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == [
        "kept",
        "recorded",
    ]
    assert {name: h["state"] for name, h in hosts(mngr).items()} == {
        "kept": "running",
        "recorded": "running",
    }
