"""`host exec` exit status of a command that cannot run: 127 not found, 126 not executable,
as a shell says them (the same rule on docker and the ssh pool: see their tests)."""

from __future__ import annotations


def test_exec_of_a_missing_command_is_127_and_of_a_non_executable_file_126(mngr) -> None:
    assert mngr("host", "create", "box").exit_code == 0
    assert mngr("host", "exec", "box", "--", "no-such-command-here").exit_code == 127
    assert mngr("host", "exec", "box", "--", "./no-such-file").exit_code == 127
    assert mngr("host", "exec", "box", "--", "sh", "-c", "echo true > plain").exit_code == 0
    assert mngr("host", "exec", "box", "--", "./plain").exit_code == 126
    assert mngr("host", "exec", "box", "--", "sh", "-c", "exit 126").exit_code == 126
