"""The ssh pool against real sshd on loopback: changeable tags (the claim record on the
machine) and gc."""

from __future__ import annotations

import json

import pytest

from mngr.errors import UnsupportedError

pytestmark = pytest.mark.sshd


def test_tags_round_trip_through_the_record_on_the_machine(sshd_pool, service) -> None:  # noqa: ANN001
    pool = sshd_pool(2)
    svc = service()
    host = svc.run_one(svc.prepare_create(["web"], provider="pool", tags={"team": "a", "x": "1"}))
    svc.run_one(svc.prepare_tag("web", {"team": "b c", "new": "é=1"}, ["x"], "pool"))

    [listed] = service().list_hosts(["pool"]).hosts
    assert (listed.id, listed.tags) == (host.id, {"team": "b c", "new": "é=1"})
    record = json.loads((pool.root / "remote" / host.handle / "claim" / "host.json").read_text())
    assert record["tags"] == {"team": "b c", "new": "é=1"}
    assert (record["id"], record["machine"], record["created_at"]) == (
        host.id,
        host.handle,
        host.created_at,
    )


def test_the_pool_says_it_cannot_start_from_a_snapshot(sshd_pool, service) -> None:  # noqa: ANN001
    sshd_pool(1)
    svc = service()
    svc.run_one(svc.prepare_create(["web"], provider="pool"))
    with pytest.raises(UnsupportedError, match="cannot start from a chosen snapshot"):
        svc.prepare_restore("web", "any", "pool")
