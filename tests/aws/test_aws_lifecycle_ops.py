"""The aws backend on a moto server through the real aws CLI: changeable tags, the refusal to
start from a chosen snapshot (stated as data), and gc."""

from __future__ import annotations

import pytest

from mngr.errors import UnsupportedError
from tests.aws.test_aws_moto import ec2

pytestmark = pytest.mark.aws


def test_tags_round_trip_through_create_tags_and_delete_tags(
    moto, moto_provider, aws_settings, service
) -> None:
    aws_settings(cloud=moto_provider())
    svc = service()
    host = svc.run_one(svc.prepare_create(["web"], provider="cloud", tags={"team": "a", "x": "1"}))
    svc.run_one(svc.prepare_tag("web", {"team": "b c,d", "new": "é"}, ["x", "absent"]))

    [listed] = service().list_hosts(["cloud"]).hosts
    assert listed.tags == {"team": "b c,d", "new": "é"}
    raw = ec2(moto, "describe-instances", "--instance-ids", host.handle)
    [instance] = raw["Reservations"][0]["Instances"]
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    # mngr's own tags are untouched; user tags sit under mngr:tag:.
    assert tags["mngr:host-id"] == host.id and tags["Name"] == "web"
    assert tags["mngr:tag:team"] == "b c,d" and "mngr:tag:x" not in tags


def test_aws_says_it_cannot_start_from_a_chosen_snapshot(
    moto, moto_provider, aws_settings, service
) -> None:
    aws_settings(cloud=moto_provider())
    svc = service()
    svc.run_one(svc.prepare_create(["web"], provider="cloud"))
    with pytest.raises(UnsupportedError, match="cannot start from a chosen snapshot: .*volume"):
        svc.prepare_restore("web", "any", "cloud")
    assert "create-replace-root-volume-task" in svc.provider_row("cloud")["unsupported"]["restore"]


# --- gc -------------------------------------------------------------------------------------


def test_gc_lists_and_removes_exactly_the_orphans(
    moto, moto_provider, aws_settings, service
) -> None:
    import time

    from tests.aws.motoserver import IMAGE

    aws_settings(cloud=moto_provider())
    svc = service()
    kept = svc.run_one(svc.prepare_create(["kept"], provider="cloud"))
    kept_snap = svc.run_one(svc.prepare_snapshot("kept", "cloud", "kept-snap"))
    svc.run_one(svc.prepare_create(["gone"], provider="cloud"))
    gone_snap = svc.run_one(svc.prepare_snapshot("gone", "cloud", "gone-snap"))
    svc.run_one(svc.prepare_on_hosts("destroy", ["gone"], "cloud"))
    # A delete of a snapshot stopped after deregistering its AMI: the EBS snapshot is left.
    dropped = svc.run_one(svc.prepare_snapshot("kept", "cloud", "dropped"))
    [left_ebs] = ec2(moto, "describe-images", "--image-ids", dropped.id)["Images"][0][
        "BlockDeviceMappings"
    ][0]["Ebs"]["SnapshotId"].split()
    ec2(moto, "deregister-image", "--image-id", dropped.id)
    # An instance with mngr's provider tag but not the rest (made with the CLI itself).
    partial = ec2(
        moto, "run-instances", "--image-id", IMAGE, "--count", "1", "--tag-specifications",
        '[{"ResourceType":"instance","Tags":[{"Key":"mngr:provider","Value":"cloud"}]}]',
    )["Instances"][0]["InstanceId"]  # fmt: skip
    # Not mngr's: no marker.
    unmarked = ec2(moto, "run-instances", "--image-id", IMAGE, "--count", "1")["Instances"][0][
        "InstanceId"
    ]

    aws_settings(cloud=moto_provider(timeout_s=5, wait_timeout_s=1))  # creates take <= 16 s
    time.sleep(16.5)
    svc = service()
    report, batch = svc.prepare_gc(["cloud"])
    assert {(o.kind, o.id) for o in report.delete} == {
        ("instance", partial),
        ("ebs-snapshot", left_ebs),
    }
    [(snap, why)] = report.kept
    assert (snap.kind, snap.id, snap.name) == ("ami", gone_snap.id, "gone-snap")

    report, batch = svc.prepare_gc(["cloud"], snapshots=True)
    assert {o.id for o in report.delete} == {partial, left_ebs, gone_snap.id}
    assert [o.error for o in svc.run(batch)] == [None] * 3

    assert svc.prepare_gc(["cloud"], snapshots=True)[0].delete == []
    [host] = service().list_hosts(["cloud"]).hosts
    assert (host.id, host.state) == (kept.id, "running")
    assert [s.id for s in svc.list_snapshots(["cloud"])[0]] == [kept_snap.id]
    states = {
        i["InstanceId"]: i["State"]["Name"]
        for r in ec2(moto, "describe-instances")["Reservations"]
        for i in r["Instances"]
    }
    assert states[unmarked] == "running" and states[partial] == "terminated"
    snaps = {
        s["SnapshotId"] for s in ec2(moto, "describe-snapshots", "--owner-ids", "self")["Snapshots"]
    }
    assert left_ebs not in snaps


def test_gc_removes_exactly_what_creates_killed_at_each_step_left(
    moto, moto_provider, aws_settings, mngr, tmp_path
) -> None:
    """Creates killed (SIGKILL of mngr) right after the call that imports the provider's key
    pair, after the one that makes its security group, and after `run-instances`. The last
    leaves a host (moto's instances run at once); shown stuck pending, as EC2 shows an
    instance that never came up, gc terminates it."""
    import json

    from mngr_backends.aws_setup import TAG_MADE_AT

    from tests.aws.motoserver import aws_binary
    from tests.support.killed_create import run_killed, vendor

    real = aws_binary()

    def gc_plan() -> set[tuple[str, str, str]]:
        listed = mngr("gc", "-p", "cloud", "--dry-run", "-f", "json")
        assert listed.exit_code == 0, listed.stderr
        return {(o["action"], o["kind"], o["id"]) for o in json.loads(listed.stdout)["orphans"]}

    def killed(name: str, after: str) -> None:
        aws_settings(cloud=moto_provider(binary=vendor(tmp_path, real, kill_after=after)))
        run_killed("host", "create", name, "-p", "cloud")
        aws_settings(cloud=moto_provider())

    # No host yet: the shared key pair and security group a killed create made are orphans,
    # once older than a create may take (their creation time is a tag: made older here).
    killed("keyed", " import-key-pair ")
    killed("grouped", " create-security-group ")
    [key_pair] = ec2(moto, "describe-key-pairs")["KeyPairs"]
    [group] = [
        g
        for g in ec2(moto, "describe-security-groups")["SecurityGroups"]
        if g["GroupName"] == "mngr-cloud"
    ]
    shared = {("key-pair", key_pair["KeyPairId"]), ("security-group", group["GroupId"])}
    assert gc_plan() == {("keep", *one) for one in shared}
    for _, resource in shared:
        ec2(moto, "create-tags", "--resources", resource, "--tags",
            f"Key={TAG_MADE_AT},Value=2026-01-01T00:00:00Z")  # fmt: skip
    assert gc_plan() == {("delete", *one) for one in shared}
    assert mngr("gc", "-p", "cloud", "--yes").exit_code == 0
    assert ec2(moto, "describe-key-pairs")["KeyPairs"] == []

    assert mngr("host", "create", "kept", "-p", "cloud").exit_code == 0
    killed("ran", " run-instances ")
    instances = {
        _tag(i, "Name"): i["InstanceId"]
        for r in ec2(moto, "describe-instances")["Reservations"]
        for i in r["Instances"]
    }
    assert gc_plan() == set()  # running with mngr's complete tags: a host
    stuck = vendor(tmp_path, real, pending=[instances["ran"]])
    aws_settings(cloud=moto_provider(binary=stuck))
    assert gc_plan() == {("delete", "instance", instances["ran"])}
    assert mngr("gc", "-p", "cloud", "--yes").exit_code == 0

    aws_settings(cloud=moto_provider())
    listed = json.loads(mngr("host", "list", "-p", "cloud", "-f", "json").stdout)["hosts"]
    assert [(h["name"], h["state"]) for h in listed] == [("kept", "running")]
    states = {
        i["InstanceId"]: i["State"]["Name"]
        for r in ec2(moto, "describe-instances")["Reservations"]
        for i in r["Instances"]
    }
    assert states == {instances["kept"]: "running", instances["ran"]: "terminated"}


def _tag(instance: dict, key: str) -> str | None:
    return next((t["Value"] for t in instance.get("Tags", []) if t["Key"] == key), None)
