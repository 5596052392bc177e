"""`host exec` on a real Docker engine: a command that is not found exits 127 and one found
but not executable 126, as in a shell and on every backend (docker exec says 126 for both)."""

from __future__ import annotations

import pytest

from tests.docker.conftest import DockerEnv

pytestmark = pytest.mark.docker


def test_exec_of_a_missing_command_is_127_and_of_a_non_executable_file_126(
    docker_env: DockerEnv, mngr
) -> None:
    p = docker_env.provider
    assert mngr("host", "create", "box", "-p", p).exit_code == 0

    def status(*argv: str) -> int:
        return mngr("host", "exec", "box", "-p", p, "--", *argv).exit_code

    assert status("no-such-command-here") == 127
    assert status("/no/such/file") == 127
    assert status("sh", "-c", "echo true > /plain") == 0
    assert status("/plain") == 126
    assert status("sh", "-c", "exit 126") == 126
    assert status("printf", "%s", "$(touch /pwned) 'x' \"y\"") == 0
    assert status("test", "-e", "/pwned") == 1  # arguments stay arguments
