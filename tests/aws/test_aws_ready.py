"""Integration: a provider with only `region` set (plus the test endpoint) gives hosts one can
use. The real aws CLI against moto: the image from SSM, mngr's key pair and security group made
once (also by two first creates at once), IMDSv2, encrypted and tagged volumes, nothing left by
destroy, and what gc removes. moto's instances have no reachable address, so their ssh goes to
a real sshd on 127.0.0.2 through MNGR_AWS_TEST_SSH_ENDPOINT (a hook only tests set).

moto serves AWS's public Amazon Linux parameters (al2023 here, x86_64 and arm64); it has none of
Canonical's or Debian's, and refuses to write under /aws/, so those aliases are pinned by the
fp tests (test_aws_cli.py) only.
"""

from __future__ import annotations

import getpass
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from mngr_backends.aws import CLI_ENV, AwsBackend, AwsConfig, AwsCreateOptions
from mngr_backends.aws_setup import TEST_SSH_ENDPOINT, ManagedKey, known_hosts_file

from mngr.backend import CreateRequest
from mngr.fanout import fan_out
from mngr.names import new_host_id
from mngr.plan import execute
from mngr.records import utc_now
from mngr.runner import Runner
from tests.aws.motoserver import aws_binary
from tests.aws.test_aws_moto import ec2
from tests.conftest import require
from tests.ssh.sshd_pool import Sshd, missing

pytestmark = pytest.mark.aws


def ssm_image(moto, arch: str) -> str:
    name = f"/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-{arch}"
    argv = [aws_binary(), "ssm", "get-parameters", "--names", name, "--region", "us-east-1"]
    argv += ["--endpoint-url", moto.url, "--output", "json"]
    done = subprocess.run(argv, env={**os.environ, **CLI_ENV}, capture_output=True, text=True)
    return json.loads(done.stdout)["Parameters"][0]["Value"]


def instances(moto) -> list[dict]:
    return [i for r in ec2(moto, "describe-instances")["Reservations"] for i in r["Instances"]]


def live(moto) -> dict[str, dict]:
    by_name = {}
    for i in instances(moto):
        if i["State"]["Name"] != "terminated":
            by_name[{t["Key"]: t["Value"] for t in i["Tags"]}["Name"]] = i
    return by_name


def key_pairs(moto) -> list[dict]:
    return ec2(moto, "describe-key-pairs")["KeyPairs"]


def mngr_groups(moto) -> list[dict]:
    groups = ec2(moto, "describe-security-groups")["SecurityGroups"]
    return [g for g in groups if g["GroupName"].startswith("mngr-")]


def only_region(moto, **more) -> dict:
    """`region` and nothing else of the provider's own: the rest points at the test endpoint."""
    return {"region": "us-east-1", "endpoint_url": moto.url, "binary": aws_binary(), **more}


def backend_of(settings: dict, name: str = "cloud") -> AwsBackend:
    backend = AwsBackend(AwsConfig(name=name, backend="aws", **settings), Runner())
    backend.poll_delays_s = (0.2,)
    return backend


def run_mngr(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as its own process: exec hands its stdio to ssh."""
    argv = [sys.executable, "-m", "mngr", *args]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )


@pytest.fixture
def sshd(tmp_path: Path, isolated_home, monkeypatch) -> Sshd:
    """A real sshd on 127.0.0.2 that lets in mngr's key of provider `cloud` (not made yet),
    where every aws host's ssh goes."""
    require(missing() is None, f"real sshd cannot run here: {missing()}")
    server = Sshd("ec2", "127.0.0.2", tmp_path / "sshd", ManagedKey("cloud").public)
    server.start()
    monkeypatch.setenv(TEST_SSH_ENDPOINT, f"{server.address}:{server.port}")
    yield server
    server.stop()


def test_a_provider_with_only_a_region_gives_hosts_one_can_ssh_into(
    moto, aws_settings, mngr, sshd, tmp_path
) -> None:
    # ssh_user: this box's sshd logs in as the test's own user, not al2023's ec2-user.
    aws_settings(cloud=only_region(moto, ssh_user=getpass.getuser(), wait_timeout_s=60))

    made = mngr("host", "create", "web", "-p", "cloud", "-f", "json")
    assert made.exit_code == 0, made.stderr
    web = live(moto)["web"]
    assert web["ImageId"] == ssm_image(moto, "x86_64")  # al2023, from SSM
    assert web["MetadataOptions"]["HttpTokens"] == "required"  # IMDSv2 only
    [pair] = key_pairs(moto)
    [group] = mngr_groups(moto)
    assert web["KeyName"] == pair["KeyName"] and pair["KeyName"].startswith("mngr-cloud-")
    assert {"Key": "mngr:managed", "Value": "key-pair"} in pair["Tags"]
    assert [g["GroupId"] for g in web["SecurityGroups"]] == [group["GroupId"]]
    [rule] = group["IpPermissions"]
    assert (rule["IpProtocol"], rule["FromPort"], rule["ToPort"]) == ("tcp", 22, 22)
    assert [r["CidrIp"] for r in rule["IpRanges"]] == ["0.0.0.0/0"]
    volumes = ec2(moto, "describe-volumes")["Volumes"]
    assert len(volumes) == 1 and volumes[0]["Encrypted"] is True
    assert volumes[0]["Attachments"][0]["InstanceId"] == web["InstanceId"]
    tags = {t["Key"]: t["Value"] for t in volumes[0]["Tags"]}
    assert tags["mngr:provider"] == "cloud" and tags["Name"] == "web"

    key = ManagedKey("cloud")
    assert stat.S_IMODE(key.private.stat().st_mode) == 0o600
    private_text = key.private.read_text()
    settings_text = (Path(os.environ["XDG_CONFIG_HOME"]) / "mngr" / "settings.toml").read_text()
    assert "PRIVATE KEY" not in settings_text and private_text not in made.stderr
    pinned = known_hosts_file("cloud", made_id := json_id(made.stdout))
    assert sshd.host_key.with_suffix(".pub").read_text().split()[1] in pinned.read_text()

    ran = run_mngr("host", "exec", "web", "-p", "cloud", "--", "sh", "-c", "echo hi from $0", "web")
    assert (ran.returncode, ran.stdout) == (0, "hi from web\n"), ran.stderr

    again = mngr("host", "create", "db", "-p", "cloud")  # reuses the pair and the group
    assert again.exit_code == 0, again.stderr
    db = live(moto)["db"]
    assert len(key_pairs(moto)) == 1 and len(mngr_groups(moto)) == 1
    assert db["KeyName"] == pair["KeyName"]
    assert [g["GroupId"] for g in db["SecurityGroups"]] == [group["GroupId"]]

    backend = backend_of(only_region(moto))
    assert backend.managed_orphans() == []  # hosts are left: gc keeps them

    sshd.new_host_key()  # the machine at that address is not the one pinned any more
    marker = tmp_path / "ran"
    refused = run_mngr("host", "exec", "web", "-p", "cloud", "--", "touch", str(marker))
    assert refused.returncode == 255
    assert "IDENTIFICATION HAS CHANGED" in refused.stderr or "verification failed" in refused.stderr
    assert not marker.exists()

    gone = mngr("host", "destroy", "web", "db", "-p", "cloud", "--yes")
    assert gone.exit_code == 0, gone.stderr
    assert live(moto) == {}
    assert ec2(moto, "describe-volumes")["Volumes"] == []
    assert not pinned.exists() and not known_hosts_file("cloud", made_id).exists()

    orphans = backend.managed_orphans()  # no host left: the pair and the group may go
    assert sorted(o.kind for o in orphans) == ["key pair", "security group"]
    # gc finds them too, and keeps them while a create could still be using them
    found = mngr("gc", "-p", "cloud", "--dry-run", "--snapshots", "-f", "json").json()
    shared = {o["kind"]: o for o in found["orphans"] if o["kind"] in ("key-pair", "security-group")}
    assert set(shared) == {"key-pair", "security-group"}
    assert all("younger than a create" in o["kept_because"] for o in shared.values())
    for orphan in backend.find_orphans():
        if orphan.kind in shared:
            execute(backend.orphan_delete_plan(orphan), backend)
    assert key_pairs(moto) == [] and mngr_groups(moto) == []
    assert key.private.exists()  # the user's key file stays: the next create imports it again


def json_id(stdout: str) -> str:
    [host] = json.loads(stdout)["hosts"]
    return host["id"]


def test_two_first_creates_at_once_make_one_key_pair_and_one_group(moto) -> None:
    """Two backends (as two mngr processes would be) create their first hosts together; the
    Graviton type gets the arm64 image."""
    settings = only_region(moto, wait_for_ssh=False)
    backends = [backend_of(settings), backend_of(settings)]
    jobs = []
    for backend, name, kind in zip(backends, "ab", ("t3.micro", "t4g.micro"), strict=True):
        options = AwsCreateOptions(instance_type=kind)
        request = CreateRequest(name, new_host_id(), utc_now(), options=options)
        jobs.append((backend, backend.create_plan(request)))
    outcomes = fan_out(lambda job: execute(job[1], job[0]), jobs, jobs=2)
    assert [o.error for o in outcomes] == [None, None]
    assert len(key_pairs(moto)) == 1 and len(mngr_groups(moto)) == 1
    hosts = live(moto)
    assert hosts["a"]["KeyName"] == hosts["b"]["KeyName"]
    assert hosts["a"]["SecurityGroups"] == hosts["b"]["SecurityGroups"]
    assert hosts["a"]["ImageId"] == ssm_image(moto, "x86_64")
    assert hosts["b"]["ImageId"] == ssm_image(moto, "arm64")


def test_ssh_cidrs_set_the_groups_ssh_rule_and_a_change_replaces_it(moto) -> None:
    first = backend_of(only_region(moto, ssh_cidrs=["203.0.113.0/24", "2001:db8::/32"]))
    group_id = first.setup.ensure_security_group(None)
    [group] = mngr_groups(moto)
    [rule] = group["IpPermissions"]
    assert [r["CidrIp"] for r in rule["IpRanges"]] == ["203.0.113.0/24"]
    assert [r["CidrIpv6"] for r in rule["Ipv6Ranges"]] == ["2001:db8::/32"]

    narrower = backend_of(only_region(moto, ssh_cidrs=["198.51.100.7/32"]))
    assert narrower.setup.ensure_security_group(None) == group_id  # the same group, found
    [group] = mngr_groups(moto)
    cidrs = [r["CidrIp"] for p in group["IpPermissions"] for r in p["IpRanges"]]
    assert cidrs == ["198.51.100.7/32"]
