"""Exec over a WebSocket: the protocol of `mngr serve`'s exec route, and its client end,
`mngr __remote-exec` (what the `mngr` backend's exec, shell and port commands run).

One WebSocket to `/v1/hosts/{ref}/exec?provider=P`, with the bearer token of every route:

    client  first a JSON text: {"argv": [...]} | {"shell": true} | {"port": N},
            with "tty", "detach", "cols", "rows";
            then binary messages (stdin), and JSON texts {"type": "eof"} (stdin ended) and
            {"type": "resize", "cols": C, "rows": R}
    server  {"type": "started"} once the host's transport command runs, or
            {"type": "error", "kind": K, "message": M}; then binary messages whose first
            byte says the stream (1 stdout, 2 stderr); last {"type": "exit", "code": N}

Closing the socket (Ctrl-C) ends the process on the server. The token comes from the
environment variable TOKEN_ENV, never argv. `host forward` opens a `PortChannel` per
connection in its own process.
"""

from __future__ import annotations

import json
import os
import select
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from mngr.errors import (
    EXIT_INTERRUPTED,
    MngrError,
    UnauthorisedError,
    UnreachableError,
    VendorMissingError,
    VendorOutputError,
    VendorTimeoutError,
)

TOKEN_ENV = "MNGR_REMOTE_TOKEN"
COMMAND = "__remote-exec"  # mngr's hidden subcommand (answered in mngr.entry)
STDOUT, STDERR = 1, 2
CHUNK = 1 << 16
MAX_MESSAGE = 1 << 20
MAX_TEXT = 500  # of a server's error message shown


class ServerBusy(UnreachableError):
    """The server had no room for one more session just then (it says: retry shortly)."""


def control(message_type: str, **fields: Any) -> str:
    return json.dumps({"type": message_type, **fields})


def parse_control(text: str) -> dict[str, Any]:
    """A server's JSON text message; anything else is bad output (the server is untrusted)."""
    try:
        message = json.loads(text)
    except ValueError:
        message = None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise VendorOutputError("the server sent a message mngr cannot read")
    return message


def one_line(text: str) -> str:
    """A server's text as one line of at most MAX_TEXT characters (escaped when printed)."""
    return " ".join(text.split())[:MAX_TEXT]


def server_error(message: dict[str, Any], server: str) -> MngrError:
    """The error a server reported ({"kind", "message"}), as mngr's own error of that kind."""
    from mngr.api import ERROR_OF_KIND

    text = one_line(str(message.get("message") or "no error text"))
    if message.get("kind") == "busy":
        return ServerBusy(f"{server}: {text}")
    return ERROR_OF_KIND.get(str(message.get("kind")), MngrError)(f"{server}: {text}")


def main(args: list[str]) -> int:
    """`mngr __remote-exec URL [--ca-file F] [--timeout S] [--tty] [--detach]
    (--shell | --port N | -- ARGV...)`: URL is the http(s) URL of the host's exec route."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(prog=f"mngr {COMMAND}")
    parser.add_argument("url")
    parser.add_argument("--ca-file")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--tty", action="store_true")
    parser.add_argument("--detach", action="store_true")
    parser.add_argument("--shell", action="store_true")
    parser.add_argument("--port", type=int)
    command = args.index("--") if "--" in args else len(args)
    options = parser.parse_args(args[:command])
    start: dict[str, Any] = {"tty": options.tty, "detach": options.detach}
    if options.shell:
        start["shell"] = True
    elif options.port is not None:
        start["port"] = options.port
    else:
        start["argv"] = args[command + 1 :]
    raw = options.tty and os.isatty(0)
    if raw:
        start.update(_terminal_size())
    token = os.environ.pop(TOKEN_ENV, "") or None
    try:
        with connect(options.url, token, options.ca_file, options.timeout) as ws:
            return Session(ws, origin(options.url)).run(start, options.timeout, raw)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # our reader went away (`| head`): as a shell says of SIGPIPE
        return 128 + signal.SIGPIPE
    except MngrError as exc:
        from mngr import output

        output.error(str(exc))
        return exc.exit_code


def origin(url: str) -> str:
    """The server a URL names (scheme://host:port), for messages."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def connect(url: str, token: str | None, ca_file: str | None, timeout: float) -> Any:
    """The open WebSocket, or one MngrError; the whole opening (TCP, TLS, upgrade) has
    `timeout` seconds, so a server that accepts and never answers cannot hold us."""
    try:
        from websockets.exceptions import InvalidHandshake, InvalidStatus
        from websockets.sync.client import connect as ws_connect
    except ImportError:
        raise VendorMissingError(
            "exec through a mngr server needs the websockets package: pip install websockets"
        ) from None
    from mngr import __version__
    from mngr.toolkit.http import is_loopback

    parts = urllib.parse.urlsplit(url)
    server = origin(url)
    context = None
    if parts.scheme == "https":
        import ssl

        context = ssl.create_default_context(cafile=ca_file)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        return ws_connect(
            urllib.parse.urlunsplit(parts._replace(scheme=parts.scheme.replace("http", "ws"))),
            ssl=context,
            additional_headers=headers,
            user_agent_header=f"mngr/{__version__}",
            proxy=None if is_loopback(parts.hostname or "") else True,
            compression=None,
            open_timeout=timeout,
            close_timeout=1,
            max_size=MAX_MESSAGE,
        )
    except InvalidStatus as exc:
        raise refused(server, exc.response.status_code, exc.response.body or b"") from None
    except TimeoutError:
        raise VendorTimeoutError(f"{server} did not answer within {timeout:g}s") from None
    except InvalidHandshake as exc:
        raise VendorOutputError(f"{server} did not open a WebSocket ({exc})") from None
    except OSError as exc:
        raise UnreachableError(f"cannot reach {server}: {exc.strerror or exc}") from None


def refused(server: str, status: int, body: bytes) -> MngrError:
    """The error for an upgrade the server answered with an HTTP error status."""
    from mngr.api import error_class
    from mngr.toolkit.http import status_error

    error = status_error(status, "", body)
    text = one_line(error.message)
    if status in (401, 403):
        return UnauthorisedError(f"{server}: the server refused the token: {text}")
    if error.error_kind == "busy":
        return ServerBusy(f"{server}: {text} (HTTP {status})")
    return error_class(status, error.error_kind)(f"{server}: {text} (HTTP {status})")


class Session:
    """Stdin to the socket, the socket to stdout and stderr, until the server says the exit."""

    def __init__(self, ws: Any, server: str) -> None:
        self.ws = ws
        self.server = server

    def run(self, start: dict[str, Any], timeout: float, raw: bool) -> int:
        from websockets.exceptions import ConnectionClosed

        try:
            self.start(start, timeout)
            with _raw_terminal(raw, self.resize):
                threading.Thread(target=self.pump_stdin, daemon=True).start()
                return self.pump_output()
        except ConnectionClosed:
            raise UnreachableError(
                f"{self.server} closed the connection before the command ended"
            ) from None

    def start(self, start: dict[str, Any], timeout: float) -> None:
        """Send the start message; return once the server says the command runs."""
        self.ws.send(json.dumps(start))
        try:
            first = parse_control(self.ws.recv(timeout=timeout))
        except TimeoutError:
            raise VendorTimeoutError(
                f"{self.server} did not start the command within {timeout:g}s"
            ) from None
        if first["type"] != "started":
            raise self.unexpected(first)

    def pump_output(self) -> int:
        for message in self.ws:
            if isinstance(message, bytes):
                if message[:1] in (b"\x01", b"\x02"):
                    _write_all(message[0], memoryview(message)[1:])
                continue
            answer = parse_control(message)
            if answer["type"] != "exit":
                raise self.unexpected(answer)
            code = answer.get("code")
            if not isinstance(code, int) or not 0 <= code <= 255:
                raise VendorOutputError(f"{self.server} sent an exit code mngr cannot read")
            return code
        raise UnreachableError(f"{self.server} closed the connection before the command ended")

    def unexpected(self, message: dict[str, Any]) -> MngrError:
        if message["type"] == "error":
            return server_error(message, self.server)
        return VendorOutputError(f"{self.server} sent a message mngr cannot read")

    def pump_stdin(self) -> None:
        """Stdin to the socket, then the end of it (also when stdin cannot be read)."""
        from websockets.exceptions import ConnectionClosed

        try:
            try:
                while data := _read(0):
                    self.ws.send(data)
            except OSError:
                pass
            self.ws.send(control("eof"))
        except ConnectionClosed:
            pass

    def resize(self) -> None:
        """The terminal's new size to the server; from a signal handler, so on a thread of
        its own (the main thread may hold the socket's lock in recv)."""
        size = _terminal_size()

        def send() -> None:
            try:
                self.ws.send(control("resize", **size))
            except Exception:  # the session is ending: nothing to resize
                pass

        threading.Thread(target=send, daemon=True).start()


class PortChannel:
    """One connection to 127.0.0.1:PORT inside a host over its own WebSocket, opened by the
    process that wants it (`host forward` through a server: no process per connection)."""

    half_close = False  # the server ends the session when the port's end closes

    def __init__(
        self, url: str, token: str | None, ca_file: str | None, timeout: float, port: int
    ) -> None:
        import random
        import time

        self.server = origin(url)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.ws = self._open(url, token, ca_file, timeout, port)
                return
            except ServerBusy:  # many connections at once: the server asks to retry shortly
                if time.monotonic() > deadline:
                    raise
                time.sleep(random.uniform(0.05, 0.25))

    def _open(
        self, url: str, token: str | None, ca_file: str | None, timeout: float, port: int
    ) -> Any:
        from websockets.exceptions import ConnectionClosed

        ws = connect(url, token, ca_file, timeout)
        try:
            Session(ws, self.server).start({"port": port}, timeout)
        except ConnectionClosed:
            ws.close()
            raise UnreachableError(f"{self.server} closed the connection") from None
        except BaseException:
            ws.close()
            raise
        return ws

    def send(self, data: bytes) -> None:
        self.ws.send(data)

    def end_input(self) -> None:
        self.ws.send(control("eof"))

    def chunks(self) -> Iterator[bytes]:
        """What the port sends, until it closes (the server's exit message)."""
        from websockets.exceptions import ConnectionClosed

        try:
            for message in self.ws:
                if isinstance(message, bytes):
                    if message[:1] == b"\x01":
                        yield message[1:]
                    continue
                answer = parse_control(message)
                if answer["type"] == "exit":
                    return
                raise Session(self.ws, self.server).unexpected(answer)
        except ConnectionClosed:
            pass
        raise UnreachableError(f"{self.server} closed the connection before the port did")

    def close(self) -> None:
        self.ws.close()


def _terminal_size() -> dict[str, int]:
    """{"cols", "rows"} of stdin's terminal; nothing when it says none (0x0)."""
    try:
        cols, rows = os.get_terminal_size(0)
    except OSError:
        return {}
    return {"cols": cols, "rows": rows} if cols and rows else {}


def _write_all(channel: int, data: memoryview) -> None:
    """All of it, also to a descriptor its other user made non-blocking (rsync does so with
    the pipes of the remote shell it runs us as)."""
    fd = STDOUT if channel == STDOUT else STDERR
    while data:
        try:
            data = data[os.write(fd, data) :]
        except BlockingIOError:
            select.select([], [fd], [])


def _read(fd: int) -> bytes:
    """A chunk, waiting when the descriptor is non-blocking and has nothing yet."""
    while True:
        try:
            return os.read(fd, CHUNK)
        except BlockingIOError:
            select.select([fd], [], [])


@contextmanager
def _raw_terminal(raw: bool, on_resize: Callable[[], None]) -> Iterator[None]:
    """Stdin's terminal in raw mode (every key goes to the remote, Ctrl-C too), its size
    sent on each SIGWINCH, and both restored on the way out."""
    if not raw:
        yield
        return
    import signal
    import termios
    import tty

    saved = termios.tcgetattr(0)
    tty.setraw(0)
    handler = signal.signal(signal.SIGWINCH, lambda *_: on_resize())
    try:
        yield
    finally:
        signal.signal(signal.SIGWINCH, handler)
        termios.tcsetattr(0, termios.TCSADRAIN, saved)
