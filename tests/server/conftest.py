"""Fixtures of the server tests: a real `mngr serve` started as a subprocess on a free loopback
port (the local backend behind it, its own HOME and XDG dirs), and the in-process CLI of a
second mngr configured with backend `mngr` pointing at it."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import resource
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Result, require

RW_TOKEN = "rw-test-token-5b1f0c9e7a3d"
RO_TOKEN = "ro-test-token-9c2e4f1a8b7d"
WRONG_TOKEN = "wrong-token-0000000000000"
TOKEN_FILE_TEXT = f"# tokens of the test server\n\n{RW_TOKEN}\nro:{RO_TOKEN}\n"
TOKEN_ENV = "MNGR_TEAM_TOKEN"

START_TIMEOUT_S = 30.0
LISTENING = re.compile(r"listening on (https?://\S+)")


def server_deps_installed() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("fastapi", "uvicorn"))


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class ServeProcess:
    """One `mngr serve` subprocess with its own HOME."""

    root: Path
    proc: subprocess.Popen[bytes]
    log_path: Path
    url: str = ""

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def data_dir(self) -> Path:
        """Where the server's `local` provider keeps its hosts."""
        return self.home / ".local" / "share" / "mngr" / "local" / "local"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mngr serve exited {self.proc.returncode}:\n{self.log()}")
            match = LISTENING.search(self.log())
            if match:
                self.url = match.group(1)
                if self.api("GET", "/v1/health", token=None).status == 200:
                    return
            time.sleep(0.05)
        raise AssertionError(f"mngr serve did not become ready:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # in case a test paused it
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = RW_TOKEN,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout_s: float = 30.0,
    ) -> Answer:
        """One raw HTTP request (no mngr client code involved)."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None and raw is None:
            request.add_header("Content-Type", "application/json")
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        # The raw test client does not check certificates; the mngr client under test does.
        unverified = ssl.create_default_context()
        unverified.check_hostname = False
        unverified.verify_mode = ssl.CERT_NONE
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=unverified)
        )
        try:
            with opener.open(request, timeout=timeout_s) as response:
                status, payload, got = response.status, response.read(), response.headers
        except urllib.error.HTTPError as exc:
            status, payload, got = exc.code, exc.read(), exc.headers
        try:
            parsed = json.loads(payload) if payload else None
        except ValueError:
            parsed = payload.decode(errors="replace")
        return Answer(status, parsed, {k.lower(): v for k, v in got.items()})


def server_env(root: Path) -> dict[str, str]:
    home = root / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MNGR_")}
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        XDG_CACHE_HOME=str(home / ".cache"),
        PYTHONUNBUFFERED="1",
    )
    return env


def start_serve(
    root: Path,
    *args: str,
    tokens: str = TOKEN_FILE_TEXT,
    settings: str | None = None,
    wait: bool = True,
    token_mode: int = 0o600,
    nofile: int | None = None,
) -> ServeProcess:
    """Start `mngr serve` on a free loopback port (port 0: the server picks and prints it)."""
    home = root / "home"
    (home / ".config" / "mngr").mkdir(parents=True, exist_ok=True)
    if settings is not None:
        (home / ".config" / "mngr" / "settings.toml").write_text(settings, encoding="utf-8")
    token_file = root / "tokens"
    token_file.write_text(tokens, encoding="utf-8")
    token_file.chmod(token_mode)
    if not any(a.startswith("--listen") for a in args):
        args = ("--listen", "127.0.0.1:0", *args)
    if "--provider" not in args:
        args = (*args, "--provider", "local")  # not the built-in local_docker
    log_path = root / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mngr", "serve", "--token-file", str(token_file), *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=home,
            env=server_env(root),
            # A low file-descriptor limit (soft and hard) shows what running out of them does.
            preexec_fn=(lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile)))
            if nofile
            else None,
        )
    server = ServeProcess(root, proc, log_path)
    if wait:
        server.wait_ready()
    return server


@pytest.fixture
def server_deps() -> None:
    require(server_deps_installed(), "fastapi and uvicorn (pip install 'mngr[server]')")


@pytest.fixture
def serve(server_deps: None, tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    """Start servers: serve(*args, tokens=..., settings=...); all are stopped afterwards."""
    started: list[ServeProcess] = []

    def start(*args: str, **kwargs: Any) -> ServeProcess:
        root = tmp_path / f"server{len(started)}"
        root.mkdir()
        server = start_serve(root, *args, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """One server for a whole module, for tests that change nothing or only their own hosts."""
    require(server_deps_installed(), "fastapi and uvicorn (pip install 'mngr[server]')")
    server = start_serve(tmp_path_factory.mktemp("shared-server"))
    yield server
    server.stop()


@pytest.fixture
def server(serve: Callable[..., ServeProcess]) -> ServeProcess:
    return serve()


@pytest.fixture
def client_settings(user_settings: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """Configure the client mngr: client_settings(team=server, ...), extra keys per provider."""
    monkeypatch.setenv(TOKEN_ENV, RW_TOKEN)

    def write(extra: dict[str, dict[str, Any]] | None = None, **servers: ServeProcess) -> Path:
        lines: list[str] = []
        for name, srv in servers.items():
            keys: dict[str, Any] = {"url": srv.url, "token_env": TOKEN_ENV, "timeout_s": 10}
            keys.update((extra or {}).get(name, {}))
            lines += [f"[providers.{name}]", 'backend = "mngr"']
            lines += [f"{key} = {json.dumps(value)}" for key, value in keys.items() if value]
            lines.append("")
        user_settings.write_text("\n".join(lines), encoding="utf-8")
        return user_settings

    return write


@pytest.fixture
def team(server: ServeProcess, client_settings: Callable[..., Path]) -> ServeProcess:
    """A running server, configured in the client as provider `team` (read-write token)."""
    client_settings(team=server)
    return server


def hosts_of(mngr: Callable[..., Result], *args: str) -> tuple[int, dict[str, Any]]:
    result = mngr("host", "list", "--format", "json", *args)
    return result.exit_code, json.loads(result.stdout)
