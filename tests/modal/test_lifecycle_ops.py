"""Modal through the Service, the real shim and SDK, and the stand-in of Modal's API:
changeable tags (sandbox tags of a running host, the record of a stopped one) and start from
a chosen snapshot."""

from __future__ import annotations

import json
from typing import Any


def sandboxes_running(standin) -> list[Any]:
    return [box for box in standin.state.sandboxes.values() if not box.finished]


def test_tags_round_trip_running_and_stopped(standin_settings, standin, service) -> None:
    svc = service()
    host = svc.run_one(svc.prepare_create(["web"], provider="cloud", tags={"team": "a", "x": "1"}))
    svc.run_one(svc.prepare_tag("web", {"team": "b"}, ["x"], "cloud"))
    [running] = service().list_hosts(["cloud"]).hosts
    assert (running.id, running.tags) == (host.id, {"team": "b"})
    [box] = sandboxes_running(standin)
    assert box.tags["team"] == "b" and "x" not in box.tags
    assert box.tags["mngr-host-id"] == host.id

    svc.run_one(svc.prepare_on_hosts("stop", ["web"], "cloud"))
    svc.run_one(svc.prepare_tag("web", {"new": "y"}, [], "cloud"))
    [stopped] = service().list_hosts(["cloud"]).hosts
    assert (stopped.state, stopped.tags) == ("stopped", {"team": "b", "new": "y"})
    svc.run_one(svc.prepare_on_hosts("start", ["web"], "cloud"))
    [started] = service().list_hosts(["cloud"]).hosts
    assert (started.id, started.tags) == (host.id, {"team": "b", "new": "y"})


def test_start_from_a_chosen_snapshot_uses_its_image(standin_settings, standin, service) -> None:
    svc = service()
    host = svc.run_one(svc.prepare_create(["web"], provider="cloud", tags={"team": "a"}))
    notes = standin.state.sandboxes[host.handle].root / "notes"
    notes.write_text("as at the snapshot")
    first = svc.run_one(svc.prepare_snapshot("web", "cloud", "first"))
    notes.write_text("changed later")
    svc.run_one(svc.prepare_snapshot("web", "cloud", "second"))

    restored = svc.run_one(svc.prepare_restore("web", "first", "cloud"))

    assert (restored.id, restored.name, restored.tags) == (host.id, "web", {"team": "a"})
    assert restored.handle != host.handle
    [box] = sandboxes_running(standin)  # the old sandbox was terminated
    [records] = standin.state.files.values()
    image = json.loads(records[f"snap/{first.id}.json"])["image_id"]
    assert box.spec["image_id"] == image
    assert (box.root / "notes").read_text() == "as at the snapshot"
