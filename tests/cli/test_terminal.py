"""On a real terminal (a pty whose line discipline turns Ctrl-C into SIGINT for the
foreground process group), on local hosts: a remote 130 is not mngr's interrupt (issue 17
item 3), Ctrl-C in a create of several says what was kept (item 4), and Ctrl-C of an exec
inside a pipeline leaves no process behind (item 11)."""

from __future__ import annotations

import shlex
import shutil
import time

import pytest

from tests.conftest import require
from tests.support.terminal import CTRL_C, Terminal, local_processes, mngr_argv, wait_until


def test_ctrl_c_of_a_command_in_host_shell_then_exit_is_not_mngr_interrupted(mngr) -> None:
    bash = shutil.which("bash")
    require(bash is not None, "bash is not installed (a login shell with job control)")
    assert mngr("host", "create", "h").exit_code == 0
    sleep = ["sleep", "29.5"]
    term = Terminal(mngr_argv("host", "shell", "h"), env={"SHELL": bash or ""})
    try:
        term.type("echo READY-$((1+1))\n")
        term.expect("READY-2")
        term.type(shlex.join(sleep) + "\n")
        assert wait_until(lambda: local_processes(sleep))
        term.type(CTRL_C)
        assert wait_until(lambda: not local_processes(sleep))
        time.sleep(0.5)
        assert term.proc.poll() is None, term.output  # the shell (and mngr) still there
        term.type("exit\n")
        code = term.wait()
    finally:
        term.close()
    assert code == 130, term.output  # the shell's own status: its last command was Ctrl-C'd
    assert "interrupted" not in term.output


def test_a_remote_exit_status_of_130_is_passed_on_silently(mngr) -> None:
    assert mngr("host", "create", "h").exit_code == 0
    term = Terminal(mngr_argv("host", "exec", "h", "--", "sh", "-c", "exit 130"))
    try:
        code = term.wait()
    finally:
        term.close()
    assert code == 130 and "interrupted" not in term.output, term.output


def test_ctrl_c_in_a_create_of_several_says_which_hosts_were_kept_and_which_rolled_back(
    fake_providers, mngr
) -> None:
    fake_providers(p="tag:hang@c")  # a and b are made; c hangs in its tag step
    term = Terminal(mngr_argv("host", "create", "a", "b", "c", "-p", "p"))
    try:
        # The progress line names only c once a and b are whole.
        term.expect(r"waiting for c\.p: ")
        term.type(CTRL_C)
        code = term.wait()
    finally:
        term.close()
    assert code == 130, term.output
    assert "created before the interrupt, kept: a.p, b.p" in term.output
    assert "rolled back: c.p" in term.output
    assert mngr("host", "list", "-p", "p", "-q").stdout.split() == ["a", "b"]


def test_ctrl_c_of_an_exec_inside_a_pipeline_leaves_no_process(mngr) -> None:
    assert mngr("host", "create", "h").exit_code == 0
    sleep = ["sleep", "1234.5"]
    pipeline = shlex.join(mngr_argv("host", "exec", "h", "--", *sleep)) + " | cat"
    term = Terminal(["/bin/sh", "-c", pipeline])
    try:
        assert wait_until(lambda: local_processes(sleep)), term.output
        term.type(CTRL_C)
        term.wait()
        # Checked before the test ends the terminal's process group itself.
        assert wait_until(lambda: not local_processes(sleep), timeout=5)
    finally:
        term.close()


@pytest.mark.parametrize("keys", [["n\n"], ["\n"], [CTRL_C], ["\x04"], ["maybe\n", "no\n"]])
def test_every_way_of_saying_no_to_the_prompt_is_aborted_in_mngrs_words(mngr, keys) -> None:
    assert mngr("host", "create", "h").exit_code == 0
    term = Terminal(mngr_argv("host", "destroy", "h"))
    try:
        for key in keys:
            term.expect(r"destroy h\.local\? \[y/N\]: $")
            term.type(key)
        code = term.wait()
    finally:
        term.close()
    assert code == 1, term.output
    assert term.output.rstrip().endswith("error: aborted\x1b[0m"), term.output
    assert "Error" not in term.output
    if len(keys) > 1:
        assert "error: answer y or n, not 'maybe'" in term.output
    assert mngr("host", "list", "-q").stdout.split() == ["h"]


def test_yes_after_a_bad_answer_goes_ahead(mngr) -> None:
    assert mngr("host", "create", "h").exit_code == 0
    term = Terminal(mngr_argv("host", "destroy", "h"))
    try:
        term.expect(r"\[y/N\]: $")
        term.type("sure\n")
        term.expect(r"(?s)not 'sure'.*\[y/N\]: $")
        term.type("y\n")
        code = term.wait()
    finally:
        term.close()
    assert code == 0 and "destroyed: h.local" in term.output, term.output
    assert mngr("host", "list", "-q").stdout == ""
