"""AwsSpec and the aws config: request -> argv equality, pure (no process runs)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from mngr_backends.aws import AwsConfig, AwsCreateOptions, AwsSpec, Launch
from pydantic import ValidationError

from mngr.backend import CreateRequest
from mngr.errors import MngrError, UsageError
from mngr.plan import Ref
from mngr.records import Host, HostState, Snapshot
from tests.conftest import require

pytestmark = pytest.mark.aws

HOST_ID = "host-" + "a" * 32
GLOBAL = ["--region", "eu-west-1", "--output", "json"]


def spec(**settings) -> AwsSpec:
    return AwsSpec(AwsConfig(name="prod", backend="aws", region="eu-west-1", **settings))


def launch(**changes) -> Launch:
    fields = {
        "host_id": HOST_ID,
        "name": "web-1",
        "created_at": "2026-01-02T03:04:05Z",
        "image": "ami-123",
        "instance_type": "t3.small",
        "tags": {"team": "a b,c=d"},
        **changes,
    }
    return Launch(**fields)


def test_every_call_carries_region_profile_endpoint_and_json_output() -> None:
    argv = spec(profile="production", endpoint_url="http://127.0.0.1:5000").argv("x")
    assert argv == [
        "aws",
        "ec2",
        "x",
        "--region",
        "eu-west-1",
        "--profile",
        "production",
        "--endpoint-url",
        "http://127.0.0.1:5000",
        "--output",
        "json",
    ]


def test_profile_and_endpoint_are_left_out_when_not_set() -> None:
    assert spec(binary="/opt/aws").argv("x") == ["/opt/aws", "ec2", "x", *GLOBAL]


def test_list_filters_by_provider_tag_and_live_states() -> None:
    assert spec().list_argv() == [
        "aws",
        "ec2",
        "describe-instances",
        "--filters",
        '[{"Name":"tag:mngr:provider","Values":["prod"]},'
        '{"Name":"instance-state-name","Values":["pending","running","stopping","stopped"]}]',
        *GLOBAL,
    ]


def test_list_pages_with_page_size_and_resumes_from_a_token() -> None:
    argv = spec(page_size=50).list_argv("tok")
    assert argv[5:9] == ["--page-size", "50", "--starting-token", "tok"]


def test_run_instances_tags_what_it_makes_requires_imdsv2_and_uses_the_host_id_as_token() -> None:
    argv = spec().run_argv(launch())
    tags = [
        {"Key": "mngr:host-id", "Value": HOST_ID},
        {"Key": "mngr:host-name", "Value": "web-1"},
        {"Key": "mngr:provider", "Value": "prod"},
        {"Key": "mngr:created-at", "Value": "2026-01-02T03:04:05Z"},
        {"Key": "Name", "Value": "web-1"},
        {"Key": "mngr:tag:team", "Value": "a b,c=d"},
    ]
    assert argv[:13] == [
        "aws",
        "ec2",
        "run-instances",
        "--image-id",
        "ami-123",
        "--instance-type",
        "t3.small",
        "--count",
        "1",
        "--client-token",
        HOST_ID,
        "--tag-specifications",
        argv[12],
    ]
    assert json.loads(argv[12]) == [
        {"ResourceType": "instance", "Tags": tags},
        {"ResourceType": "volume", "Tags": tags},
        {"ResourceType": "network-interface", "Tags": tags},
    ]
    assert argv[13:15] == [
        "--metadata-options",
        '{"HttpTokens":"required","HttpEndpoint":"enabled"}',
    ]
    assert argv[15:] == GLOBAL


def test_an_image_alias_records_its_ssh_user_on_the_instance() -> None:
    argv = spec().run_argv(launch(ssh_user="ubuntu"))
    tags = json.loads(argv[12])[0]["Tags"]
    assert {"Key": "mngr:ssh-user", "Value": "ubuntu"} in tags


def test_run_instances_optional_flags() -> None:
    s = spec(iam_instance_profile="arn:aws:iam::1:instance-profile/x")
    argv = s.run_argv(
        launch(
            key_name="me",
            subnet_id="subnet-9",
            spot=True,
            block_device_mappings="[]",
            security_group_ids=("sg-1", "sg-2"),
        )
    )
    assert argv[13:] == [
        "--key-name",
        "me",
        "--subnet-id",
        "subnet-9",
        "--iam-instance-profile",
        '{"Arn":"arn:aws:iam::1:instance-profile/x"}',
        "--block-device-mappings",
        "[]",
        "--instance-market-options",
        '{"MarketType":"spot"}',
        "--metadata-options",
        '{"HttpTokens":"required","HttpEndpoint":"enabled"}',
        "--security-group-ids",
        "sg-1",
        "sg-2",
        *GLOBAL,
    ]
    assert "--iam-instance-profile" in spec(iam_instance_profile="role").run_argv(launch())
    assert '{"Name":"role"}' in spec(iam_instance_profile="role").run_argv(launch())


def test_instance_verbs() -> None:
    s = spec()
    for verb, build in [
        ("terminate-instances", s.terminate_argv),
        ("stop-instances", s.stop_argv),
        ("start-instances", s.start_argv),
        ("describe-instances", s.instance_argv),
    ]:
        assert build("i-1") == ["aws", "ec2", verb, "--instance-ids", "i-1", *GLOBAL]


def test_check_is_one_describe_regions_call() -> None:
    assert spec().check_argv() == [
        "aws",
        "ec2",
        "describe-regions",
        "--region-names",
        "eu-west-1",
        *GLOBAL,
    ]


def test_snapshot_argv() -> None:
    s = spec()
    host = Host(id=HOST_ID, name="web-1", provider="prod", backend="aws", handle="i-1")
    argv = s.create_image_argv(host, "base", "2026-01-02T03:04:05Z", "snap-1")
    assert argv[:10] == [
        "aws",
        "ec2",
        "create-image",
        "--instance-id",
        "i-1",
        "--name",
        "mngr/prod/base",
        "--description",
        "mngr snapshot base of host web-1",
        "--tag-specifications",
    ]
    [image_tags] = json.loads(argv[10])
    assert image_tags["ResourceType"] == "image"
    assert {t["Key"]: t["Value"] for t in image_tags["Tags"]} == {
        "mngr:provider": "prod",
        "mngr:host-id": HOST_ID,
        "mngr:host-name": "web-1",
        "mngr:snapshot-name": "base",
        "mngr:created-at": "2026-01-02T03:04:05Z",
        "mngr:create-token": "snap-1",
        "Name": "base",
    }
    assert s.list_images_argv(HOST_ID) == [
        "aws",
        "ec2",
        "describe-images",
        "--owners",
        "self",
        "--filters",
        '[{"Name":"tag:mngr:provider","Values":["prod"]},'
        f'{{"Name":"tag:mngr:host-id","Values":["{HOST_ID}"]}}]',
        *GLOBAL,
    ]
    assert s.deregister_argv("ami-1") == [
        "aws",
        "ec2",
        "deregister-image",
        "--image-id",
        "ami-1",
        *GLOBAL,
    ]
    assert s.delete_snapshot_argv("snap-1") == [
        "aws",
        "ec2",
        "delete-snapshot",
        "--snapshot-id",
        "snap-1",
        *GLOBAL,
    ]


# --- ssh ----------------------------------------------------------------------------------

RUNNING = Host(
    id=HOST_ID,
    name="web-1",
    provider="prod",
    backend="aws",
    state=HostState.RUNNING,
    address={"public_ip": "54.1.2.3", "private_ip": "10.0.0.5"},
)


def known_hosts_of(argv: list[str]) -> str:
    [option] = [a for a in argv if a.startswith("UserKnownHostsFile=")]
    return option.split("=", 1)[1]


def test_ssh_checks_host_keys_strictly_in_batch_mode_against_the_users_known_hosts() -> None:
    argv = spec().ssh_argv(RUNNING, ["echo", "a b", "$HOME;x"], tty=False)
    assert argv[0] == "ssh"
    assert "BatchMode=yes" in argv and "StrictHostKeyChecking=yes" in argv
    assert "ConnectTimeout=30" in argv
    assert known_hosts_of(argv) == os.path.expanduser("~/.ssh/known_hosts")
    assert argv[-6:] == ["-l", "ec2-user", "-T", "--", "54.1.2.3", "echo 'a b' '$HOME;x'"]


def test_ssh_accepts_new_host_keys_only_when_configured_and_uses_key_and_known_hosts() -> None:
    s = spec(
        accept_new_host_keys=True,
        identity_file="/keys/k",
        ssh_user="ubuntu",
        known_hosts="/etc/mngr/known_hosts",
    )
    argv = s.ssh_argv(RUNNING, None, tty=True)
    assert "StrictHostKeyChecking=accept-new" in argv
    assert known_hosts_of(argv) == "/etc/mngr/known_hosts"
    assert argv[argv.index("-i") : argv.index("-i") + 4] == [
        "-i",
        "/keys/k",
        "-o",
        "IdentitiesOnly=yes",
    ]
    assert argv[-5:] == ["-l", "ubuntu", "-t", "--", "54.1.2.3"]


def test_known_hosts_must_be_a_path_ssh_reads_as_one_file() -> None:
    with pytest.raises(ValidationError, match="known_hosts"):
        spec(known_hosts="/a b")


@pytest.mark.parametrize("accept_new", [False, True])
def test_the_real_ssh_client_reads_the_argv_as_meant(tmp_path, accept_new: bool) -> None:
    """`ssh -G` resolves the options without connecting: what ssh itself will use."""
    if shutil.which("ssh") is None:
        require(False, "the ssh client is not installed")
    known = tmp_path / "known_hosts"
    s = spec(known_hosts=str(known), accept_new_host_keys=accept_new, ssh_user="ubuntu")
    argv = s.ssh_argv(
        RUNNING.model_copy(update={"address": {"public_ip": "127.0.0.1"}}), None, tty=False
    )
    done = subprocess.run(
        [argv[0], "-G", *argv[1:]], capture_output=True, text=True, timeout=10, check=True
    )
    resolved = dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)
    assert resolved["batchmode"] == "yes"
    assert resolved["stricthostkeychecking"] == ("accept-new" if accept_new else "true")
    assert resolved["userknownhostsfile"] == str(known)
    assert (resolved["hostname"], resolved["user"], resolved["port"]) == (
        "127.0.0.1",
        "ubuntu",
        "22",
    )


def test_ssh_detached_runs_in_the_background_and_private_ip_is_the_fallback() -> None:
    host = RUNNING.model_copy(update={"address": {"private_ip": "10.0.0.5"}})
    argv = spec().ssh_argv(host, ["sleep", "60"], tty=False, detach=True)
    assert argv[-3:] == ["--", "10.0.0.5", "nohup sleep 60 >/dev/null 2>&1 </dev/null &"]


def test_ssh_without_an_address_is_a_clear_error() -> None:
    with pytest.raises(MngrError, match="no IP address"):
        spec().ssh_argv(RUNNING.model_copy(update={"address": {}}), None, tty=True)


def test_an_address_from_the_endpoint_that_is_not_an_ip_never_reaches_ssh() -> None:
    evil = RUNNING.model_copy(update={"address": {"public_ip": "-oProxyCommand=touch /tmp/x"}})
    with pytest.raises(MngrError, match="no valid IP address"):
        spec().ssh_argv(evil, ["true"], tty=False)


# --- config -------------------------------------------------------------------------------


def test_region_is_required_and_checked() -> None:
    with pytest.raises(ValidationError, match="region"):
        AwsConfig(name="p", backend="aws")
    with pytest.raises(ValidationError, match="region"):
        AwsConfig(name="p", backend="aws", region="us east 1")


def test_endpoint_must_be_http_and_unknown_keys_are_refused() -> None:
    with pytest.raises(ValidationError, match="http"):
        AwsConfig(name="p", backend="aws", region="x", endpoint_url="ftp://x")
    with pytest.raises(ValidationError, match="extra"):
        AwsConfig(name="p", backend="aws", region="x", regoin="y")


def test_defaults_keep_host_keys_checked() -> None:
    config = AwsConfig(name="p", backend="aws", region="us-east-1")
    assert config.accept_new_host_keys is False
    assert config.binary == "aws"
    assert config.instance_type == "t3.micro"


# --- create plans (rendered as --dry-run prints them) -------------------------------------


USERS_OWN = {"key_name": "k", "security_group_ids": ["sg-1"]}


def request(**changes) -> CreateRequest:
    fields = {"name": "web-1", "host_id": HOST_ID, "created_at": "2026-01-02T03:04:05Z"}
    return CreateRequest(**{**fields, **changes})


def test_create_plan_sets_up_the_provider_launches_and_waits_for_ssh(aws_backend) -> None:
    backend = aws_backend(ami="ami-default")
    lines = backend.create_plan(request()).render()
    assert len(lines) == 7
    assert lines[0].startswith("aws ec2 describe-images --image-ids ami-default ")
    assert lines[1].startswith("aws ec2 describe-instances --filters ")
    assert "tag:mngr:host-name" in lines[1]
    assert lines[2].startswith("# use key pair mngr-cloud-<digest> of ")
    assert "aws ec2 import-key-pair --key-name '<name>' --public-key-material fileb://" in lines[2]
    assert lines[3].startswith("# use security group mngr-cloud in the default VPC")
    assert "ssh (tcp/22) open to 0.0.0.0/0" in lines[3]
    assert lines[4].startswith("aws ec2 run-instances --image-id ami-default ")
    assert "--key-name '<key_name>'" in lines[4]
    assert "--security-group-ids '<security_group_id>'" in lines[4]
    assert "--block-device-mappings '<block_device_mappings>'" in lines[4]
    assert lines[5].startswith("# wait until web-1 is running")
    assert lines[6].startswith("# wait until web-1 accepts ssh (at most 600s)")


def test_the_users_key_pair_and_groups_replace_mngrs(aws_backend) -> None:
    backend = aws_backend(ami="ami-1", key_name="mine", security_group_ids=["sg-1", "sg-2"])
    lines = backend.create_plan(request()).render()
    assert not any("key pair" in line or "security group" in line for line in lines)
    assert "--key-name mine" in lines[2] and "--security-group-ids sg-1 sg-2" in lines[2]


def test_disk_reads_the_root_device_of_the_image_first(aws_backend) -> None:
    from mngr import resources

    backend = aws_backend(ami="ami-default", **USERS_OWN)
    options = AwsCreateOptions(ami="ami-9", instance_type="c7g.large")
    plan = backend.create_plan(request(options=options, resources=resources.parse(disk="40g")))
    lines = plan.render()
    assert lines[0] == "aws ec2 describe-images --image-ids ami-9 --region us-east-1 --output json"
    assert "--instance-type c7g.large" in lines[2]
    assert "--block-device-mappings '<block_device_mappings>'" in lines[2]
    assert Ref("block_device_mappings") in plan.steps[2].command.argv


def test_image_comes_from_snapshot_then_ami_then_image_then_settings(aws_backend) -> None:
    backend = aws_backend(ami="ami-default", **USERS_OWN)
    snap = Snapshot(id="ami-snap", name="s", host="h", provider="cloud", handle="ami-snap")

    def image_of(**changes) -> str:
        return backend.create_plan(request(**changes)).steps[2].command.argv[4]

    assert image_of(from_snapshot=snap) == "ami-snap"
    assert image_of(options=AwsCreateOptions(ami="ami-flag")) == "ami-flag"
    assert image_of(image="ami-image") == "ami-image"
    assert image_of() == "ami-default"


def test_conflicting_image_choices_are_refused(aws_backend) -> None:
    backend = aws_backend()
    snap = Snapshot(id="ami-snap", name="s", host="h", provider="cloud")
    with pytest.raises(UsageError, match="--from-snapshot"):
        backend.create_plan(request(from_snapshot=snap, image="ami-x"))
    with pytest.raises(UsageError, match="different images"):
        backend.create_plan(request(image="ami-x", options=AwsCreateOptions(ami="ami-y")))
