"""Parser tests over output captured from the real docker CLI (tests/fixtures/docker/)."""

from __future__ import annotations

import json

import pytest
from mngr_backends.docker import DockerConfig, DockerSpec

from mngr.errors import VendorOutputError
from mngr.records import HostState
from tests.docker.conftest import fixture_text

SPEC = DockerSpec(DockerConfig(name="local_docker", backend="docker"))


def hosts_by_name() -> dict:
    return {h.name: h for h in SPEC.parse_hosts(fixture_text("inspect_hosts.json"))}


def test_ids_are_read_one_per_line() -> None:
    ids = SPEC.parse_ids(fixture_text("ps.txt"))
    assert len(ids) == 6 and all(len(i) == 64 for i in ids)
    assert SPEC.parse_ids("") == []


def test_hosts_come_back_from_their_labels_and_states_map() -> None:
    hosts = hosts_by_name()
    assert set(hosts) == {"web", "db", "restored", "broken", "fresh"}  # not `handmade`
    states = {name: h.state for name, h in hosts.items()}
    assert states == {
        "web": HostState.RUNNING,
        "restored": HostState.RUNNING,
        "db": HostState.STOPPED,  # docker stop: exit 143
        "broken": HostState.FAILED,  # exited 3 on its own
        "fresh": HostState.BUILDING,  # created, never started
    }
    web = hosts["web"]
    assert web.id == "host-" + "0" * 31 + "1"
    assert web.provider == "local_docker" and web.backend == "docker"
    assert web.created_at == "2025-01-01T10:00:00Z"
    assert web.image == "mngr-test-busybox:latest"
    assert web.address["container"] == "web.local_docker"
    assert web.native_id == web.address["container_id"] and len(web.native_id) == 64


def test_tag_values_with_commas_equals_spaces_and_unicode_round_trip() -> None:
    assert hosts_by_name()["web"].tags == {"team": "a,b=c d", "owner": "zoë ☃", "empty": ""}


def test_a_host_made_from_a_snapshot_does_not_inherit_the_old_hosts_tags() -> None:
    # The committed image carries web's mngr.tag.* labels; the container's mngr.tags wins.
    raw = {c["Name"]: c for c in json.loads(fixture_text("inspect_hosts.json"))}
    assert "mngr.tag.team" in raw["/restored.local_docker"]["Config"]["Labels"]
    assert hosts_by_name()["restored"].tags == {}


def test_tags_fall_back_to_per_tag_labels_without_the_json_label() -> None:
    doc = json.loads(fixture_text("inspect_hosts.json"))
    web = next(c for c in doc if c["Name"] == "/web.local_docker")
    del web["Config"]["Labels"]["mngr.tags"]
    [host] = [h for h in SPEC.parse_hosts(json.dumps(doc)) if h.name == "web"]
    assert host.tags == {"team": "a,b=c d", "owner": "zoë ☃", "empty": ""}


def test_resources_are_read_from_the_host_config() -> None:
    resources = hosts_by_name()["web"].resources
    assert resources.cpus == 1.5 and resources.memory_gb == 0.25 and resources.gpus is None
    assert hosts_by_name()["db"].resources.cpus is None


def test_unknown_fields_and_missing_sections_do_not_break_parsing() -> None:
    doc = [
        {
            "Id": "f" * 64,
            "NewField": {"x": 1},
            "Config": {"Labels": {"mngr.host-id": "host-1", "mngr.host-name": "h"}},
        }
    ]
    [host] = SPEC.parse_hosts(json.dumps(doc))
    assert host.state == HostState.UNKNOWN and host.tags == {}


@pytest.mark.parametrize("text", ["<html>502</html>", '[{"Id": "x"', '{"Id": "x"}', "[1]"])
def test_garbage_names_the_command_that_printed_it(text: str) -> None:
    with pytest.raises(VendorOutputError, match="docker inspect"):
        SPEC.parse_hosts(text)


def test_partial_inspect_output_still_parses() -> None:
    partial = json.loads(fixture_text("inspect_partial.json"))
    assert partial["returncode"] == 1 and "No such" in partial["stderr"]
    assert [h.name for h in SPEC.parse_hosts(partial["stdout"])] == ["web"]


def test_snapshots_come_back_from_image_labels() -> None:
    ids = SPEC.parse_ids(fixture_text("snapshot_images.txt"))
    assert len(ids) == 1
    [snap] = SPEC.parse_snapshots(fixture_text("inspect_snapshots.json"))
    assert snap.name == "web-base" and snap.host == "web" and snap.provider == "local_docker"
    assert snap.id.startswith("snap-") and snap.native_id == f"mngr-snapshot:{snap.id}"
    assert snap.created_at and snap.created_at.endswith("Z")


def test_version_reports_the_server() -> None:
    facts = SPEC.parse_version(fixture_text("version.json"))
    assert facts["reachable"] is True
    assert facts["server_version"] and facts["api_version"] and facts["os_arch"] == "linux/amd64"


def test_container_id_is_the_last_line_docker_run_prints() -> None:
    cid = fixture_text("run.txt").strip()
    assert SPEC.parse_container_id("Pulling...\n" + cid + "\n") == cid
    with pytest.raises(VendorOutputError, match="no container id"):
        SPEC.parse_container_id("")
