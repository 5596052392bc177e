"""A second mngr drives a real `mngr serve` through backend `mngr`: the whole lifecycle."""

from __future__ import annotations

import json
import re

import pytest

from tests.server.conftest import RW_TOKEN, hosts_of

pytestmark = pytest.mark.server


def test_whole_lifecycle_through_a_remote_server(team, mngr) -> None:
    created = mngr("host", "create", "web-1", "-p", "team", "--tag", "team=infra")
    assert created.exit_code == 0, created.stderr
    assert (team.data_dir / "web-1" / ".mngr" / "host.json").exists()

    code, doc = hosts_of(mngr, "-p", "team")
    assert code == 0 and doc["schema_version"] == 1 and doc["errors"] == []
    [host] = doc["hosts"]
    assert host["name"] == "web-1" and host["state"] == "running"
    assert host["provider"] == "team" and host["backend"] == "mngr"
    assert host["tags"] == {"team": "infra"}
    # The remote side is kept: which server, which of its providers, its own address.
    assert host["address"]["server"] == team.url
    assert host["address"]["provider"] == "local" and host["address"]["backend"] == "local"
    assert host["address"]["remote"]["path"] == str(team.data_dir / "web-1")

    assert mngr("host", "stop", "web-1.team").exit_code == 0
    assert hosts_of(mngr, "-p", "team")[1]["hosts"][0]["state"] == "stopped"
    assert mngr("host", "start", "web-1", "-p", "team").exit_code == 0
    assert hosts_of(mngr, "-p", "team")[1]["hosts"][0]["state"] == "running"

    (team.data_dir / "web-1" / "payload.txt").write_text("kept\n")
    snap = mngr("host", "snapshot", "create", "web-1.team", "--name", "s1", "--format", "json")
    assert snap.exit_code == 0, snap.stderr
    [made] = json.loads(snap.stdout)["snapshots"]
    assert made["name"] == "s1" and made["host"] == "web-1" and made["provider"] == "team"
    listed = mngr("host", "snapshot", "list", "-p", "team", "--format", "json")
    assert listed.exit_code == 0
    assert [s["id"] for s in json.loads(listed.stdout)["snapshots"]] == [made["id"]]

    restored = mngr("host", "create", "web-2", "-p", "team", "--from-snapshot", "s1")
    assert restored.exit_code == 0, restored.stderr
    assert (team.data_dir / "web-2" / "payload.txt").read_text() == "kept\n"

    assert mngr("host", "snapshot", "delete", "s1", "-p", "team", "--yes").exit_code == 0
    listed = mngr("host", "snapshot", "list", "-p", "team", "--format", "json")
    assert json.loads(listed.stdout)["snapshots"] == []

    destroyed = mngr("host", "destroy", "web-1", "web-2", "-p", "team", "--yes")
    assert destroyed.exit_code == 0, destroyed.stderr
    assert hosts_of(mngr, "-p", "team") == (0, {"schema_version": 1, "hosts": [], "errors": []})
    assert not (team.data_dir / "web-1").exists()


def test_duplicate_name_is_a_conflict_and_missing_host_is_not_found(team, mngr) -> None:
    assert mngr("host", "create", "db", "-p", "team").exit_code == 0
    again = mngr("host", "create", "db", "-p", "team")
    assert again.exit_code == 1 and "already exists" in again.stderr
    missing = mngr("host", "stop", "nope", "-p", "team")
    assert missing.exit_code == 3 and "no host 'nope'" in missing.stderr
    # Destroying a host that is gone is not an error.
    assert mngr("host", "destroy", "nope", "-p", "team", "--yes").exit_code == 3
    assert mngr("host", "destroy", "nope", "-p", "team", "--yes", "--missing-ok").exit_code == 0


def test_dry_run_prints_the_http_calls_and_never_the_token(team, mngr) -> None:
    dry = mngr("host", "create", "web", "-p", "team", "--tag", "a=b", "--dry-run")
    assert dry.exit_code == 0
    assert re.fullmatch(
        rf'# POST {team.url}/v1/hosts \{{"name": "web", "host_id": "host-[0-9a-f]{{32}}", '
        r'"tags": \{"a": "b"\}\}',
        dry.stdout.strip(),
    )
    assert not (team.data_dir / "web").exists()
    assert mngr("host", "create", "web", "-p", "team").exit_code == 0
    host_id = hosts_of(mngr, "-p", "team")[1]["hosts"][0]["id"]
    dry = mngr("host", "destroy", "web", "-p", "team", "--dry-run")
    assert dry.stdout.strip() == f"# DELETE {team.url}/v1/hosts/{host_id}?provider=local"
    dry = mngr("host", "stop", "web", "-p", "team", "--snapshot", "--dry-run")
    assert dry.stdout.strip() == (
        f'# POST {team.url}/v1/hosts/{host_id}/stop?provider=local {{"snapshot": true}}'
    )
    assert (team.data_dir / "web").exists()
    for text in (dry.stdout, dry.stderr):
        assert RW_TOKEN not in text


def test_create_goes_to_the_chosen_remote_provider(serve, client_settings, mngr) -> None:
    server = serve(
        "--provider", "local", "--provider", "lab",
        settings='[providers.lab]\nbackend = "local"\n',
    )  # fmt: skip
    client_settings(extra={"labonly": {"providers": ["lab"]}}, team=server, labonly=server)
    assert mngr("host", "create", "a", "-p", "team").exit_code == 0  # the server's default
    assert mngr("host", "create", "b", "-p", "team", "--remote-provider", "lab").exit_code == 0
    assert mngr("host", "create", "c", "-p", "labonly").exit_code == 0  # first of `providers`
    code, doc = hosts_of(mngr, "-p", "team")
    assert code == 0
    assert {h["name"]: h["address"]["provider"] for h in doc["hosts"]} == {
        "a": "local",
        "b": "lab",
        "c": "lab",
    }
    code, doc = hosts_of(mngr, "-p", "labonly")
    assert sorted(h["name"] for h in doc["hosts"]) == ["b", "c"]
    refused = mngr("host", "create", "d", "-p", "labonly", "--remote-provider", "local")
    assert refused.exit_code == 2 and "not in the providers" in refused.stderr


def test_remote_options_are_validated_by_the_remote_backend(team, mngr) -> None:
    result = mngr("host", "create", "x", "-p", "team", "--remote-option", "gpu=1")
    assert result.exit_code == 2
    assert "options.gpu" in result.stderr
    assert not (team.data_dir / "x").exists()
    bad = mngr("host", "create", "x", "-p", "team", "--remote-option", "novalue")
    assert bad.exit_code == 2 and "KEY=VALUE" in bad.stderr


def test_provider_check_reports_the_server(team, mngr) -> None:
    result = mngr("provider", "check", "team", "--format", "json")
    assert result.exit_code == 0, result.stderr
    [row] = json.loads(result.stdout)["providers"]
    assert row["ok"] is True and row["details"]["providers"] == ["local"]


def test_resources_travel_to_the_servers_backend_which_decides(team, mngr) -> None:
    """`--memory` means the same through a server: parsed here, sent with its unit, and
    refused by the server's own backend when it does not take it (local takes none)."""
    dry = mngr(
        "host", "create", "web", "-p", "team", "--memory", "2g", "--cpus", "1.5", "--dry-run"
    )
    assert dry.exit_code == 0 and '"cpus": "1.5", "memory": "2097152.0k"' in dry.stdout
    refused = mngr("host", "create", "web", "-p", "team", "--memory", "2g")
    assert refused.exit_code == 2
    assert "--memory is not supported by backend 'local'" in refused.stderr
    bare = mngr("host", "create", "web", "-p", "team", "--memory", "2")
    assert bare.exit_code == 2 and "give a unit" in bare.stderr
    assert not (team.data_dir / "web").exists()
