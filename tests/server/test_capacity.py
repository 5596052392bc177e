"""`mngr serve` stays up: a slow provider, many requests at once and half-open connections
take neither health nor the other routes with them."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.server.conftest import RO_TOKEN, RW_TOKEN, Answer, ServeProcess

pytestmark = pytest.mark.server


def request(
    server: ServeProcess,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = RW_TOKEN,
    timeout_s: float = 30,
) -> tuple[Answer, float]:
    """(answer, seconds taken): plain http.client, light enough to run 40 of at once on a
    busy machine without timing the client instead of the server."""
    started = time.monotonic()
    parts = urlsplit(server.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if body is not None:
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, path, json.dumps(body) if body is not None else None, headers)
        response = conn.getresponse()
        answer = Answer(
            response.status,
            json.loads(response.read()),
            {k.lower(): v for k, v in response.getheaders()},
        )
    finally:
        conn.close()
    return answer, time.monotonic() - started


def test_many_lists_of_a_slow_provider_leave_health_and_changes_answering(
    serve, tmp_path: Path
) -> None:
    vendor = tmp_path / "slow-docker"
    vendor.write_text("#!/bin/sh\nexec sleep 10\n")  # answers nothing until killed
    vendor.chmod(0o755)
    server = serve(
        "--provider", "local", "--provider", "slow", "--request-timeout", "4",
        settings=f'[providers.slow]\nbackend = "docker"\nbinary = "{vendor}"\ntimeout_s = 10\n',
    )  # fmt: skip
    answers: list[Answer] = []
    lock = threading.Lock()

    def list_hosts() -> None:
        answer, _ = request(server, "GET", "/v1/hosts", token=RO_TOKEN)
        with lock:
            answers.append(answer)

    started = time.monotonic()
    threads = [threading.Thread(target=list_hosts) for _ in range(40)]
    for thread in threads:
        thread.start()
    time.sleep(1)  # the lists are waiting on the slow provider now
    health, took = request(server, "GET", "/v1/health", token=None)
    assert health.status == 200 and took < 2
    created, took = request(server, "POST", "/v1/hosts", {"name": "web"})
    assert created.status == 201 and took < 3, created.body
    for thread in threads:
        thread.join(30)
    assert time.monotonic() - started < 9  # the server's deadline, not the provider's 10s
    listed = [a for a in answers if a.status == 200]
    busy = [a for a in answers if a.status != 200]
    assert len(answers) == 40 and len(listed) >= 8
    for answer in listed:
        [row] = answer.body["errors"]
        assert row["provider"] == "slow" and "within 4s" in row["message"]
    for answer in busy:
        assert answer.status == 503 and answer.body["error"]["kind"] == "busy"
        assert answer.headers["retry-after"] == "1"


def half_open(server: ServeProcess, count: int) -> list[socket.socket]:
    """Connections that start a request and never finish its headers (no token either)."""
    parts = urlsplit(server.url)
    made = []
    for _ in range(count):
        sock = socket.create_connection((parts.hostname, parts.port), timeout=5)
        sock.sendall(b"GET /v1/hosts HTTP/1.1\r\nHost: mngr\r\nX-Never: end")
        made.append(sock)
    return made


def closed_by_server(sock: socket.socket) -> bool:
    """The server closed it (perhaps after a 503), rather than holding it open."""
    sock.settimeout(0.1)
    try:
        while chunk := sock.recv(4096):
            if not chunk.startswith(b"HTTP/1.1 503"):
                return False
        return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_half_open_connections_leave_health_answering_and_the_log_small(serve) -> None:
    # 128 descriptors, hard limit included: three hundred connections would run them out.
    server = serve("--max-connections", "40", "--read-timeout", "2", nofile=128)
    socks: list[socket.socket] = []
    try:
        for _ in range(3):
            socks += half_open(server, 100)
            health, took = request(server, "GET", "/v1/health", token=None, timeout_s=10)
            assert health.status == 200 and took < 2
        listed, _ = request(server, "GET", "/v1/hosts")
        assert listed.status == 200
        time.sleep(2.5)  # the read timeout closes the rest
        assert all(closed_by_server(sock) for sock in socks)
    finally:
        for sock in socks:
            sock.close()
    health, _ = request(server, "GET", "/v1/health", token=None)
    assert health.status == 200
    log = server.log()
    # Descriptors may still run short for a moment while closed connections are reaped under
    # load; what must never happen is a flood (the filter lets a line through ten times).
    for words in ("Too many open files", "out of system resource"):
        assert sum(words in line for line in log.splitlines()) <= 11, log[-2000:]
    assert len(log) < 20_000


def test_a_body_slower_than_the_read_timeout_is_408(serve) -> None:
    server = serve("--read-timeout", "1")
    parts = urlsplit(server.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/hosts HTTP/1.1\r\nHost: mngr\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + RW_TOKEN.encode() + b"\r\nContent-Length: 40\r\n\r\n"
            b'{"name": '
        )
        started = time.monotonic()
        answer = b""
        while b"}}" not in answer and (chunk := sock.recv(4096)):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within 1s" in answer
    assert time.monotonic() - started < 3
    assert not (server.data_dir / "web").exists()


def test_connections_over_the_limit_are_503_when_all_are_busy(serve, tmp_path: Path) -> None:
    vendor = tmp_path / "slow-docker"
    vendor.write_text("#!/bin/sh\nexec sleep 10\n")
    vendor.chmod(0o755)
    server = serve(
        "--provider", "slow", "--max-connections", "4", "--request-timeout", "3",
        settings=f'[providers.slow]\nbackend = "docker"\nbinary = "{vendor}"\ntimeout_s = 10\n',
    )  # fmt: skip
    threads = [
        threading.Thread(target=request, args=(server, "GET", "/v1/hosts")) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    time.sleep(1)  # four requests in progress: no connection is only waiting
    busy, took = request(server, "GET", "/v1/health", token=None)
    assert busy.status == 503 and busy.body["error"]["kind"] == "busy" and took < 2
    for thread in threads:
        thread.join(30)
    health, _ = request(server, "GET", "/v1/health", token=None)
    assert health.status == 200


def test_a_repeated_log_line_is_let_through_ten_times_a_minute(server_deps) -> None:
    import logging

    from mngr.server import RepeatFilter

    repeats = RepeatFilter(burst=10, window_s=60)

    def record(text: str) -> logging.LogRecord:
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, text, (), None)

    passed = [repeats.filter(record("socket.accept() out of system resource")) for _ in range(500)]
    assert passed.count(True) == 10
    assert repeats.filter(record("another line"))
    repeats.window_s = 0  # a minute later: the next one says how many were left out
    later = record("socket.accept() out of system resource")
    assert repeats.filter(later) and later.getMessage().endswith("(490 more left out)")


def test_too_few_file_descriptors_lower_the_connection_limit_with_a_warning(serve) -> None:
    server = serve(nofile=128)
    assert "warning: serving at most 64 connections, not 1000" in server.log()
    assert request(server, "GET", "/v1/health", token=None)[0].status == 200
