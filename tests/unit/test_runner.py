from __future__ import annotations

import sys
import time

import pytest

from mngr.errors import VendorCommandError, VendorMissingError, VendorTimeoutError
from mngr.runner import Command, Runner


def test_runs_argv_and_captures_output(fp) -> None:
    fp.register(["docker", "ps"], stdout="ok\n")
    done = Runner().run(Command(["docker", "ps"]))
    assert done.stdout == "ok\n" and done.returncode == 0


def test_nonzero_exit_keeps_argv_code_and_stderr(fp) -> None:
    fp.register(
        ["aws", "ec2", "run-instances", "--secret-ish"],
        returncode=254,
        stderr="An error occurred (AuthFailure)\nmore\n",
    )
    with pytest.raises(VendorCommandError) as exc:
        Runner().run(Command(["aws", "ec2", "run-instances", "--secret-ish"]))
    err = exc.value
    assert err.returncode == 254 and err.argv[0] == "aws" and "AuthFailure" in err.stderr
    assert str(err) == "aws ec2 run-instances failed (exit 254): An error occurred (AuthFailure)"


def test_error_text_never_contains_argv_values() -> None:
    err = VendorCommandError(["tool", "login", "--token", "s3cr3t"], 1, "", "bad")
    assert "s3cr3t" not in str(err)


def test_missing_binary_is_vendor_missing() -> None:
    with pytest.raises(VendorMissingError, match="not found on PATH"):
        Runner().run(Command(["/nonexistent/docker", "ps"]))


def test_timeout_kills_the_process_and_says_so() -> None:
    start = time.monotonic()
    with pytest.raises(VendorTimeoutError, match="did not answer within 0.5s"):
        Runner().run(Command([sys.executable, "-c", "import time; time.sleep(30)"], timeout_s=0.5))
    assert time.monotonic() - start < 5


def test_secret_reaches_the_vendor_through_stdin_only() -> None:
    done = Runner().run(
        Command([sys.executable, "-c", "import sys; print(len(sys.stdin.read()))"], stdin="tok")
    )
    assert done.stdout.strip() == "3"
