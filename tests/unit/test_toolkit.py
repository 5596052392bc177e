"""The backend toolkit: argv builder, vendor JSON, stderr rules, ssh argv."""

from __future__ import annotations

import os

import pytest

from mngr.errors import NotFoundError, UnauthorisedError, VendorCommandError, VendorOutputError
from mngr.toolkit import rules, ssh, vendor_json
from mngr.toolkit.argv import Argv


def test_argv_skips_none_and_false_repeats_lists_and_writes_true_bare() -> None:
    argv = (
        Argv(["docker", "run"])
        .add("--name", "web")
        .add("--network", None)
        .add("--rm", False)
        .add("--init")
        .add("--label", ["a=1", "b=2"])
        .add("--cpus", 1.5)
        .words(["img", 3])
    )
    assert argv == [
        "docker", "run", "--name", "web", "--init", "--label", "a=1", "--label", "b=2",
        "--cpus", "1.5", "img", "3",
    ]  # fmt: skip


def test_argv_equals_form_and_mapping() -> None:
    values = {"memory_mib": 2048, "gpu": None, "tag": ["x", "y"], "yes": True}
    argv = Argv().add_all(values, eq=True)
    assert argv == ["--memory-mib=2048", "--tag=x", "--tag=y", "--yes"]


class Row(vendor_json.Lenient):
    id: str
    size: int = 0


def test_vendor_json_ignores_new_fields_and_names_the_command_on_failure() -> None:
    assert vendor_json.parse(Row, '{"id": "a", "new": 1}', "docker inspect").id == "a"
    rows = vendor_json.parse_many(Row, '{"id": "a"}\n\n{"id": "b"}\n', "docker ps")
    assert [r.id for r in rows] == ["a", "b"]
    assert [r.id for r in vendor_json.parse_many(Row, '[{"id": "c"}]', "x")] == ["c"]
    with pytest.raises(VendorOutputError, match=r"`docker ps` printed output .*not JSON"):
        vendor_json.parse_many(Row, "garbage", "docker ps")
    with pytest.raises(VendorOutputError, match=r"`aws ec2 x` .*id is required") as info:
        vendor_json.parse(Row, '{"size": 3}', "aws ec2 x")
    assert "Input should" not in str(info.value)


RULES = [
    rules.Rule(r"Unable to find image '([^']+)'", NotFoundError, say="image {0!r} at {where}"),
    rules.Rule(r"AuthFailure", UnauthorisedError, hint="the credentials were refused"),
]


def test_rules_classify_by_the_first_match_and_keep_unknown_errors() -> None:
    def error(stderr: str) -> VendorCommandError:
        return VendorCommandError(["docker", "run"], 1, "", stderr)

    found = rules.classify(error("Unable to find image 'x:1' locally"), RULES, where="dk")
    assert isinstance(found, NotFoundError) and str(found) == "image 'x:1' at dk"
    auth = rules.classify(error("An error occurred (AuthFailure)"), RULES)
    assert isinstance(auth, UnauthorisedError) and "(the credentials were refused)" in str(auth)
    plain = error("something else")
    assert rules.classify(plain, RULES) is plain


def test_ssh_argv_always_checks_host_keys_and_quotes_the_remote_command() -> None:
    target = ssh.SshTarget("127.0.0.2", user="dev", port=2222, identity_file="/k")
    argv = ssh.ssh_argv(target, ssh.SshSettings(known_hosts="/kh"), "true", tty=False)
    assert argv[:3] == ["ssh", "-o", "BatchMode=yes"]
    assert "StrictHostKeyChecking=yes" in argv and "UserKnownHostsFile=/kh" in argv
    assert argv[-5:] == ["dev", "-T", "--", "127.0.0.2", "true"]
    assert ["-i", "/k", "-o", "IdentitiesOnly=yes", "-p", "2222"] == argv[argv.index("-i") :][:6]
    reuse = ssh.SshSettings(accept_new=True, control_dir="/c", control_persist_s=60)
    argv = ssh.ssh_argv(ssh.SshTarget("h"), reuse, batch=False)
    assert "BatchMode=yes" not in argv and "StrictHostKeyChecking=accept-new" in argv
    assert "ControlPath=/c/%C" in argv and argv[-1] == "h"
    assert ssh.SshSettings(known_hosts="~/kh").known_hosts_file == os.path.expanduser("~/kh")
    assert ssh.remote_command(["echo", "a b", "$X"]) == "echo 'a b' '$X'"
    assert ssh.remote_command(["sleep", "9"], detach=True).startswith("nohup sleep 9 >/dev/null")


def test_argv_keeps_a_plan_ref_a_ref() -> None:
    from mngr.plan import Ref

    argv = Argv(["aws"]).add("--image-ids", Ref("image_id")).add("--page-size", 50)
    assert argv == ["aws", "--image-ids", "image_id", "--page-size", "50"]
    assert isinstance(argv[2], Ref)


def test_ssh_file_refuses_what_ssh_would_split_or_expand() -> None:
    assert ssh.ssh_file("~/.ssh/known_hosts", "known_hosts") == "~/.ssh/known_hosts"
    assert ssh.ssh_file(None, "known_hosts") is None
    for bad in ("", "/a b", "/a%h", "/a#", "/a'b"):
        with pytest.raises(ValueError, match="known_hosts must be a path"):
            ssh.ssh_file(bad, "known_hosts")
