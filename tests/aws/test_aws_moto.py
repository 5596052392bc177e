"""Integration: the real aws CLI against a local moto server the suite starts (reset before
each test), dummy credentials in the environment, `endpoint_url` in the settings."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from mngr_backends.aws import CLI_ENV, AwsBackend, AwsConfig

from mngr.backend import CreateRequest
from mngr.engine import fan_out
from mngr.errors import ConflictError
from mngr.names import new_host_id
from mngr.plan import execute
from mngr.records import Host, utc_now
from mngr.runner import Runner
from tests.aws.motoserver import MotoServer, aws_binary

pytestmark = pytest.mark.aws


def ec2(moto: MotoServer, *args: str, region: str = "us-east-1") -> dict:
    """Look at the endpoint directly, past mngr."""
    argv = [aws_binary(), "ec2", *args, "--region", region]
    argv += ["--endpoint-url", moto.url, "--output", "json"]
    env = {**os.environ, **CLI_ENV}
    out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out) if out.strip() else {}  # create-tags prints nothing


def ebs_snapshots(moto: MotoServer) -> set[str]:
    doc = ec2(moto, "describe-snapshots", "--owner-ids", "self")
    return {s["SnapshotId"] for s in doc["Snapshots"]}


def hosts(mngr, *providers: str) -> dict[str, dict]:
    args = [a for p in providers for a in ("-p", p)]
    result = mngr("host", "list", *args, "--format", "json")
    assert result.exit_code == 0, result.stderr
    return {h["name"]: h for h in json.loads(result.stdout)["hosts"]}


def test_full_lifecycle_leaves_nothing_but_terminated_instances(
    moto, moto_provider, aws_settings, mngr
) -> None:
    aws_settings(cloud=moto_provider(page_size=5))
    snapshots_before = ebs_snapshots(moto)
    names = [f"web-{i}" for i in range(1, 7)]

    created = mngr("host", "create", *names, "-p", "cloud", "-t", "team=a b,c", "-f", "json")
    assert created.exit_code == 0, created.stderr
    assert len(json.loads(created.stdout)["hosts"]) == 6

    requests = moto.requests()
    listed = hosts(mngr, "cloud")
    # 6 hosts in pages of 5: the list followed both; and one listing of the provider's
    # images, for each host's `snapshots` in the JSON
    assert moto.requests() - requests == 3
    assert sorted(listed) == names
    web1 = listed["web-1"]
    assert web1["state"] == "running" and web1["tags"] == {"team": "a b,c"}
    assert web1["id"].startswith("host-") and web1["backend"] == "aws"

    again = mngr("host", "create", "web-1", "-p", "cloud")
    assert again.exit_code == 1 and "already exists" in again.stderr

    assert mngr("host", "stop", "web-1", "-p", "cloud").exit_code == 0
    assert hosts(mngr, "cloud")["web-1"]["state"] == "stopped"
    assert mngr("host", "start", "web-1", "-p", "cloud").exit_code == 0
    assert hosts(mngr, "cloud")["web-1"]["state"] == "running"

    snap = mngr("host", "snapshot", "create", "web-1", "--name", "base", "-f", "json")
    assert snap.exit_code == 0, snap.stderr
    [image] = json.loads(snap.stdout)["snapshots"]
    assert image["id"].startswith("ami-") and image["name"] == "base"
    listed_snaps = mngr("host", "snapshot", "list", "-p", "cloud", "-f", "json")
    [again_image] = json.loads(listed_snaps.stdout)["snapshots"]
    assert (again_image["id"], again_image["host"]) == (image["id"], "web-1")

    clone = mngr(
        "host", "create", "clone", "-p", "cloud", "--from-snapshot", "base", "--disk", "20g"
    )
    assert clone.exit_code == 0, clone.stderr
    assert hosts(mngr, "cloud")["clone"]["image"] == image["id"]

    destroyed = mngr("host", "destroy", *names, "clone", "-p", "cloud", "--yes")
    assert destroyed.exit_code == 0, destroyed.stderr
    deleted = mngr("host", "snapshot", "delete", "base", "-p", "cloud", "--yes")
    assert deleted.exit_code == 0, deleted.stderr

    assert hosts(mngr, "cloud") == {}
    instances = [i for r in ec2(moto, "describe-instances")["Reservations"] for i in r["Instances"]]
    assert len(instances) == 7
    assert {i["State"]["Name"] for i in instances} == {"terminated"}
    assert ec2(moto, "describe-images", "--owners", "self")["Images"] == []
    assert ebs_snapshots(moto) == snapshots_before


def test_providers_in_two_regions_do_not_see_each_other(
    moto, moto_provider, aws_settings, mngr
) -> None:
    aws_settings(
        east=moto_provider(region="us-east-1"),
        west=moto_provider(region="eu-west-1"),
    )
    assert mngr("host", "create", "a", "-p", "east").exit_code == 0
    assert mngr("host", "create", "b", "-p", "west").exit_code == 0
    assert list(hosts(mngr, "east")) == ["a"]
    assert list(hosts(mngr, "west")) == ["b"]
    both = hosts(mngr, "east", "west")
    assert (both["a"]["provider"], both["b"]["provider"]) == ("east", "west")
    assert both["b"]["address"]["region"] == "eu-west-1"


def test_two_concurrent_creates_of_one_name_end_with_one_host(moto, moto_provider) -> None:
    config = AwsConfig(name="cloud", backend="aws", **moto_provider())
    backend = AwsBackend(config, Runner())
    backend.poll_delays_s = (0.2,)
    plans = [
        backend.create_plan(CreateRequest(name="dup", host_id=new_host_id(), created_at=utc_now()))
        for _ in range(2)
    ]
    outcomes = fan_out(lambda plan: execute(plan, backend), plans, jobs=2)
    errors = [o.error for o in outcomes if o.error is not None]
    assert len(errors) == 1 and isinstance(errors[0], ConflictError), errors
    assert [h.name for h in backend.list_hosts()] == ["dup"]


def test_an_unreachable_endpoint_is_an_error_row_and_the_others_are_listed(
    moto, moto_provider, aws_settings, mngr, monkeypatch
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # the CLI would retry a refused connection
    aws_settings(cloud=moto_provider(), down=moto_provider(endpoint_url="http://127.0.0.1:9"))
    assert mngr("host", "create", "here").exit_code == 0  # local
    result = mngr("host", "list", "-p", "local", "-p", "down", "-p", "cloud", "-f", "json")
    assert result.exit_code == 6
    doc = json.loads(result.stdout)
    assert [h["name"] for h in doc["hosts"]] == ["here"]
    [error] = doc["errors"]
    assert (error["provider"], error["kind"]) == ("down", "unreachable")


def test_provider_check_and_a_destroy_of_an_unknown_instance(
    moto, moto_provider, aws_settings, mngr
) -> None:
    aws_settings(cloud=moto_provider())
    result = mngr("provider", "check", "cloud", "-f", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["providers"][0]["details"]["region"] == "us-east-1"

    backend = AwsBackend(AwsConfig(name="cloud", backend="aws", **moto_provider()), Runner())
    gone = Host(
        id=new_host_id(),
        name="gone",
        provider="cloud",
        backend="aws",
        handle="i-0123456789abcdef0",
    )
    execute(backend.destroy_plan(gone), backend)  # InvalidInstanceID.NotFound: nothing to do
    assert backend.runner.calls[-1][2] == "terminate-instances"


def test_a_spot_host_says_it_cannot_stop_and_stop_is_refused_before_any_call(
    moto, moto_provider, aws_settings, mngr
) -> None:
    aws_settings(cloud=moto_provider())
    assert mngr("host", "create", "cheap", "-p", "cloud", "--spot").exit_code == 0
    cheap = hosts(mngr, "cloud")["cheap"]
    assert cheap["address"]["lifecycle"] == "spot"
    assert "spot instance" in cheap["unsupported"]["stop/start"]
    requests = moto.requests()
    stopped = mngr("host", "stop", "cheap", "-p", "cloud")
    assert stopped.exit_code == 2
    assert "host 'cheap.cloud' cannot stop/start: it is a one-time spot" in stopped.stderr
    assert moto.requests() - requests == 1  # the lookup of the host, and no stop-instances
    assert hosts(mngr, "cloud")["cheap"]["state"] == "running"


def test_a_host_made_from_a_snapshot_logs_in_as_the_snapshot_host_did(
    moto, moto_provider, aws_settings, mngr
) -> None:
    """An ubuntu host's snapshot makes ubuntu hosts: the image records the ssh user, and
    the clone's instance is tagged with it (else it would log in as ec2-user)."""
    aws_settings(cloud=moto_provider())
    assert mngr("host", "create", "src", "-p", "cloud").exit_code == 0
    instance = hosts(mngr, "cloud")["src"]["address"]["instance_id"]
    # As an image alias of the ubuntu family tags it (moto has no ubuntu parameters).
    ec2(moto, "create-tags", "--resources", instance, "--tags", "Key=mngr:ssh-user,Value=ubuntu")
    assert hosts(mngr, "cloud")["src"]["address"]["ssh_user"] == "ubuntu"

    snap = mngr("host", "snapshot", "create", "src", "--name", "base", "-p", "cloud")
    assert snap.exit_code == 0, snap.stderr
    clone = mngr("host", "create", "clone", "-p", "cloud", "--from-snapshot", "base")
    assert clone.exit_code == 0, clone.stderr
    assert hosts(mngr, "cloud")["clone"]["address"]["ssh_user"] == "ubuntu"
