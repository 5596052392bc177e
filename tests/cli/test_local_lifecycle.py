from __future__ import annotations

import json


def test_create_list_destroy_round_trip(mngr) -> None:
    assert mngr("host", "create", "web-1", "--tag", "team=a b,c=d").exit_code == 0
    listed = mngr("host", "list", "--format", "json")
    assert listed.exit_code == 0
    doc = json.loads(listed.stdout)
    assert doc["schema_version"] == 1 and doc["errors"] == []
    [host] = doc["hosts"]
    assert host["name"] == "web-1" and host["provider"] == "local" and host["state"] == "running"
    assert host["tags"] == {"team": "a b,c=d"}
    assert host["id"].startswith("host-") and len(host["id"]) == 37
    assert mngr("host", "destroy", "web-1", "--yes").exit_code == 0
    assert json.loads(mngr("host", "list", "--format", "json").stdout)["hosts"] == []
