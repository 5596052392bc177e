"""The ssh pool against real sshd on loopback: changeable tags (the claim record on the
machine) and gc."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from mngr.errors import UnsupportedError
from tests.support.killed_create import run_killed, vendor

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


# --- gc -------------------------------------------------------------------------------------


def aged(path: Path, seconds: float = 3600) -> None:
    """Make a path look `seconds` old (gc never touches what is younger than a create)."""
    when = time.time() - seconds
    os.utime(path, (when, when))


def claim(pool, machine: str, owner: str | None, folder: str = "claim") -> Path:  # noqa: ANN001
    """A claim made by hand on the machine (with this owner line), aged."""
    path = pool.root / "remote" / machine / folder
    path.mkdir(parents=True)
    if owner is not None:
        (path / "owner").write_text(owner + "\n")
        aged(path / "owner")
    aged(path)
    return path


def test_gc_releases_the_claim_a_killed_create_left_and_only_this_providers(
    sshd_pool, service, tmp_path
) -> None:  # noqa: ANN001
    pool = sshd_pool(3, control_persist_s=0)
    remote = pool.root / "remote"
    svc = service()
    kept = svc.run_one(svc.prepare_create(["kept"], provider="pool", options={"machine": "m1"}))
    settings = pool.provider_toml(control_persist_s=0)
    # A create killed (SIGKILL of mngr itself) right after its claim on m2 succeeded.
    killing = vendor(tmp_path, "ssh", kill_after="mkdir claim")
    user_settings = Path(os.environ["XDG_CONFIG_HOME"]) / "mngr" / "settings.toml"
    user_settings.write_text(pool.provider_toml(control_persist_s=0, binary=killing))
    run_killed("host", "create", "half", "-p", "pool", "--machine", "m2")
    user_settings.write_text(settings)
    owner = (remote / "m2" / "claim" / "owner").read_text().split()
    assert owner[1:] == ["half", "pool"] and not (remote / "m2" / "claim" / "host.json").exists()
    aged(remote / "m2" / "claim" / "owner")
    # A destroy of this provider's stopped after renaming its claim; another provider's claim
    # (not written yet, and renamed): none of gc's business.
    mine = "host-" + "1" * 32
    claim(pool, "m1", f"{mine} old pool", f".released-{mine}")
    theirs = "host-" + "2" * 32
    claim(pool, "m3", f"{theirs} other-half other")
    claim(pool, "m1", f"{theirs} other-old other", f".released-{theirs}")

    report, batch = service().prepare_gc(["pool"])
    assert {(o.kind, o.id, o.name) for o in report.delete} == {
        ("claim", f"m2/{owner[0]}", "half"),
        ("released claim", f"m1/{mine}", "old"),
    }
    assert report.kept == [] and report.errors == []
    assert [o.error for o in svc.run(batch)] == [None, None]

    assert service().prepare_gc(["pool"])[0].delete == []
    assert not (remote / "m2" / "claim").exists()
    assert not (remote / "m1" / f".released-{mine}").exists()
    assert (remote / "m3" / "claim" / "owner").exists()
    assert (remote / "m1" / f".released-{theirs}" / "owner").exists()
    [host] = service().list_hosts(["pool"]).hosts
    assert (host.id, host.handle) == (kept.id, "m1")
    # m2 is free again: a create gets it.
    again = svc.run_one(svc.prepare_create(["again"], provider="pool"))
    assert again.handle == "m2"


def test_gc_releases_a_claim_whose_record_is_damaged_but_no_claim_without_owner(
    sshd_pool, service
) -> None:  # noqa: ANN001
    pool = sshd_pool(3)
    remote = pool.root / "remote"
    svc = service()
    damaged = svc.run_one(svc.prepare_create(["damaged"], provider="pool"))
    young = svc.run_one(svc.prepare_create(["young"], provider="pool"))
    for host in (damaged, young):
        (remote / host.handle / "claim" / "host.json").write_text("{not json")
    aged(remote / damaged.handle / "claim" / "owner")
    ownerless = claim(pool, "m3", None)  # a create stopped between mkdir and owner: whose?

    report, batch = service().prepare_gc(["pool"])
    [orphan] = report.delete
    assert (orphan.kind, orphan.name) == ("claim", "damaged") and "unreadable" in orphan.why
    [(left, why)] = report.kept
    assert left.name == "young" and "younger than a create" in why
    svc.run_one(batch)

    assert not (remote / damaged.handle / "claim").exists()
    assert not (remote / damaged.handle / "hosts" / "damaged").exists()
    assert (remote / young.handle / "claim" / "owner").exists()
    assert ownerless.is_dir()
    # A machine that cannot be read: gc of the pool is an error row naming it, not a guess.
    pool.machines[2].stop()
    report, batch = service().prepare_gc(["pool"])
    [row] = report.errors
    assert (row.provider, row.kind) == ("pool", "unreachable") and "machine 'm3'" in row.message
    assert batch.jobs == []
