"""`mngr host inventory`: the running hosts grouped per provider and per tag, as a pyinfra
inventory file (loaded by pyinfra's own loader), Ansible's dynamic-inventory JSON (loaded by the
real `ansible-inventory`) and mngr's JSON; stopped hosts are left out and said so."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require

pytestmark = pytest.mark.sshd


@pytest.fixture
def hosts(sshd_pool, mngr) -> None:  # noqa: ANN001
    sshd_pool(1)
    for args in (
        ("web", "-p", "pool", "-t", "role=web"),
        ("db", "-p", "local", "-t", "role=db"),
        ("off", "-p", "local", "-t", "role=web"),
    ):
        assert mngr("host", "create", *args, "-q").exit_code == 0
    assert mngr("host", "stop", "off").exit_code == 0


def test_ansible_inventory_loads_it_with_ssh_vars(hosts, mngr, tmp_path: Path) -> None:  # noqa: ANN001
    ansible_inventory = Path(sys.executable).with_name("ansible-inventory")
    require(ansible_inventory.exists(), "ansible-core is not installed (pip install -e '.[dev]')")
    result = mngr("host", "inventory", "--format", "ansible")
    assert result.exit_code == 0, result.stderr
    assert "left out, not running: off.local (stopped)" in result.stderr
    ours = result.json()
    assert ours["all"]["children"] == ["ungrouped", "provider_local", "provider_pool"] + [
        "tag_role_db",
        "tag_role_web",
    ]
    script = tmp_path / "mngr-inventory.sh"  # a dynamic inventory script, as Ansible runs one
    (tmp_path / "inventory.json").write_text(result.stdout)
    script.write_text(f"#!/bin/sh\ncat '{tmp_path / 'inventory.json'}'\n")
    script.chmod(0o755)
    env = {**os.environ, "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp")}
    env["ANSIBLE_INVENTORY_ENABLED"] = "script"
    loaded = subprocess.run(
        [str(ansible_inventory), "-i", str(script), "--list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert loaded.returncode == 0, loaded.stderr
    listed = json.loads(loaded.stdout)
    assert set(listed["_meta"]["hostvars"]) == {"web.pool", "db.local"}
    assert listed["provider_pool"]["hosts"] == ["web.pool"]
    assert listed["tag_role_web"]["hosts"] == ["web.pool"]
    assert listed["tag_role_db"]["hosts"] == ["db.local"]
    web = listed["_meta"]["hostvars"]["web.pool"]
    assert web["ansible_host"].startswith("127.0.0.") and isinstance(web["ansible_port"], int)
    assert "StrictHostKeyChecking=yes" in web["ansible_ssh_common_args"]
    assert web["mngr_provider"] == "pool" and web["mngr_tags"] == {"role": "web"}
    assert "ansible_host" not in listed["_meta"]["hostvars"]["db.local"]  # no ssh endpoint
    if shutil.which("ssh"):  # the vars reach the machine, as Ansible's ssh would
        key = web["ansible_ssh_private_key_file"]
        common = web["ansible_ssh_common_args"].split()
        argv = ["ssh", "-i", key, "-p", str(web["ansible_port"]), *common, "-o", "BatchMode=yes"]
        argv += [f"{web['ansible_user']}@{web['ansible_host']}", "echo", "reached"]
        assert subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout == (
            "reached\n"
        )


def test_pyinfra_inventory_file_loads_with_groups_per_provider_and_tag(hosts, mngr) -> None:  # noqa: ANN001
    result = mngr("host", "inventory", "-t", "role=web")
    assert result.exit_code == 0, result.stderr
    Path("inventory.py").write_text(result.stdout)
    loaded = subprocess.run(  # pyinfra's own loader, in its own (gevent-patched) process
        [sys.executable, "-m", "pyinfra", "inventory.py", "debug-inventory", "--json"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert loaded.returncode == 0, loaded.stderr
    [web] = json.loads(loaded.stdout)
    assert web["name"] == "@mngr/web.pool" and web["data"]["mngr_host"] == "web.pool"
    assert {"provider_pool", "tag_role_web", "@mngr"} <= set(web["groups"])


def test_json_inventory_names_the_pyinfra_target_and_the_ssh_endpoint(hosts, mngr) -> None:  # noqa: ANN001
    result = mngr("host", "inventory", "-f", "json", "-p", "local")
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert [h["pyinfra"] for h in data["hosts"]] == ["@mngr/db.local"]
    assert data["hosts"][0]["ssh_endpoint"] is None
    assert data["groups"] == {"provider_local": ["db.local"], "tag_role_db": ["db.local"]}
    assert data["left_out"] == [{"ref": "off.local", "state": "stopped"}]
    pool = mngr("host", "inventory", "-f", "json", "-p", "pool").json()
    assert pool["hosts"][0]["ssh_endpoint"]["port"] > 0
    assert mngr("host", "inventory", "-f", "yaml").exit_code == 2
