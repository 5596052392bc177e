"""AwsSpec parsers over JSON captured from the real aws CLI (tests/fixtures/aws/capture.py)."""

from __future__ import annotations

import json

import pytest
from mngr_backends.aws import AwsConfig, AwsSpec

from mngr.errors import NotFoundError, VendorOutputError
from mngr.records import HostState
from tests.aws.motoserver import FIXTURES

pytestmark = pytest.mark.aws


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


@pytest.fixture
def spec() -> AwsSpec:
    return AwsSpec(AwsConfig(name="capture", backend="aws", region="us-east-1"))


def test_list_reads_hosts_from_tags_and_skips_instances_mngr_did_not_make(spec) -> None:
    instances, token = spec.parse_instances(fixture("describe-instances.json"))
    assert token is None
    assert len(instances) == 3
    hosts = sorted((h for h in map(spec.host_of, instances) if h), key=lambda h: h.name)
    assert [(h.name, h.state) for h in hosts] == [
        ("spot-1", HostState.RUNNING),
        ("web-2", HostState.STOPPED),
    ]
    spot, web2 = hosts
    assert web2.id == "host-" + "2" * 32
    assert web2.provider == "capture" and web2.backend == "aws"
    assert web2.image == "ami-1e749f67"
    assert web2.created_at == "2026-01-02T03:04:06Z"
    assert web2.tags == {"team": "a b,c=d"}
    assert web2.handle == web2.address["instance_id"]
    assert web2.address["lifecycle"] == "on-demand"
    assert spot.address["lifecycle"] == "spot"
    assert spot.address["ssh"] == f"ec2-user@{spot.address['public_ip']}"
    assert "handle" not in web2.model_dump(mode="json")


def test_a_truncated_listing_hands_back_its_next_token(spec) -> None:
    instances, token = spec.parse_instances(fixture("describe-instances-first-page.json"))
    assert len(instances) == 1
    assert token


def test_empty_listing(spec) -> None:
    assert spec.parse_instances(fixture("describe-instances-empty.json")) == ([], None)


def test_run_instances_gives_the_new_instance(spec) -> None:
    instance = spec.parse_launched(fixture("run-instances.json"))
    assert instance.InstanceId.startswith("i-")
    host = spec.host_of(instance)
    assert host is not None
    assert host.name == "web-1" and host.state == HostState.BUILDING


def test_snapshots_are_the_provider_images(spec) -> None:
    images = spec.parse_images(fixture("describe-images-snapshots.json"))
    [snap] = [spec.snapshot_of(i) for i in images]
    assert snap is not None
    assert snap.id == json.loads(fixture("create-image.json"))["ImageId"]
    assert (snap.name, snap.host, snap.provider) == ("web-2-snap", "web-2", "capture")
    assert snap.created_at == "2026-01-02T04:00:00Z"
    [ebs] = images[0].ebs_snapshots
    assert ebs.startswith("snap-")


def test_create_image_gives_the_image_id(spec) -> None:
    assert spec.parse_created_image(fixture("create-image.json")).startswith("ami-")


def test_root_volume_mapping_is_the_image_root_device_encrypted_and_resized(spec) -> None:
    images = fixture("describe-images-base.json")
    mapping = spec.root_volume_mapping(images, "ami-1e749f67", 40)
    ebs = {"SnapshotId": "snap-d17746c6d4fe76094", "DeleteOnTermination": True, "Encrypted": True}
    assert json.loads(mapping) == [{"DeviceName": "/dev/sda1", "Ebs": {**ebs, "VolumeSize": 40}}]
    as_built = spec.root_volume_mapping(images, "ami-1e749f67", None)
    assert json.loads(as_built) == [{"DeviceName": "/dev/sda1", "Ebs": {**ebs, "VolumeSize": 15}}]
    with pytest.raises(NotFoundError):
        spec.root_volume_mapping('{"Images": []}', "ami-x", 40)


def test_check_reports_the_region(spec) -> None:
    assert spec.parse_region(fixture("describe-regions.json")) == {
        "region": "us-east-1",
        "endpoint": "ec2.us-east-1.amazonaws.com",
    }


def test_cpus_come_from_the_cpu_options_when_given(spec) -> None:
    doc = json.loads(fixture("run-instances.json"))
    doc["Instances"][0]["CpuOptions"] = {"CoreCount": 2, "ThreadsPerCore": 2}
    host = spec.host_of(spec.parse_launched(json.dumps(doc)))
    assert host is not None and host.resources.cpus == 4
    assert spec.host_of(spec.parse_launched(fixture("run-instances.json"))).resources.cpus is None


def test_unknown_fields_are_ignored(spec) -> None:
    doc = json.loads(fixture("describe-instances.json"))
    doc["Brand"] = {"new": True}
    doc["Reservations"][0]["Instances"][0]["SomethingNew"] = [1, 2]
    instances, _ = spec.parse_instances(json.dumps(doc))
    assert len(instances) == 3


@pytest.mark.parametrize("text", ["not json", '{"Reservations": 5}', "[1]"])
def test_unreadable_output_names_the_command(spec, text) -> None:
    with pytest.raises(VendorOutputError, match="describe-instances"):
        spec.parse_instances(text)
