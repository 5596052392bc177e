"""Changeable tags and start from a chosen snapshot through a real `mngr serve` (backend
`mngr` on the client, the server's local provider behind it)."""

from __future__ import annotations

import pytest

from mngr.errors import UsageError
from mngr.plan import execute

pytestmark = pytest.mark.server


def test_tags_and_start_from_a_snapshot_through_the_server(team, service) -> None:
    svc = service()
    host = svc.run_one(svc.prepare_create(["web"], provider="team", tags={"team": "a", "x": "1"}))
    svc.run_one(svc.prepare_tag("web", {"team": "b"}, ["x"], "team"))
    [listed] = service().list_hosts(["team"]).hosts
    assert (listed.id, listed.tags) == (host.id, {"team": "b"})

    notes = team.data_dir / "web" / "notes.txt"
    notes.write_text("as at the snapshot")
    svc.run_one(svc.prepare_snapshot("web", "team", "first"))
    notes.write_text("changed later")
    restored = svc.run_one(svc.prepare_restore("web", "first", "team"))
    assert (restored.id, restored.state) == (host.id, "running")
    assert notes.read_text() == "as at the snapshot"


def test_the_server_checks_tags_itself(team, service) -> None:
    svc = service()
    host = svc.run_one(svc.prepare_create(["web"], provider="team"))
    backend = svc.engine.backend("team")
    # Past this client's own check: the server refuses it as create would.
    with pytest.raises(UsageError, match="invalid tag key"):
        execute(backend.tag_plan(host, {"mngr-x": "1"}, []), backend)
