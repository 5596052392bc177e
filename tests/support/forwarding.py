"""Helpers of the `host forward` tests: an HTTP server to reach, concurrent requests through a
forward, a forward served in-process or as a real mngr process, and process checks."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REQUESTS = 50


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Can a server listen on it (as servers do, past connections in TIME_WAIT)?"""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            return False
        return True


def site(root: Path, big_mb: int = 8) -> dict[str, bytes]:
    """Files to serve: a small page and a large binary one."""
    root.mkdir(parents=True, exist_ok=True)
    files = {"index.html": b"<p>hello through the forward</p>\n"}
    files["big.bin"] = os.urandom(big_mb << 20)
    for name, data in files.items():
        (root / name).write_bytes(data)
    return files


@contextmanager
def http_server(root: Path, port: int | None = None) -> Iterator[int]:
    """Python's threading http.server on 127.0.0.1, serving `root`."""
    port = port or free_port()
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    proc = subprocess.Popen(
        [*argv, "--directory", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_listening(port)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def wait_listening(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def get(port: int, path: str = "/index.html", timeout: float = 30) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200, (response.status, body[:200])
        return body
    finally:
        conn.close()


# Reads each connection to its end, then answers the sha256 of what it read (half-close).
DIGEST_SERVER = """
import hashlib, socket, sys, threading
def serve(conn):
    digest = hashlib.sha256()
    while data := conn.recv(65536):
        digest.update(data)
    conn.sendall(digest.hexdigest().encode())
    conn.close()
listener = socket.create_server(("127.0.0.1", int(sys.argv[1])))
while True:
    threading.Thread(target=serve, args=(listener.accept()[0],)).start()
"""


@contextmanager
def digest_server() -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", DIGEST_SERVER, str(port)])
    try:
        wait_listening(port)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def upload(port: int, data: bytes, timeout: float = 60) -> str:
    """Send `data`, end the sending half, and return what the far end answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode()


def get_concurrently(port: int, path: str = "/index.html", n: int = REQUESTS) -> list[bytes]:
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: get(port, path), range(n)))


def refused_or_closed(port: int) -> bool:
    """True when a request through the forward ends without an answer (the far port is
    closed): the local connection is closed, not left hanging."""
    try:
        get(port, timeout=20)
    except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine):
        return True
    return False


@contextmanager
def served(forward: Any) -> Iterator[list[Any]]:
    """A Service forward opened and served in a thread; closed after."""
    stop = threading.Event()
    listeners = forward.open()
    thread = threading.Thread(target=forward.serve, args=(stop,), daemon=True)
    thread.start()
    try:
        yield listeners
    finally:
        stop.set()
        thread.join(timeout=10)
        forward.close()


def start_forward_process(*args: str, env: dict[str, str] | None = None) -> tuple[Any, dict]:
    """`mngr host forward ARGS --format json` as its own process: (process, first JSON line)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mngr",
            "host",
            "forward",
            *args,
            "--format",
            "json",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=30)
        raise AssertionError(f"forward exited {proc.returncode}: {proc.stderr.read()}")
    return proc, json.loads(line)


def interrupt(proc: subprocess.Popen[str]) -> tuple[int, str]:
    """SIGINT to the mngr process only (as Ctrl-C would send it); its exit code and stderr."""
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    return proc.returncode, err


def children(pid: int) -> list[int]:
    """Processes whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pids: list[int]) -> list[int]:
    """Those of `pids` still running (a zombie counts as ended)."""
    running = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            running.append(pid)
    return running


@contextmanager
def held_open(port: int) -> Iterator[socket.socket]:
    """A connection through the forward that sends nothing and stays open."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        yield sock
    finally:
        sock.close()


def wait_for(condition: Any, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)
    return value


def sigint_leaves_nothing(
    proc: subprocess.Popen[str],
    local_port: int,
    processes: int,
    relaying: Callable[[], bool] = lambda: True,
) -> None:
    """With a connection held open through the forward (its relay running), SIGINT to the
    forward's process ends it and every process it started (`processes` of them: the ssh
    master and the connection's relay), and frees the port."""
    try:
        with held_open(local_port):
            wait_for(lambda: len(children(proc.pid)) >= processes and relaying())
            started = children(proc.pid)
            code, err = interrupt(proc)
    finally:
        if proc.poll() is None:  # the test failed before the interrupt: leave nothing running
            proc.kill()
            proc.wait(timeout=10)
    assert code == 130, err
    assert wait_for(lambda: not alive(started), timeout=10)
    assert port_is_free(local_port)
