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
