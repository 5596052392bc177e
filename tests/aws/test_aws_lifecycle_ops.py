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
