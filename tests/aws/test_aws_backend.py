"""AwsBackend + the real runner with faked processes (`fp`): the argv sent, and each failure
of the aws CLI (exit code + its real stderr) mapped to the right error."""

from __future__ import annotations

import json

import pytest
from mngr_backends.aws import ThrottledError

from mngr.backend import Capability, CreateRequest
from mngr.errors import (
    EXIT_NOT_FOUND,
    EXIT_UNAUTHORISED,
    EXIT_USAGE,
    ConflictError,
    MngrError,
    NotFoundError,
    UnauthorisedError,
    UnreachableError,
    UnsupportedError,
    VendorCommandError,
    VendorMissingError,
    VendorOutputError,
    VendorTimeoutError,
)
from mngr.plan import execute
from mngr.records import Host, HostState, Snapshot
from tests.aws.ec2_fakes import HOST_ID, STDERR, fixture, instance, listing

pytestmark = pytest.mark.aws


def aws(verb: str, fp) -> list:
    return ["aws", "ec2", verb, fp.any()]


def failing(fp, verb: str, case: str, occurrences: int = 1):
    return fp.register(
        aws(verb, fp),
        stderr=STDERR[case]["stderr"],
        returncode=STDERR[case]["returncode"],
        occurrences=occurrences,
    )


HOST = Host(
    id=HOST_ID,
    name="web-1",
    provider="cloud",
    backend="aws",
    state=HostState.RUNNING,
    address={"public_ip": "54.0.0.1", "instance_id": "i-1"},
    handle="i-1",
)


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "error", "exit_code"),
    [
        ("no-credentials", UnauthorisedError, EXIT_UNAUTHORISED),
        ("expired-token", UnauthorisedError, EXIT_UNAUTHORISED),
        ("unauthorized-operation", UnauthorisedError, EXIT_UNAUTHORISED),
        ("auth-failure", UnauthorisedError, EXIT_UNAUTHORISED),
        ("access-denied", UnauthorisedError, EXIT_UNAUTHORISED),
        ("instance-not-found", NotFoundError, EXIT_NOT_FOUND),
        ("endpoint-unreachable", UnreachableError, 1),
        ("bad-region", UnreachableError, 1),
        ("region-format", UnreachableError, 1),
        ("profile-not-found", MngrError, EXIT_USAGE),
    ],
)
def test_cli_failures_become_specific_errors(fp, aws_backend, case, error, exit_code) -> None:
    failing(fp, "describe-instances", case)
    with pytest.raises(error) as raised:
        aws_backend().list_hosts()
    assert raised.value.exit_code == exit_code
    assert "aws ec2 describe-instances" in str(raised.value)


def test_an_unknown_failure_stays_a_vendor_error_with_its_text(fp, aws_backend) -> None:
    fp.register(aws("describe-instances", fp), stderr="\nsomething odd\n", returncode=254)
    with pytest.raises(VendorCommandError, match="something odd") as raised:
        aws_backend().list_hosts()
    assert raised.value.returncode == 254


def test_request_limit_is_retried_with_back_off_then_succeeds(fp, aws_backend) -> None:
    failing(fp, "describe-instances", "request-limit", occurrences=2)
    fp.register(aws("describe-instances", fp), stdout=listing(instance("web-1", "running", "i-1")))
    hosts = aws_backend().list_hosts()
    assert [h.name for h in hosts] == ["web-1"]
    assert fp.call_count(aws("describe-instances", fp)) == 3


def test_request_limit_retries_are_bounded(fp, aws_backend) -> None:
    failing(fp, "describe-instances", "request-limit", occurrences=4)
    with pytest.raises(ThrottledError) as raised:
        aws_backend().list_hosts()
    assert raised.value.kind == "throttled"
    assert fp.call_count(aws("describe-instances", fp)) == 4


def test_missing_binary_is_exit_4(aws_backend) -> None:
    backend = aws_backend(binary="/nonexistent/aws")
    with pytest.raises(VendorMissingError) as raised:
        backend.list_hosts()
    assert raised.value.exit_code == 4


def test_a_hanging_cli_times_out(aws_backend, tmp_path) -> None:
    hanging = tmp_path / "aws"
    hanging.write_text("#!/bin/sh\nexec sleep 30\n")
    hanging.chmod(0o755)
    with pytest.raises(VendorTimeoutError):
        aws_backend(binary=str(hanging), timeout_s=0.3).list_hosts()


def test_garbage_output_is_a_bad_output_error(fp, aws_backend) -> None:
    fp.register(aws("describe-instances", fp), stdout="<html>proxy login</html>")
    with pytest.raises(VendorOutputError, match="describe-instances"):
        aws_backend().list_hosts()


# --- what is sent -------------------------------------------------------------------------


def test_pager_is_off_through_the_environment_and_credentials_stay_out_of_argv(
    fp, aws_backend, monkeypatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret")
    recorder = fp.register(aws("describe-instances", fp), stdout=listing())
    aws_backend(profile="prod").list_hosts()
    call = recorder.first_call
    assert call.kwargs["env"]["AWS_PAGER"] == ""
    assert "very-secret" not in " ".join(call.args)
    assert "--no-cli-pager" not in call.args  # aws CLI v1 refuses it
    assert call.args[-6:] == ["--region", "us-east-1", "--profile", "prod", "--output", "json"]


def test_list_follows_next_token_to_the_end(fp, aws_backend) -> None:
    first = json.loads(listing(instance("a", "running", "i-a", "host-" + "a" * 32)))
    first["NextToken"] = "page-2"
    fp.register(aws("describe-instances", fp), stdout=json.dumps(first))
    second = fp.register(
        aws("describe-instances", fp),
        stdout=listing(instance("b", "stopped", "i-b", "host-" + "c" * 32)),
    )
    hosts = aws_backend().list_hosts()
    assert [(h.name, h.state) for h in hosts] == [
        ("a", HostState.RUNNING),
        ("b", HostState.STOPPED),
    ]
    assert second.first_call.args[-6:-4] == ["--starting-token", "page-2"]


def test_check_is_one_call(fp, aws_backend) -> None:
    recorder = fp.register(aws("describe-regions", fp), stdout=fixture("describe-regions.json"))
    assert aws_backend().check()["region"] == "us-east-1"
    assert recorder.call_count() == 1


# --- create -------------------------------------------------------------------------------


# The provider's own key pair and group, and no wait for ssh: these tests are about the launch.
SET_UP = {"ami": "ami-1", "key_name": "k", "security_group_ids": ["sg-1"], "wait_for_ssh": False}


def image_lookup(fp) -> None:
    """Every create reads the root device of its image first."""
    images = fixture("describe-images-base.json")
    fp.register(["aws", "ec2", "describe-images", "--image-ids", fp.any()], stdout=images)


def create_request(name: str = "web-1", **changes) -> CreateRequest:
    fields = {"name": name, "host_id": HOST_ID, "created_at": "2026-01-02T03:04:05Z"}
    return CreateRequest(**{**fields, **changes})


def launched(instance_id: str = "i-new") -> str:
    return json.dumps({"Instances": [instance("web-1", "pending", instance_id)]})


def test_create_checks_name_launches_and_polls_until_running(fp, aws_backend) -> None:
    fp.register(aws("describe-instances", fp), stdout=listing())
    run = fp.register(aws("run-instances", fp), stdout=launched())
    fp.register(aws("describe-instances", fp), stdout=listing())  # not visible yet
    fp.register(
        aws("describe-instances", fp), stdout=listing(instance("web-1", "pending", "i-new"))
    )
    fp.register(
        aws("describe-instances", fp), stdout=listing(instance("web-1", "running", "i-new"))
    )
    image_lookup(fp)
    backend = aws_backend(**SET_UP)
    host = execute(backend.create_plan(create_request(tags={"team": "x"})), backend)
    assert (host.name, host.state, host.handle) == ("web-1", HostState.RUNNING, "i-new")
    assert run.first_call.args[run.first_call.args.index("--client-token") + 1] == HOST_ID


def test_create_refuses_a_taken_name_before_launching(fp, aws_backend) -> None:
    fp.register(
        aws("describe-instances", fp),
        stdout=listing(instance("web-1", "stopped", "i-old", "host-" + "9" * 32)),
    )
    image_lookup(fp)
    backend = aws_backend(**SET_UP)
    with pytest.raises(ConflictError, match="already exists"):
        execute(backend.create_plan(create_request()), backend)
    assert fp.call_count(aws("run-instances", fp)) == 0


def test_a_name_held_only_by_terminated_instances_is_free(fp, aws_backend) -> None:
    gone = instance("web-1", "terminated", "i-old", "host-" + "9" * 32)
    fp.register(aws("describe-instances", fp), stdout=listing(gone))
    fp.register(aws("run-instances", fp), stdout=launched())
    fp.register(
        aws("describe-instances", fp), stdout=listing(gone, instance("web-1", "running", "i-new"))
    )
    image_lookup(fp)
    backend = aws_backend(**SET_UP)
    assert execute(backend.create_plan(create_request()), backend).handle == "i-new"


def test_of_two_concurrent_creates_the_later_one_gives_up_and_terminates(fp, aws_backend) -> None:
    rival = instance("web-1", "running", "i-rival", "host-" + "0" * 32)  # same time, lower id
    fp.register(aws("describe-instances", fp), stdout=listing())
    fp.register(aws("run-instances", fp), stdout=launched())
    fp.register(
        aws("describe-instances", fp), stdout=listing(rival, instance("web-1", "pending", "i-new"))
    )
    terminate = fp.register(aws("terminate-instances", fp), stdout="{}")
    image_lookup(fp)
    backend = aws_backend(**SET_UP)
    with pytest.raises(ConflictError, match="concurrently"):
        execute(backend.create_plan(create_request()), backend)
    assert terminate.first_call.args[3:5] == ["--instance-ids", "i-new"]


def test_an_instance_that_dies_while_launching_is_an_error_and_is_cleaned_up(
    fp, aws_backend
) -> None:
    dead = instance("web-1", "shutting-down", "i-new")
    dead["StateReason"] = {"Message": "Server.InsufficientInstanceCapacity"}
    fp.register(aws("describe-instances", fp), stdout=listing())
    fp.register(aws("run-instances", fp), stdout=launched())
    fp.register(aws("describe-instances", fp), stdout=listing(dead))
    terminate = fp.register(aws("terminate-instances", fp), stdout="{}")
    image_lookup(fp)
    backend = aws_backend(**SET_UP)
    with pytest.raises(MngrError, match="InsufficientInstanceCapacity"):
        execute(backend.create_plan(create_request()), backend)
    assert terminate.call_count() == 1


def test_waiting_is_bounded_and_the_instance_is_terminated(fp, aws_backend) -> None:
    fp.register(aws("describe-instances", fp), stdout=listing())
    fp.register(aws("run-instances", fp), stdout=launched())
    fp.register(
        aws("describe-instances", fp),
        stdout=listing(instance("web-1", "pending", "i-new")),
        occurrences=1000,
    )
    terminate = fp.register(aws("terminate-instances", fp), stdout="{}")
    image_lookup(fp)
    backend = aws_backend(**SET_UP, wait_timeout_s=0.2)
    backend.poll_delays_s = (0.05,)
    with pytest.raises(VendorTimeoutError, match="wait_timeout_s"):
        execute(backend.create_plan(create_request()), backend)
    assert terminate.call_count() == 1


def test_a_timed_out_launch_is_found_by_its_host_id_tag_and_terminated(fp, aws_backend) -> None:
    fp.register(aws("describe-instances", fp), stdout=listing())
    lookup = fp.register(
        aws("describe-instances", fp), stdout=listing(instance("web-1", "pending", "i-late"))
    )
    terminate = fp.register(aws("terminate-instances", fp), stdout="{}")
    image_lookup(fp)
    backend = aws_backend(**SET_UP)
    real_run = backend.runner.run

    def run(command, **kwargs):  # run-instances never answers (it may still have launched)
        if command.argv[2] == "run-instances":
            raise VendorTimeoutError("'aws' did not answer within 60s")
        return real_run(command, **kwargs)

    backend.runner.run = run
    with pytest.raises(VendorTimeoutError):
        execute(backend.create_plan(create_request()), backend)
    assert f'"Values":["{HOST_ID}"]' in lookup.first_call.args[4]
    assert terminate.first_call.args[3:5] == ["--instance-ids", "i-late"]


def test_unauthorised_launch_allocates_nothing_to_undo(fp, aws_backend) -> None:
    fp.register(aws("describe-instances", fp), stdout=listing())
    failing(fp, "run-instances", "unauthorized-operation")
    fp.register(aws("describe-instances", fp), stdout=listing())  # the undo's lookup
    image_lookup(fp)
    backend = aws_backend(**SET_UP)
    with pytest.raises(UnauthorisedError):
        execute(backend.create_plan(create_request()), backend)
    assert fp.call_count(aws("terminate-instances", fp)) == 0


# --- destroy, stop, start -----------------------------------------------------------------


def test_destroy_of_an_instance_already_gone_is_not_an_error(fp, aws_backend) -> None:
    failing(fp, "terminate-instances", "instance-not-found")
    backend = aws_backend()
    execute(backend.destroy_plan(HOST), backend)


def test_snapshot_delete_of_a_gone_image_is_not_an_error(fp, aws_backend) -> None:
    failing(fp, "describe-images", "instance-not-found")
    failing(fp, "deregister-image", "instance-not-found")
    backend = aws_backend()
    snap = Snapshot(id="ami-1", name="s", host="web-1", provider="cloud", handle="ami-1")
    execute(backend.snapshot_delete_plan(snap), backend)
    assert fp.call_count(aws("delete-snapshot", fp)) == 0


def test_stop_waits_until_stopped(fp, aws_backend) -> None:
    stop = fp.register(aws("stop-instances", fp), stdout="{}")
    fp.register(aws("describe-instances", fp), stdout=listing(instance("web-1", "stopping", "i-1")))
    fp.register(aws("describe-instances", fp), stdout=listing(instance("web-1", "stopped", "i-1")))
    backend = aws_backend()
    execute(backend.stop_plan(HOST), backend)
    assert stop.first_call.args[:5] == ["aws", "ec2", "stop-instances", "--instance-ids", "i-1"]


def test_a_one_time_spot_instance_says_it_cannot_stop_and_is_refused_before_any_plan(
    fp, aws_backend
) -> None:
    spot = instance("web-1", "running", "i-1")
    spot["InstanceLifecycle"] = "spot"
    fp.register(aws("describe-instances", fp), stdout=listing(spot))
    backend = aws_backend()
    [host] = backend.list_hosts()
    assert "spot instance" in host.unsupported["stop/start"]
    with pytest.raises(UnsupportedError, match="host 'web-1.cloud' cannot stop/start: .*spot"):
        backend.require(Capability.STOP_START, host)
    backend.require(Capability.STOP_START, HOST)  # an on-demand instance may stop


def test_start_of_a_running_instance_conflicts(fp, aws_backend) -> None:
    fp.register(
        aws("start-instances", fp),
        stderr="\nAn error occurred (IncorrectInstanceState) when calling the StartInstances "
        "operation: The instance 'i-1' is not in a state from which it can be started.\n",
        returncode=255,
    )
    backend = aws_backend()
    with pytest.raises(ConflictError):
        execute(backend.start_plan(HOST), backend)


# --- exec ---------------------------------------------------------------------------------


def test_exec_goes_over_ssh_to_the_instance(aws_backend) -> None:
    command = aws_backend(identity_file="/k").exec_command(HOST, ["ls", "-l"])
    assert command.argv[0] == "ssh"
    assert command.argv[-3:] == ["--", "54.0.0.1", "ls -l"]
    assert "StrictHostKeyChecking=yes" in command.argv and "BatchMode=yes" in command.argv
