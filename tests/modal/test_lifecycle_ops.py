"""Modal through the real shim and the SDK double: changeable tags (sandbox tags of a running
host, the record of a stopped one) and start from a chosen snapshot."""

from __future__ import annotations


def test_tags_round_trip_running_and_stopped(modal_settings, fake_modal, service) -> None:
    svc = service()
    host = svc.run_one(svc.prepare_create(["web"], provider="cloud", tags={"team": "a", "x": "1"}))
    svc.run_one(svc.prepare_tag("web", {"team": "b"}, ["x"], "cloud"))
    [running] = service().list_hosts(["cloud"]).hosts
    assert (running.id, running.tags) == (host.id, {"team": "b"})
    [box] = fake_modal.sandboxes(running=True)
    assert box["tags"]["team"] == "b" and "x" not in box["tags"]
    assert box["tags"]["mngr-host-id"] == host.id

    svc.run_one(svc.prepare_on_hosts("stop", ["web"], "cloud"))
    svc.run_one(svc.prepare_tag("web", {"new": "y"}, [], "cloud"))
    [stopped] = service().list_hosts(["cloud"]).hosts
    assert (stopped.state, stopped.tags) == ("stopped", {"team": "b", "new": "y"})
    svc.run_one(svc.prepare_on_hosts("start", ["web"], "cloud"))
    [started] = service().list_hosts(["cloud"]).hosts
    assert (started.id, started.tags) == (host.id, {"team": "b", "new": "y"})


def test_start_from_a_chosen_snapshot_uses_its_image(modal_settings, fake_modal, service) -> None:
    svc = service()
    host = svc.run_one(svc.prepare_create(["web"], provider="cloud", tags={"team": "a"}))
    notes = fake_modal.root / "fs" / host.handle / "notes"
    notes.write_text("as at the snapshot")
    first = svc.run_one(svc.prepare_snapshot("web", "cloud", "first"))
    notes.write_text("changed later")
    svc.run_one(svc.prepare_snapshot("web", "cloud", "second"))

    restored = svc.run_one(svc.prepare_restore("web", "first", "cloud"))

    assert (restored.id, restored.name, restored.tags) == (host.id, "web", {"team": "a"})
    assert restored.handle != host.handle
    [box] = fake_modal.sandboxes(running=True)  # the old sandbox was terminated
    image = fake_modal.records()[f"snap:{first.id}"]["image_id"]
    assert box["image_id"] == image
    assert (fake_modal.root / "fs" / restored.handle / "notes").read_text() == "as at the snapshot"
