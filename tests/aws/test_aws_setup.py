"""The set-up a new aws host needs (backends/aws_setup.py): image aliases and architectures,
ssh to the right key, user and pinned host key, and the "duplicate" answers of two set-ups at
once, with the aws CLI faked (`fp`) where the local endpoint cannot produce them."""

from __future__ import annotations

import json
import os

import pytest
from mngr_backends.aws import AwsConfig, AwsSpec
from mngr_backends.aws_setup import (
    TEST_SSH_ENDPOINT,
    ManagedKey,
    architecture,
    image_choice,
    known_hosts_file,
)
from pydantic import ValidationError

from mngr.errors import ConfigError, MngrError, VendorTimeoutError
from mngr.records import Host, HostState

pytestmark = pytest.mark.aws


def duplicate(code: str, operation: str) -> dict:
    """The aws CLI's answer to a second make of one thing (as moto and AWS print it)."""
    stderr = f"\nAn error occurred ({code}) when calling the {operation} operation: exists\n"
    return {"stderr": stderr, "returncode": 255}


@pytest.mark.parametrize(
    ("instance_type", "arch"),
    [
        ("t3.micro", "x86_64"),
        ("c6i.large", "x86_64"),
        ("g5.xlarge", "x86_64"),
        ("g4dn.xlarge", "x86_64"),
        ("p5.48xlarge", "x86_64"),
        ("t4g.small", "arm64"),
        ("c7gn.large", "arm64"),
        ("m6gd.large", "arm64"),
        ("g5g.xlarge", "arm64"),
        ("im4gn.large", "arm64"),
        ("a1.medium", "arm64"),
    ],
)
def test_the_architecture_follows_the_instance_type(instance_type: str, arch: str) -> None:
    assert architecture(instance_type) == arch


def test_aliases_name_ssm_parameters_and_ssh_users_and_an_ami_id_is_no_alias() -> None:
    al = image_choice("al2023", "t4g.micro")
    assert al.parameter == "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64"
    assert al.ssh_user == "ec2-user"
    ubuntu = image_choice("ubuntu-24.04", "t3.micro")
    assert ubuntu.parameter == (
        "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id"
    )
    assert ubuntu.ssh_user == "ubuntu"
    debian = image_choice("debian-12", "t3.micro")
    assert (debian.parameter, debian.ssh_user) == (
        "/aws/service/debian/release/12/latest/amd64",
        "admin",
    )
    assert image_choice("ami-0123456789abcdef0", "t3.micro") is None


def test_ssh_cidrs_must_be_networks() -> None:
    with pytest.raises(ValidationError, match="not a network"):
        AwsConfig(name="p", backend="aws", region="us-east-1", ssh_cidrs=["everywhere"])
    with pytest.raises(ValidationError):
        AwsConfig(name="p", backend="aws", region="us-east-1", ssh_cidrs=[])


def test_provider_show_says_ssh_is_open_to_the_world_by_default(mngr, aws_settings) -> None:
    aws_settings(
        cloud={"region": "us-east-1"}, own={"region": "us-east-1", "security_group_ids": ["sg-1"]}
    )
    shown = json.loads(mngr("provider", "show", "cloud", "-f", "json").stdout)["provider"]
    assert shown["status"] == "configured with ssh open to 0.0.0.0/0 (key-only login)"
    assert shown["settings"]["ssh_cidrs"] == ["0.0.0.0/0"]
    own = json.loads(mngr("provider", "show", "own", "-f", "json").stdout)["provider"]
    assert own["status"] == "configured"


# --- ssh to a host --------------------------------------------------------------------------


def host(**address) -> Host:
    fields = {"public_ip": "54.1.2.3", **address}
    return Host(
        id="host-" + "a" * 32,
        name="web",
        provider="cloud",
        backend="aws",
        state=HostState.RUNNING,
        address=fields,
    )


def spec(**settings) -> AwsSpec:
    return AwsSpec(AwsConfig(name="cloud", backend="aws", region="us-east-1", **settings))


def option(argv: list[str], name: str) -> str:
    [value] = [a.split("=", 1)[1] for a in argv if a.startswith(name + "=")]
    return value


def test_ssh_uses_mngrs_key_for_a_host_launched_with_it_and_the_users_otherwise() -> None:
    ours = ManagedKey("cloud")
    argv = spec(identity_file="/keys/mine").ssh_argv(
        host(key_name="mngr-cloud-0123456789ab"), None, tty=False
    )
    assert argv[argv.index("-i") + 1] == str(ours.private)
    argv = spec(identity_file="/keys/mine").ssh_argv(host(key_name="mine"), None, tty=False)
    assert argv[argv.index("-i") + 1] == "/keys/mine"
    # another provider's key ("cloud-b" after "cloud-") is not this provider's
    argv = spec().ssh_argv(host(key_name="mngr-cloud-b-0123456789ab"), None, tty=False)
    assert "-i" not in argv


def test_ssh_checks_the_host_key_pinned_at_create_and_the_family_user() -> None:
    target = host(ssh_user="ubuntu")
    pinned = known_hosts_file("cloud", target.id)
    argv = spec().ssh_argv(target, None, tty=False)
    assert option(argv, "UserKnownHostsFile") == os.path.expanduser("~/.ssh/known_hosts")
    pinned.parent.mkdir(parents=True)
    pinned.write_text("54.1.2.3 ssh-ed25519 AAAA\n")
    argv = spec().ssh_argv(target, None, tty=False)
    assert option(argv, "UserKnownHostsFile") == str(pinned)
    assert option(argv, "StrictHostKeyChecking") == "yes"
    assert argv[-5:] == ["-l", "ubuntu", "-T", "--", "54.1.2.3"]
    pinning = spec().ssh_argv(target, ["true"], tty=False, pin_into="/tmp/k")
    assert option(pinning, "StrictHostKeyChecking") == "accept-new"
    assert option(pinning, "UserKnownHostsFile") == "/tmp/k"
    assert spec(ssh_user="me").ssh_argv(target, None, tty=False)[-4] == "me"  # ssh_user wins


def test_the_test_ssh_endpoint_goes_to_loopback_only(monkeypatch) -> None:
    monkeypatch.setenv(TEST_SSH_ENDPOINT, "127.0.0.2:2222")
    argv = spec().ssh_argv(host(), None, tty=False)
    assert argv[-1] == "127.0.0.2" and argv[argv.index("-p") + 1] == "2222"
    monkeypatch.setenv(TEST_SSH_ENDPOINT, "203.0.113.9:22")
    with pytest.raises(ConfigError, match="loopback"):
        spec().ssh_argv(host(), None, tty=False)


# --- two set-ups at once (another machine's mngr won the race) ------------------------------


def ec2(verb: str, fp) -> list:
    return ["aws", "ec2", verb, fp.any()]


def test_a_key_pair_imported_meantime_is_used(fp, aws_backend) -> None:
    key = ManagedKey("cloud")
    key.private.parent.mkdir(parents=True)
    key.public.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB0 mngr:cloud\n")
    key.private.write_text("not read by mngr\n")
    fp.register(ec2("describe-key-pairs", fp), stdout='{"KeyPairs": []}')
    imported = fp.register(
        ec2("import-key-pair", fp), **duplicate("InvalidKeyPair.Duplicate", "ImportKeyPair")
    )
    name = aws_backend().setup.ensure_key_pair()
    assert name == key.name() and name.startswith("mngr-cloud-")
    args = imported.first_call.args
    assert args[args.index("--public-key-material") + 1] == f"fileb://{key.public}"
    assert "not read by mngr" not in " ".join(args)


def test_a_group_made_meantime_is_found_and_its_rule_kept(fp, aws_backend) -> None:
    vpcs = {"Vpcs": [{"VpcId": "vpc-1", "IsDefault": True}]}
    rule = {
        "IpProtocol": "tcp",
        "FromPort": 22,
        "ToPort": 22,
        "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
    }
    group = {
        "GroupId": "sg-9",
        "GroupName": "mngr-cloud",
        "VpcId": "vpc-1",
        "IpPermissions": [rule],
    }
    fp.register(ec2("describe-vpcs", fp), stdout=json.dumps(vpcs))
    fp.register(ec2("describe-security-groups", fp), stdout='{"SecurityGroups": []}')
    fp.register(
        ec2("create-security-group", fp),
        **duplicate("InvalidGroup.Duplicate", "CreateSecurityGroup"),
    )
    fp.register(ec2("describe-security-groups", fp), stdout=json.dumps({"SecurityGroups": [group]}))
    assert aws_backend().setup.ensure_security_group(None) == "sg-9"
    assert fp.call_count(ec2("authorize-security-group-ingress", fp)) == 0


def test_a_region_without_a_default_vpc_asks_for_a_subnet(fp, aws_backend) -> None:
    fp.register(ec2("describe-vpcs", fp), stdout='{"Vpcs": []}')
    with pytest.raises(ConfigError, match="no default VPC: set 'subnet_id'"):
        aws_backend().setup.ensure_security_group(None)


# --- ready means reachable ------------------------------------------------------------------


def test_a_changed_host_key_while_waiting_for_ssh_is_refused_at_once(fp, aws_backend) -> None:
    changed = (
        "@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\nHost key verification failed.\n"
    )
    fp.register(
        ["ssh", fp.any()],
        stderr="ssh: connect to host 54.1.2.3 port 22: Connection refused\n",
        returncode=255,
    )
    fp.register(["ssh", fp.any()], stderr=changed, returncode=255)
    backend = aws_backend()
    pinned = known_hosts_file("cloud", host().id)
    with pytest.raises(MngrError, match="other than the one pinned"):
        backend.setup.await_ssh(host(), pinned)
    assert len(fp.calls) == 2


def test_waiting_for_ssh_is_bounded_by_wait_timeout_and_says_what_ssh_said(fp, aws_backend) -> None:
    refused = "ssh: connect to host 54.1.2.3 port 22: Connection refused\n"
    fp.register(["ssh", fp.any()], stderr=refused, returncode=255, occurrences=1000)
    backend = aws_backend(wait_timeout_s=0.3)
    backend.poll_delays_s = (0.05,)
    with pytest.raises(VendorTimeoutError, match="wait_timeout_s.*Connection refused"):
        backend.setup.await_ssh(host(), known_hosts_file("cloud", host().id))
