"""On a real terminal (a pty whose line discipline turns Ctrl-C into SIGINT for the
foreground process group), on the real Docker engine: a remote 130 is not mngr's interrupt
(issue 17 item 3), Ctrl-C in a create of several says what was kept and that is true (item
4), and Ctrl-C of a non-TTY exec inside a pipeline leaves no process in the container (11)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from tests.docker import dockerd
from tests.docker.conftest import DockerEnv
from tests.support.terminal import CTRL_C, Terminal, mngr_argv, wait_until

pytestmark = pytest.mark.docker


def in_container(env: DockerEnv, container: str, argv: list[str]) -> bool:
    """Is a process with exactly this command line running in the container?"""
    top = env.engine.docker("top", container, "-o", "pid,args", check=False).stdout
    return any(line.split(None, 1)[1:] == [shlex.join(argv)] for line in top.splitlines())


def test_ctrl_c_of_a_command_in_host_shell_then_exit_is_not_mngr_interrupted(
    docker_env: DockerEnv, mngr
) -> None:
    p = docker_env.provider
    assert mngr("host", "create", "h", "-p", p).exit_code == 0
    sleep = ["sleep", "29"]
    term = Terminal(mngr_argv("host", "shell", "h", "-p", p))
    try:
        term.type("echo READY-$((1+1))\n")
        term.expect("READY-2")
        term.type(shlex.join(sleep) + "\n")
        assert wait_until(lambda: in_container(docker_env, f"h.{p}", sleep)), term.output
        term.type(CTRL_C)
        assert wait_until(lambda: not in_container(docker_env, f"h.{p}", sleep)), term.output
        assert term.proc.poll() is None, term.output  # the shell (and mngr) still there
        term.type("exit\n")
        code = term.wait()
    finally:
        term.close()
    assert code == 130, term.output  # the shell's own status: its last command was Ctrl-C'd
    assert "interrupted" not in term.output


def test_a_remote_exit_status_of_130_is_passed_on_silently(docker_env: DockerEnv, mngr) -> None:
    p = docker_env.provider
    assert mngr("host", "create", "h", "-p", p).exit_code == 0
    term = Terminal(mngr_argv("host", "exec", "h", "-p", p, "--", "sh", "-c", "exit 130"))
    try:
        code = term.wait()
    finally:
        term.close()
    assert code == 130 and "interrupted" not in term.output, term.output


def slow_docker(tmp_path: Path, container: str) -> Path:
    """A docker client that holds `docker run` of one container until the test ends: a busy
    provider, with the real engine behind it."""
    script = tmp_path / "slow-docker"
    script.write_text(
        "#!/bin/sh\n"
        f'case " $* " in *" --name {container} "*) : > "{tmp_path}/held"; exec sleep 300;; esac\n'
        f'exec {shlex.quote(dockerd.DOCKER)} "$@"\n'
    )
    script.chmod(0o755)
    return script


def test_ctrl_c_in_a_create_of_several_says_which_hosts_were_kept_and_which_rolled_back(
    docker_env: DockerEnv, mngr, tmp_path: Path
) -> None:
    p = docker_env.add_provider(
        "slow", host=docker_env.engine.host, image=dockerd.TEST_IMAGE, binary=""
    )
    slow = slow_docker(tmp_path, f"c.{p}")
    text = docker_env.settings.read_text().replace('binary = ""', f'binary = "{slow}"')
    docker_env.settings.write_text(text)
    term = Terminal(mngr_argv("host", "create", "a", "b", "c", "-p", p))
    try:
        term.expect(rf"waiting for c\.{p}: ")  # a and b are whole; c's run is held
        assert (tmp_path / "held").exists()
        term.type(CTRL_C)
        code = term.wait()
    finally:
        term.close()
    assert code == 130, term.output
    assert f"created before the interrupt, kept: a.{p}, b.{p}" in term.output
    assert f"rolled back: c.{p}" in term.output
    assert mngr("host", "list", "-p", p, "-q").stdout.split() == ["a", "b"]
    names = docker_env.engine.docker(
        "ps", "-a", "--filter", f"label=mngr.provider={p}", "--format", "{{.Names}}"
    ).stdout.split()
    assert sorted(names) == [f"a.{p}", f"b.{p}"]


def test_ctrl_c_of_an_exec_inside_a_pipeline_leaves_no_process_in_the_container(
    docker_env: DockerEnv, mngr
) -> None:
    p = docker_env.provider
    assert mngr("host", "create", "h", "-p", p).exit_code == 0
    sleep = ["sleep", "1234"]
    pipeline = shlex.join(mngr_argv("host", "exec", "h", "-p", p, "--", *sleep)) + " | cat"
    term = Terminal(["/bin/sh", "-c", pipeline])
    try:
        assert wait_until(lambda: in_container(docker_env, f"h.{p}", sleep)), term.output
        term.type(CTRL_C)
        term.wait()
        assert wait_until(lambda: not in_container(docker_env, f"h.{p}", sleep), timeout=15)
    finally:
        term.close()
