"""exec, shell and forward on hosts of a `mngr` provider, through a real `mngr serve` and its
exec WebSocket: the client is a real mngr process (its stdio passed through), the server's
host a local one."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.server.conftest import RO_TOKEN, RW_TOKEN, TOKEN_ENV, WRONG_TOKEN, ServeProcess
from tests.support import forwarding as fw

pytestmark = pytest.mark.server


@pytest.fixture
def server(serve: Callable[..., ServeProcess]) -> ServeProcess:
    """The server of `team`: its hosts are local ones, so exec must be allowed."""
    return serve("--allow-local-exec")


@pytest.fixture
def box(team: ServeProcess, mngr: Callable[..., Any]) -> Path:
    """A running host `box` on the server's local provider; its folder on the server."""
    result = mngr("host", "create", "box", "-p", "team")
    assert result.exit_code == 0, result.stderr
    return team.data_dir / "box"


def run_mngr(
    *args: str, stdin: bytes = b"", token: str = RW_TOKEN, timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    """mngr as its own process (exec passes its stdio to a child)."""
    env = {**os.environ, TOKEN_ENV: token}
    return subprocess.run(
        [sys.executable, "-m", "mngr", *args],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=timeout,
    )


def test_exec_passes_stdin_stdout_stderr_and_the_exit_code(box: Path) -> None:
    script = "cat; echo to-stderr >&2; pwd; exit 3"
    done = run_mngr("host", "exec", "box", "-p", "team", "--", "sh", "-c", script, stdin=b"in\n")
    assert done.returncode == 3, done.stderr
    assert done.stdout.decode().splitlines() == ["in", str(box)]
    assert done.stderr.decode() == "to-stderr\n"


def test_exec_keeps_arguments_as_arguments(box: Path) -> None:
    odd = ["a b", "$(touch pwned)", "'q'", "ünï", "-n"]
    done = run_mngr("host", "exec", "box", "-p", "team", "--", "printf", "%s|", *odd)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == "|".join(odd) + "|"
    assert not (box / "pwned").exists()


def test_a_20_mb_round_trip_through_the_server(box: Path) -> None:
    data = os.urandom(20 << 20)
    started = time.monotonic()
    done = run_mngr("host", "exec", "box", "-p", "team", "--", "cat", stdin=data, timeout=120)
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-500:]
    assert hashlib.sha256(done.stdout).digest() == hashlib.sha256(data).digest()
    print(f"20 MiB stdin->stdout through mngr serve: {took:.2f}s")


def test_a_read_only_token_is_refused(team: ServeProcess, box: Path) -> None:
    done = run_mngr("host", "exec", "box", "-p", "team", "--", "true", token=RO_TOKEN)
    # the listing (a GET) is allowed to a read-only token; the exec socket is not
    assert done.returncode == 5, done.stderr
    assert b"read-only" in done.stderr
    assert RO_TOKEN.encode() not in done.stderr
    assert "ERROR" not in team.log() and RO_TOKEN not in team.log()


def test_a_wrong_token_is_refused_with_exit_5(team: ServeProcess, box: Path) -> None:
    """The listing is refused first; the exec socket itself too, by the same check."""
    done = run_mngr("host", "exec", "box", "-p", "team", "--", "true", token=WRONG_TOKEN)
    assert done.returncode == 5, done.stderr
    assert WRONG_TOKEN.encode() not in done.stderr
    code, err = remote_exec(exec_url(team, "box"), "true", token=WRONG_TOKEN)
    assert code == 5 and "not valid" in err and WRONG_TOKEN not in err


def test_a_stopped_host_is_refused(team: ServeProcess, box: Path, mngr: Any) -> None:
    assert mngr("host", "stop", "box", "-p", "team").exit_code == 0
    done = run_mngr("host", "exec", "box", "-p", "team", "--", "true")
    assert done.returncode == 1 and b"is stopped" in done.stderr
    # the server checks too, whatever a client believes
    code, err = remote_exec(exec_url(team, "box"), "true")
    assert code == 1 and "is stopped" in err


def test_the_server_refuses_what_is_not_an_exec_request(team: ServeProcess, box: Path) -> None:
    code, err = send_start(exec_url(team, "box"), {"argv": ["true"], "shell": True})
    assert code == 2 and "exactly one" in err
    code, err = remote_exec(exec_url(team, "nothere"), "true")
    assert code == 3


def test_without_allow_local_exec_the_server_runs_nothing_on_its_own_machine(
    serve: Callable[..., ServeProcess], client_settings: Callable[..., Path], mngr: Any
) -> None:
    client_settings(strict=serve())
    assert mngr("host", "create", "box", "-p", "strict").exit_code == 0
    for verb in (["exec", "box", "--", "true"], ["shell", "box"]):
        done = run_mngr("host", *verb, "-p", "strict")
        assert done.returncode == 2, done.stderr
        assert b"--allow-local-exec" in done.stderr


def test_shell_runs_the_hosts_shell(box: Path) -> None:
    done = run_mngr("host", "shell", "box", "-p", "team", stdin=b"echo $((6*7)); exit 4\n")
    assert done.returncode == 4, done.stderr
    assert done.stdout == b"42\n"


def test_exec_on_a_terminal_gets_a_pty_of_the_terminals_size(box: Path) -> None:
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # the child: mngr on the new terminal, 100x40
        os.environ[TOKEN_ENV] = RW_TOKEN
        os.execv(
            sys.executable,
            [sys.executable, "-m", "mngr", "host", "exec", "box", "-p", "team", "--", "sh", "-c",
             "stty size; test -t 0 && echo on-a-tty; exit 6"],
        )  # fmt: skip
    import fcntl
    import struct
    import termios

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    out = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 6, out
    assert b"40 100" in out and b"on-a-tty" in out


def test_sigint_to_the_client_ends_the_remote_process(box: Path) -> None:
    pid_file = box / "remote.pid"
    client = subprocess.Popen(
        [sys.executable, "-m", "mngr", "host", "exec", "box", "-p", "team", "--",
         "sh", "-c", "echo $$ > remote.pid; exec sleep 300"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, TOKEN_ENV: RW_TOKEN},
    )  # fmt: skip
    try:
        fw.wait_for(lambda: pid_file.exists() and pid_file.read_text().strip())
        remote = int(pid_file.read_text())
        assert fw.alive([remote])
        client.send_signal(__import__("signal").SIGINT)
        client.communicate(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(timeout=10)
    assert client.returncode == 130
    assert fw.wait_for(lambda: not fw.alive([remote]), timeout=10)


def test_forward_through_the_server_to_an_http_server(box: Path, tmp_path: Path) -> None:
    files = fw.site(tmp_path / "site", big_mb=32)
    upload = os.urandom(32 << 20)
    closed = fw.free_port()
    with fw.http_server(tmp_path / "site") as port, fw.digest_server() as digest_port:
        proc, doc = fw.start_forward_process(
            "box",
            f"0:{port}",
            f"0:{digest_port}",
            f"0:{closed}",
            "-p",
            "team",
            env={**os.environ, TOKEN_ENV: RW_TOKEN},
        )
        try:
            web, digest, nothing = (f["port"] for f in doc["forwards"])
            assert fw.get(web) == files["index.html"]
            assert fw.get(web, "/big.bin") == files["big.bin"]
            assert set(fw.get_concurrently(web)) == {files["index.html"]}  # 50 at once
            assert fw.upload(digest, upload) == hashlib.sha256(upload).hexdigest()
            assert fw.children(proc.pid) == []  # each connection is a WebSocket of its own
            # nothing listens there: that connection closes, the forward keeps running
            assert fw.refused_or_closed(nothing)
            assert fw.get(web) == files["index.html"]
        finally:
            if proc.poll() is None:
                code, err = fw.interrupt(proc)
                assert code == 130, err
    assert f"port {closed}: connection closed" in err
    assert fw.port_is_free(web)


def test_a_forwarded_connection_starts_no_process_and_ctrl_c_ends_it(box: Path) -> None:
    accepted, ended = threading.Event(), threading.Event()

    def far_end(listener: socket.socket) -> None:
        conn, _ = listener.accept()
        accepted.set()
        while conn.recv(65536):
            pass
        ended.set()  # the server closed its side: the session is over
        conn.close()

    with socket.create_server(("127.0.0.1", 0)) as listener:
        threading.Thread(target=far_end, args=(listener,), daemon=True).start()
        port = listener.getsockname()[1]
        proc, doc = fw.start_forward_process(
            "box", f"0:{port}", "-p", "team", env={**os.environ, TOKEN_ENV: RW_TOKEN}
        )
        local = doc["forwards"][0]["port"]
        try:
            with fw.held_open(local) as sock:
                sock.sendall(b"hello")
                assert accepted.wait(timeout=20)
                assert fw.children(proc.pid) == []  # no process for the connection
                code, err = fw.interrupt(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        assert code == 130, err
        assert ended.wait(timeout=10)
    assert fw.port_is_free(local)


def test_a_read_only_token_cannot_forward(team: ServeProcess, box: Path) -> None:
    proc, doc = fw.start_forward_process(
        "box", f"0:{fw.free_port()}", "-p", "team", env={**os.environ, TOKEN_ENV: RO_TOKEN}
    )
    try:
        assert fw.refused_or_closed(doc["forwards"][0]["port"])
    finally:
        code, err = fw.interrupt(proc)
    assert code == 130
    assert "connection closed: " in err and "the server refused the token" in err, err
    assert RO_TOKEN not in err


def test_a_server_that_never_answers_is_given_up_at_connect() -> None:
    """A listener that accepts and says nothing: the upgrade has the provider's timeout."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1/hosts/h/exec?provider=p"
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "mngr", "__remote-exec", url, "--timeout", "1", "--", "true"],
            capture_output=True,
            env={**os.environ, "MNGR_REMOTE_TOKEN": RW_TOKEN},
            timeout=60,
        )
    assert time.monotonic() - started < 10
    assert done.returncode == 1
    assert b"did not answer within 1s" in done.stderr and RW_TOKEN.encode() not in done.stderr


def exec_url(server: ServeProcess, name: str, provider: str = "local") -> str:
    return f"{server.url}/v1/hosts/{name}/exec?provider={provider}"


def remote_exec(url: str, *argv: str, token: str = RW_TOKEN) -> tuple[int, str]:
    """`mngr __remote-exec` on the server's socket, no client-side check before it: the
    exit code and stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "mngr", "__remote-exec", url, "--timeout", "10", "--", *argv],
        capture_output=True,
        env={**os.environ, "MNGR_REMOTE_TOKEN": token},
        timeout=60,
    )
    return done.returncode, done.stderr.decode()


def send_start(url: str, start: dict[str, Any]) -> tuple[int, str]:
    """A start message no mngr client sends, straight on the socket: the error it gets."""
    from mngr.toolkit import wsexec

    with wsexec.connect(url, RW_TOKEN, None, 10) as ws:
        ws.send(json.dumps(start))
        answer = wsexec.parse_control(ws.recv(timeout=10))
    assert answer["type"] == "error", answer
    error = wsexec.server_error(answer, "server")
    return error.exit_code, str(error)


def test_push_and_pull_round_trip_through_the_server(box: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a b.txt").write_text("through the team server\n")
    (src / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (src / "run.sh").chmod(0o755)
    (src / "blob").write_bytes(os.urandom(3 << 20))
    pushed = run_mngr("host", "push", "box", "-p", "team", str(src), "--to", "in", timeout=120)
    assert pushed.returncode == 0, pushed.stderr.decode()[-500:]
    landed = box / "in" / "src"
    assert (landed / "sub" / "a b.txt").read_text() == "through the team server\n"
    assert os.access(landed / "run.sh", os.X_OK)
    assert (landed / "blob").read_bytes() == (src / "blob").read_bytes()
    out = tmp_path / "out"
    pulled = run_mngr("host", "pull", "box", "-p", "team", "in/src", "--to", str(out))
    assert pulled.returncode == 0, pulled.stderr.decode()[-500:]
    assert (out / "src" / "blob").read_bytes() == (src / "blob").read_bytes()
    assert (out / "src" / "sub" / "a b.txt").read_text() == "through the team server\n"
