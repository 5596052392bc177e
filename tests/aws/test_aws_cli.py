"""The CLI over aws providers, with the aws CLI faked (`fp`): exit codes, JSON, messages."""

from __future__ import annotations

import json

import pytest
from mngr_backends.aws import AwsConfig, AwsSpec

from tests.aws.ec2_fakes import HOST_ID, STDERR, fixture, instance, listing

pytestmark = pytest.mark.aws

GOOD = {"region": "us-east-1", "ami": "ami-1"}
BAD = {"region": "eu-west-1", "ami": "ami-1"}


def spec(name: str, settings: dict) -> AwsSpec:
    return AwsSpec(AwsConfig(name=name, backend="aws", **settings))


def test_create_help_shows_the_aws_flags(mngr) -> None:
    result = mngr("host", "create", "--help")
    assert result.exit_code == 0
    for flag in ("--instance-type", "--ami", "--disk", "--spot", "--key-name", "--subnet"):
        assert flag in result.stdout


def test_dry_run_prints_the_aws_commands_and_runs_none(fp, mngr, aws_settings) -> None:
    aws_settings(cloud=GOOD)
    result = mngr("host", "create", "web-1", "-p", "cloud", "--disk", "30g", "--dry-run")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("aws ec2 describe-images --image-ids ami-1 ")
    assert lines[1].startswith("aws ec2 describe-instances --filters ")
    assert lines[2].startswith("# use key pair mngr-cloud-")
    assert lines[3].startswith("# use security group mngr-cloud in the default VPC")
    assert lines[4].startswith("aws ec2 run-instances --image-id ami-1 --instance-type t3.micro")
    assert lines[5].startswith("# wait until web-1 is running")
    assert lines[6].startswith("# wait until web-1 accepts ssh")
    assert len(fp.calls) == 0


def test_dry_run_of_an_image_alias_shows_the_ssm_call_and_the_ami(fp, mngr, aws_settings) -> None:
    aws_settings(cloud={"region": "us-east-1"})
    parameter = "/aws/service/canonical/ubuntu/server/24.04/stable/current/arm64/hvm/ebs-gp3/ami-id"
    answer = {"Parameters": [{"Name": parameter, "Value": "ami-0123456789abcdef0"}]}
    ssm = fp.register(["aws", "ssm", "get-parameters", fp.any()], stdout=json.dumps(answer))
    result = mngr(
        "host", "create", "web-1", "-p", "cloud", "--image", "ubuntu-24.04",
        "--instance-type", "t4g.small", "--dry-run",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "# image ubuntu-24.04 for arm64 is ami-0123456789abcdef0, as `aws ssm get-parameters "
        f"--names {parameter} --region us-east-1 --output json` said"
    )
    assert "aws ec2 run-instances --image-id ami-0123456789abcdef0 --instance-type t4g.small" in (
        result.stdout
    )
    assert '{"Key":"mngr:ssh-user","Value":"ubuntu"}' in result.stdout
    assert len(fp.calls) == 1 and ssm.call_count() == 1  # the resolution, and nothing else


def test_an_alias_aws_does_not_publish_is_not_found(fp, mngr, aws_settings) -> None:
    aws_settings(cloud={"region": "us-east-1", "ami": "debian-12"})
    answer = {
        "Parameters": [],
        "InvalidParameters": ["/aws/service/debian/release/12/latest/amd64"],
    }
    fp.register(["aws", "ssm", "get-parameters", fp.any()], stdout=json.dumps(answer))
    result = mngr("host", "create", "web-1", "-p", "cloud", "--dry-run")
    assert result.exit_code == 3
    assert "AWS publishes no debian-12 image for x86_64 in region 'us-east-1'" in result.stderr


def test_a_bad_flag_value_is_a_usage_error(mngr, aws_settings) -> None:
    aws_settings(cloud=GOOD)
    result = mngr("host", "create", "web-1", "-p", "cloud", "--disk", "30", "--dry-run")
    assert result.exit_code == 2
    assert "--disk 30: give a unit" in result.stderr


def test_missing_region_names_the_file_and_exits_2(mngr, aws_settings) -> None:
    path = aws_settings(cloud={"ami": "ami-1"})
    result = mngr("host", "list", "-p", "cloud")
    assert result.exit_code == 2
    assert str(path) in result.stderr and "region" in result.stderr


def test_an_unreachable_provider_is_an_error_row_and_the_others_are_listed(
    fp, mngr, aws_settings
) -> None:
    aws_settings(good=GOOD, bad=BAD)
    good = instance("web-1", "running", "i-1", provider="good")
    fp.register(spec("good", GOOD).list_argv(), stdout=listing(good))
    fp.register(
        spec("bad", BAD).list_argv(),
        stderr=STDERR["endpoint-unreachable"]["stderr"],
        returncode=255,
    )
    assert mngr("host", "create", "here").exit_code == 0  # on the local provider
    result = mngr("host", "list", "-p", "local", "-p", "good", "-p", "bad", "--format", "json")
    assert result.exit_code == 6
    doc = json.loads(result.stdout)
    assert sorted((h["name"], h["provider"]) for h in doc["hosts"]) == [
        ("here", "local"),
        ("web-1", "good"),
    ]
    [error] = doc["errors"]
    assert error["provider"] == "bad" and error["kind"] == "unreachable"
    assert "Could not connect to the endpoint URL" in error["message"]


def test_an_aws_host_in_json_has_the_record_fields(fp, mngr, aws_settings) -> None:
    aws_settings(cloud=GOOD)
    fp.register(
        spec("cloud", GOOD).list_argv(), stdout=listing(instance("web-1", "stopped", "i-1"))
    )
    doc = json.loads(mngr("host", "list", "-p", "cloud", "--format", "json").stdout)
    [host] = doc["hosts"]
    assert host["id"] == HOST_ID
    assert (host["name"], host["provider"], host["backend"], host["state"]) == (
        "web-1",
        "cloud",
        "aws",
        "stopped",
    )
    assert host["image"] == "ami-1"
    assert host["address"]["instance_id"] == "i-1"


def test_unauthorised_create_exits_5(fp, mngr, aws_settings) -> None:
    aws_settings(cloud={**GOOD, "key_name": "k", "security_group_ids": ["sg-1"]})
    images = fixture("describe-images-base.json")
    fp.register(["aws", "ec2", "describe-images", fp.any()], stdout=images)
    fp.register(["aws", "ec2", "describe-instances", fp.any()], stdout=listing(), occurrences=2)
    fp.register(
        ["aws", "ec2", "run-instances", fp.any()],
        stderr=STDERR["unauthorized-operation"]["stderr"],
        returncode=255,
    )
    result = mngr("host", "create", "web-1", "-p", "cloud")
    assert result.exit_code == 5
    assert "error: create web-1.cloud: aws ec2 run-instances failed" in result.stderr
    assert "UnauthorizedOperation" in result.stderr


def test_no_credentials_on_list_is_an_unauthorised_row(fp, mngr, aws_settings) -> None:
    aws_settings(cloud=GOOD)
    fp.register(
        spec("cloud", GOOD).list_argv(),
        stderr=STDERR["no-credentials"]["stderr"],
        returncode=255,
    )
    result = mngr("host", "list", "-p", "cloud", "--format", "json")
    assert result.exit_code == 6
    [error] = json.loads(result.stdout)["errors"]
    assert error["kind"] == "unauthorised"
    assert "Unable to locate credentials" in error["message"]


def test_destroy_of_an_instance_gone_meanwhile_succeeds(fp, mngr, aws_settings) -> None:
    aws_settings(cloud=GOOD)
    fp.register(
        spec("cloud", GOOD).list_argv(), stdout=listing(instance("web-1", "running", "i-1"))
    )
    fp.register(
        spec("cloud", GOOD).terminate_argv("i-1"),
        stderr=STDERR["instance-not-found"]["stderr"],
        returncode=255,
    )
    result = mngr("host", "destroy", "web-1", "-p", "cloud", "--yes")
    assert result.exit_code == 0, result.stderr


def test_exec_passes_the_exit_code_of_the_remote_command(fp, mngr, aws_settings) -> None:
    aws_settings(cloud=GOOD)
    fp.register(
        spec("cloud", GOOD).list_argv(), stdout=listing(instance("web-1", "running", "i-1"))
    )
    ssh = fp.register(["ssh", fp.any()], returncode=7)
    result = mngr("host", "exec", "web-1", "-p", "cloud", "--", "false")
    assert result.exit_code == 7
    assert ssh.first_call.args[-3:] == ["--", "54.0.0.1", "false"]


def test_exec_on_a_stopped_host_says_to_start_it_and_runs_no_ssh(fp, mngr, aws_settings) -> None:
    aws_settings(cloud=GOOD)
    fp.register(
        spec("cloud", GOOD).list_argv(), stdout=listing(instance("web-1", "stopped", "i-1"))
    )
    result = mngr("host", "exec", "web-1", "-p", "cloud", "--", "ls")
    assert result.exit_code == 1
    assert "is stopped" in result.stderr and "mngr host start web-1" in result.stderr
    assert [call[0] for call in fp.calls] == ["aws"]


def test_a_spot_host_lists_that_it_cannot_stop_and_stop_is_refused_before_any_call(
    fp, mngr, aws_settings
) -> None:
    aws_settings(cloud=GOOD)
    spot = {**instance("web-1", "running", "i-1"), "InstanceLifecycle": "spot"}
    fp.register(spec("cloud", GOOD).list_argv(), stdout=listing(spot), occurrences=2)
    [host] = json.loads(mngr("host", "list", "-p", "cloud", "--format", "json").stdout)["hosts"]
    assert "spot instance" in host["unsupported"]["stop/start"]
    result = mngr("host", "stop", "web-1", "-p", "cloud")
    assert result.exit_code == 2
    assert "host 'web-1.cloud' cannot stop/start: it is a one-time spot instance" in result.stderr
    assert not any("stop-instances" in call for call in fp.calls)


def test_dry_run_of_stop_says_a_spot_host_would_be_refused_and_exits_as_the_real_run(
    fp, mngr, aws_settings
) -> None:
    aws_settings(cloud=GOOD)
    spot = {**instance("web-1", "running", "i-1"), "InstanceLifecycle": "spot"}
    plain = instance("web-2", "running", "i-2")
    fp.register(spec("cloud", GOOD).list_argv(), stdout=listing(spot, plain), occurrences=2)
    dry = mngr("host", "stop", "web-2", "web-1", "-p", "cloud", "--dry-run")
    assert dry.exit_code == 2
    assert "stop-instances" in dry.stdout and "i-2" in dry.stdout  # web-2's plan
    assert "would be refused: web-1.cloud: host 'web-1.cloud' cannot stop/start" in dry.stderr
    real = mngr("host", "stop", "web-2", "web-1", "-p", "cloud")
    assert real.exit_code == 2 and "one-time spot instance" in real.stderr
    assert not any("stop-instances" in call for call in fp.calls)  # web-2 was not stopped


def test_provider_check_runs_one_call(fp, mngr, aws_settings) -> None:
    aws_settings(cloud=GOOD)
    regions = {"Regions": [{"RegionName": "us-east-1", "Endpoint": "ec2.us-east-1.amazonaws.com"}]}
    fp.register(spec("cloud", GOOD).check_argv(), stdout=json.dumps(regions))
    result = mngr("provider", "check", "cloud", "--format", "json")
    assert result.exit_code == 0, result.stderr
    [row] = json.loads(result.stdout)["providers"]
    assert row["ok"] is True and row["details"]["region"] == "us-east-1"
    assert len(fp.calls) == 1
