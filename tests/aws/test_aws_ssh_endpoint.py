"""An EC2 host's ssh endpoint (its IP, the provider's ssh user and key) in `host list --format
json` and `host ssh-config`, with the real aws CLI against the local moto server. Nothing
connects to the instance's address: it is not on loopback."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.aws


def test_an_instance_has_an_ssh_endpoint_and_a_stanza(
    moto_provider,
    aws_settings,
    mngr,
    tmp_path,  # noqa: ANN001
) -> None:
    from mngr_backends.aws_setup import ManagedKey

    from mngr.config import load
    from mngr.service import Service

    known = tmp_path / "known_hosts"
    aws_settings(
        cloud=moto_provider(identity_file="/keys/id", known_hosts=str(known)),
        odd=moto_provider(ssh_user="ec2 user", region="us-west-2"),
    )
    assert mngr("host", "create", "web", "-p", "cloud").exit_code == 0
    assert mngr("host", "create", "api", "-p", "odd").exit_code == 0
    listed = json.loads(mngr("host", "list", "--format", "json").stdout)["hosts"]
    web = next(h for h in listed if h["name"] == "web")
    ip = web["address"].get("public_ip") or web["address"]["private_ip"]
    assert web["ssh_endpoint"] == {
        "host": ip,
        "port": 22,
        "user": "ec2-user",
        # launched with mngr's managed key pair: its key, not the settings' identity_file
        "identity_file": str(ManagedKey("cloud").private),
        "known_hosts": str(known),
        "strict_host_key_checking": "yes",
    }

    config = Service(load()).ssh_config([])
    assert config.text.startswith(f"Host web web.cloud\n    HostName {ip}\n")
    assert config.skipped == [
        ("api.odd", "its User 'ec2 user' cannot be written into an ssh config safely")
    ]
    assert "ec2 user" not in config.text
    assert mngr("host", "destroy", "web", "api", "--yes").exit_code == 0
