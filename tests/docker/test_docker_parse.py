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
    return {h.name: h for h in SPEC.parse_hosts(fixture_text("ps.jsonl"))}


def test_ids_are_read_one_per_line() -> None:
    ids = SPEC.parse_ids(fixture_text("snapshot_images.txt") * 2)
    assert len(ids) == 1 and ids[0].startswith("sha256:")
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
    assert web.handle == web.address["container_id"] and len(web.handle) == 64


def test_tag_values_with_commas_equals_spaces_and_unicode_round_trip() -> None:
    assert hosts_by_name()["web"].tags == {"team": "a,b=c d", "owner": "zoë ☃", "empty": ""}


def test_a_host_made_from_a_snapshot_inherits_neither_tags_nor_resources() -> None:
    # The committed image carries web's labels along; the container's own labels win.
    restored = hosts_by_name()["restored"]
    assert restored.tags == {}
    assert restored.resources.cpus is None and restored.resources.memory_gb is None


def test_resources_are_read_from_their_labels() -> None:
    resources = hosts_by_name()["web"].resources
    assert resources.cpus == 1.5 and resources.memory_gb == 0.25 and resources.gpus is None
    assert hosts_by_name()["db"].resources.cpus is None


def test_unknown_fields_and_missing_labels_do_not_break_parsing() -> None:
    row = {
        "ID": "f" * 64,
        "NewField": 1,
        "Labels": {"mngr.host-id": "host-1", "mngr.host-name": "h"},
    }
    [host] = SPEC.parse_hosts(json.dumps(row))
    assert host.state == HostState.UNKNOWN and host.tags == {} and host.created_at is None


@pytest.mark.parametrize("text", ["<html>502</html>", '{"ID": "x"', '{"Names": "x"}', "[1]"])
def test_garbage_names_the_command_that_printed_it(text: str) -> None:
    with pytest.raises(VendorOutputError, match="docker ps"):
        SPEC.parse_hosts(text)


def test_a_partial_image_inspect_still_parses() -> None:
    partial = json.loads(fixture_text("inspect_partial.json"))
    assert partial["returncode"] == 1 and "No such image" in partial["stderr"]
    assert [s.name for s in SPEC.parse_snapshots(partial["stdout"])] == ["web-base"]


def test_snapshots_come_back_from_image_labels() -> None:
    ids = SPEC.parse_ids(fixture_text("snapshot_images.txt"))
    assert len(ids) == 1
    [snap] = SPEC.parse_snapshots(fixture_text("inspect_snapshots.json"))
    assert snap.name == "web-base" and snap.host == "web" and snap.provider == "local_docker"
    assert snap.id.startswith("snap-") and snap.handle == f"mngr-snapshot:{snap.id}"
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
