"""Help lists each positional argument once, whatever click's version (8.5 added its own
"Positional arguments" section beside ours)."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    "command", [["host", "destroy"], ["host", "exec"], ["host", "snapshot", "delete"]]
)
def test_help_lists_each_argument_once(mngr, command: list[str]) -> None:
    shown = mngr(*command, "--help")
    assert shown.exit_code == 0
    assert shown.stdout.count("Arguments:") == 1 and "Positional arguments" not in shown.stdout
    assert shown.stdout.index("Arguments:") < shown.stdout.index("Options:")
