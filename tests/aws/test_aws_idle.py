"""Idle stop on aws, against moto and the real aws CLI: what can be checked without a real
machine is what the launch asks EC2 for: the watcher in the user data, and shutdown
behaviour `stop` (a machine that powers itself off is then stopped, not terminated)."""

from __future__ import annotations

import base64

import pytest

from mngr import idle
from tests.aws.test_aws_moto import ec2, hosts

pytestmark = pytest.mark.aws


def attribute(moto, instance_id: str, name: str) -> dict:
    return ec2(moto, "describe-instance-attribute", "--instance-id", instance_id,
               "--attribute", name)  # fmt: skip


def test_an_idle_host_boots_the_watcher_and_stops_on_shutdown(
    moto, moto_provider, aws_settings, mngr
) -> None:
    aws_settings(cloud=moto_provider())
    made = mngr("host", "create", "dev", "-p", "cloud", "--idle-timeout", "30m")
    assert made.exit_code == 0, made.stderr

    dev = hosts(mngr, "cloud")["dev"]
    assert dev["idle_timeout_s"] == 1800
    assert dev["last_activity_at"] is None  # EC2 cannot tell without reaching into the host
    instance = dev["address"]["instance_id"]
    behaviour = attribute(moto, instance, "instanceInitiatedShutdownBehavior")
    assert behaviour["InstanceInitiatedShutdownBehavior"]["Value"] == "stop"
    user_data = attribute(moto, instance, "userData")["UserData"]["Value"]
    script = base64.b64decode(user_data).decode()
    assert script == idle.boot_script(1800)
    assert "ExecStart=/usr/local/sbin/mngr-idle 1800 60 1000 poweroff" in script

    # Stopped and started again (as after an idle stop), it keeps its timeout.
    assert mngr("host", "stop", "dev", "-p", "cloud").exit_code == 0
    assert mngr("host", "start", "dev", "-p", "cloud").exit_code == 0
    assert hosts(mngr, "cloud")["dev"]["idle_timeout_s"] == 1800


def test_a_host_without_a_timeout_gets_no_watcher(moto, moto_provider, aws_settings, mngr):
    aws_settings(cloud=moto_provider())
    assert mngr("host", "create", "plain", "-p", "cloud").exit_code == 0
    plain = hosts(mngr, "cloud")["plain"]
    assert plain["idle_timeout_s"] is None
    instance = plain["address"]["instance_id"]
    assert "Value" not in attribute(moto, instance, "userData").get("UserData", {})


def test_a_spot_instance_cannot_take_an_idle_timeout(moto_provider, aws_settings, mngr):
    aws_settings(cloud=moto_provider())
    refused = mngr("host", "create", "dev", "-p", "cloud", "--spot", "--idle-timeout", "1h")
    assert refused.exit_code == 2
    assert "one-time spot instance" in refused.stderr
