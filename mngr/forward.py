"""`mngr host forward`: ports of this machine relayed to ports inside a host, written once for
every backend. Each accepted connection takes its own way in:

- a host with an ssh endpoint (ssh pool, aws): `ssh -W 127.0.0.1:PORT` through one master
  connection the forward opens and ends itself (many connections, one handshake);
- a host of a `mngr` server: a WebSocket per connection, opened by this process (the
  backend's `port_channel`; no process starts per connection);
- another host: the backend's `port_command` over its transport (`docker exec -i C nc
  127.0.0.1 PORT`);
- a host whose ports are this machine's own (local): a direct connection.

A command gets the accepted socket itself as its stdin and stdout, so the bytes never pass
through Python; a channel's bytes are copied by two threads. `close()` (after Ctrl-C) ends
every process and connection it started and frees the ports.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from mngr.errors import (
    MngrError,
    UsageError,
    VendorCommandError,
    VendorMissingError,
    exit_status,
    first_line,
)
from mngr.runner import Command
from mngr.toolkit import ssh

REMOTE = "127.0.0.1"  # the address inside the host a forwarded port is reached at
_POLL_S = 0.2


@dataclass(frozen=True)
class PortPair:
    local: int  # 0: any free port
    remote: int


def parse_ports(texts: list[str]) -> list[PortPair]:
    """`[LOCAL_PORT:]REMOTE_PORT` each; LOCAL_PORT 0 or omitted: a free port."""
    if not texts:
        raise UsageError("no port given (use: mngr host forward HOST [LOCAL_PORT:]REMOTE_PORT...)")
    pairs = []
    for text in texts:
        local, _, remote = text.rpartition(":")
        try:
            pair = PortPair(int(local) if local else 0, int(remote))
        except ValueError:
            raise UsageError(f"{text!r} is not [LOCAL_PORT:]REMOTE_PORT") from None
        if not 0 <= pair.local <= 65535 or not 1 <= pair.remote <= 65535:
            raise UsageError(f"{text!r}: a port is a number from 1 to 65535 (0: any free one)")
        pairs.append(pair)
    chosen = [p.local for p in pairs if p.local]
    if len(set(chosen)) != len(chosen):
        raise UsageError("the same local port is given twice")
    return pairs


def bind_address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise UsageError(f"--address {text!r} is not an IP address") from None


@dataclass(frozen=True)
class Listener:
    address: str
    port: int
    remote: int


class Channel(Protocol):
    """One connection to a port inside the host, its bytes passing through this process."""

    half_close: bool  # False: once the far end has closed, nothing more can be sent

    def send(self, data: bytes) -> None: ...

    def end_input(self) -> None: ...

    def chunks(self) -> Iterator[bytes]:
        """What the far end sends, until it closes; a MngrError or OSError if it breaks."""
        ...

    def close(self) -> None: ...


Dial = Callable[[], Channel]  # opens one Channel (a MngrError or OSError when it cannot)


class Route(Protocol):
    """How a connection reaches a port inside the host."""

    def start(self) -> None: ...

    def command(self, port: int) -> Command | Dial | None:
        """The command one connection runs (its stdio is the connection), or how to open a
        channel to the port from this process; None: connect directly to 127.0.0.1:port."""
        ...

    def stop(self) -> None: ...


class TransportRoute:
    """Through the backend's transport (`port_channel`, else `port_command`)."""

    def __init__(self, make: Callable[[int], Command | Dial | None]) -> None:
        self.make = make

    def start(self) -> None:
        pass

    def command(self, port: int) -> Command | Dial | None:
        return self.make(port)

    def stop(self) -> None:
        pass


class SshRoute:
    """Through one ssh master of this forward's own: each connection is a `-W` client of it."""

    def __init__(
        self, endpoint: ssh.SshEndpoint, classify: Callable[[VendorCommandError], MngrError]
    ) -> None:
        self.endpoint = endpoint
        self.classify = classify
        self.socket = os.path.join(ssh.control_dir(), f"fwd-{secrets.token_hex(6)}")
        self.master: subprocess.Popen[bytes] | None = None

    def _settings(self, *, master: bool) -> ssh.SshSettings:
        return replace(self.endpoint.settings, control_path=self.socket, control_master=master)

    def start(self) -> None:
        argv = ssh.ssh_argv(self.endpoint.target, self._settings(master=True), flags=["-N"])
        log = Path(self.socket + ".log")
        with log.open("wb") as err:  # the master's stderr, read back only if it fails
            self.master = _spawn(argv, subprocess.DEVNULL, subprocess.DEVNULL, err)
        deadline = time.monotonic() + self.endpoint.settings.connect_timeout_s + 10
        try:
            while not os.path.exists(self.socket):
                if self.master.poll() is not None:
                    text = log.read_text(errors="replace")
                    raise self.classify(VendorCommandError(argv, self.master.returncode, "", text))
                if time.monotonic() > deadline:
                    raise MngrError(f"ssh to {self.endpoint.target.address} did not connect")
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise

    def command(self, port: int) -> Command:
        settings = self._settings(master=False)
        flags = ["-W", f"{REMOTE}:{port}"]
        return Command(ssh.ssh_argv(self.endpoint.target, settings, flags=flags))

    def stop(self) -> None:
        if self.master is not None:
            _end([self.master])
            self.master = None
        for path in (self.socket, self.socket + ".log"):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


class Forward:
    """Listeners on this machine, each relaying its connections to one port in the host."""

    def __init__(
        self,
        host: str,
        route: Route,
        pairs: list[PortPair],
        address: str,
        report: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.host = host  # NAME.PROVIDER, for messages
        self.route = route
        self.pairs = pairs
        self.address = address
        self.report = report  # one line per connection that failed
        self.listeners: list[tuple[socket.socket, Listener]] = []
        self._commands: dict[int, Command | Dial | None] = {}
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._sockets: set[socket.socket] = set()
        self._channels: set[Channel] = set()
        self._lock = threading.Lock()
        self._closing = threading.Event()

    def open(self) -> list[Listener]:
        """Connect the route and bind every port (all or none)."""
        self._commands = {p.remote: self.route.command(p.remote) for p in self.pairs}
        self.route.start()
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        try:
            for pair in self.pairs:
                sock = socket.socket(family, socket.SOCK_STREAM)
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.bind((self.address, pair.local))
                    sock.listen(128)
                except OSError as exc:
                    sock.close()
                    raise MngrError(
                        f"cannot listen on {self.address}:{pair.local}: {exc.strerror}"
                    ) from None
                bound = Listener(self.address, sock.getsockname()[1], pair.remote)
                self.listeners.append((sock, bound))
        except BaseException:
            self.close()
            raise
        return [bound for _, bound in self.listeners]

    def run(self, announce: Callable[[list[Listener]], None]) -> None:
        """Open, `announce` the bound ports, serve until Ctrl-C (KeyboardInterrupt, raised on),
        and close in every case."""
        try:
            announce(self.open())
            self.serve()
        finally:
            self.close()

    def serve(self, until: threading.Event | None = None) -> None:
        """Accept connections until `until` is set (or Ctrl-C)."""
        by_fd = {sock.fileno(): (sock, bound) for sock, bound in self.listeners}
        while not (until is not None and until.is_set()) and not self._closing.is_set():
            ready, _, _ = select.select(list(by_fd), [], [], _POLL_S)
            for fd in ready:
                sock, bound = by_fd[fd]
                try:
                    conn, _ = sock.accept()
                except OSError:
                    continue
                self._relay(conn, bound.remote)

    def _relay(self, conn: socket.socket, remote: int) -> None:
        conn.setblocking(True)
        command = self._commands[remote]
        if not isinstance(command, Command):
            dial = command or (lambda: _SocketChannel(socket.create_connection((REMOTE, remote))))
            threading.Thread(target=self._carry, args=(conn, remote, dial), daemon=True).start()
            return
        env = {**os.environ, **command.env} if command.env else None
        try:
            proc = _spawn(command.argv, conn.fileno(), conn.fileno(), subprocess.PIPE, env=env)
        except OSError as exc:
            self.report(
                f"{self.host} port {remote}: cannot run {command.argv[0]!r}: {exc.strerror}"
            )
            return
        finally:
            conn.close()  # the command holds the connection now
        with self._lock:
            self._procs.add(proc)
        threading.Thread(target=self._reap, args=(proc, remote), daemon=True).start()

    def _reap(self, proc: subprocess.Popen[bytes], remote: int) -> None:
        assert proc.stderr is not None
        text = proc.stderr.read().decode(errors="replace")
        proc.wait()
        proc.stderr.close()
        with self._lock:
            self._procs.discard(proc)
        if proc.returncode != 0 and not self._closing.is_set():
            why = first_line(_last(text)) or exit_status(proc.returncode)
            self.report(f"{self.host} port {remote}: connection closed: {why}")

    def _carry(self, conn: socket.socket, remote: int, dial: Dial) -> None:
        """Relay one connection through a channel this process opens."""
        try:
            channel = dial()
        except (MngrError, OSError) as exc:
            why = first_line(str(exc)) if isinstance(exc, MngrError) else exc.strerror
            self.report(f"{self.host} port {remote}: connection closed: {why}")
            conn.close()  # after the report: whoever sees the close may end us at once
            return
        with self._lock:
            self._sockets.add(conn)
            self._channels.add(channel)
        up = threading.Thread(target=_upload, args=(conn, channel), daemon=True)
        up.start()
        try:
            for chunk in channel.chunks():
                conn.sendall(chunk)
            conn.shutdown(socket.SHUT_WR)
            if not channel.half_close:
                conn.shutdown(socket.SHUT_RD)  # what the client sends now has nowhere to go
        except (MngrError, OSError) as exc:
            if isinstance(exc, MngrError) and not self._closing.is_set():
                self.report(f"{self.host} port {remote}: connection closed: {first_line(str(exc))}")
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        up.join()
        with self._lock:
            self._sockets.discard(conn)
            self._channels.discard(channel)
        channel.close()
        conn.close()

    def record(self) -> dict[str, object]:
        """What `host forward --format json` prints first: where each port is bound."""
        forwards = [
            {"address": b.address, "port": b.port, "remote_port": b.remote}
            for _, b in self.listeners
        ]
        return {"host": self.host, "forwards": forwards}

    def close(self) -> None:
        """Stop listening, end every connection and process this forward started."""
        self._closing.set()
        for sock, _ in self.listeners:
            sock.close()
        self.listeners = []
        with self._lock:
            procs, sockets, channels = list(self._procs), list(self._sockets), list(self._channels)
        _end(procs)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        closing = [threading.Thread(target=c.close, daemon=True) for c in channels]
        for thread in closing:  # at once: each may wait a moment for its far end's goodbye
            thread.start()
        for thread in closing:
            thread.join(timeout=5)
        self.route.stop()


def _spawn(
    argv: list[str], stdin: int, stdout: int, stderr: int, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    try:
        # Its own session: the terminal's Ctrl-C reaches mngr, which ends it.
        return subprocess.Popen(
            argv, stdin=stdin, stdout=stdout, stderr=stderr, env=env, start_new_session=True
        )
    except FileNotFoundError:
        raise VendorMissingError(f"'{argv[0]}' was not found on PATH") from None


def _end(procs: list[subprocess.Popen[bytes]]) -> None:
    """TERM each process group, then KILL what is left after two seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for proc in procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, sig)
                except OSError:
                    pass
        deadline = time.monotonic() + 2
        for proc in procs:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                pass


class _SocketChannel:
    """A direct connection (a host whose ports are this machine's own)."""

    half_close = True

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def end_input(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    def chunks(self) -> Iterator[bytes]:
        while data := self.sock.recv(262144):
            yield data

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def _upload(conn: socket.socket, channel: Channel) -> None:
    """The client's bytes to the channel, then the end of them."""
    try:
        while data := conn.recv(262144):
            channel.send(data)
        channel.end_input()
    except Exception:  # the channel or the client went away: the other direction ends it
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_RDWR)


def _last(text: str) -> str:
    """A tool's most telling line is its last one."""
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
