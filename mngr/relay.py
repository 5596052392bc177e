"""The server end of exec through `mngr serve` (the protocol: mngr/toolkit/wsexec.py): the
host's transport command runs here with its stdio on pipes (or on a pty, for a terminal),
or, for a port of a host whose ports are this machine's own, a direct connection; its
bytes and its exit status go over the WebSocket. When the socket closes first (the client's
Ctrl-C, a lost network), the process group is ended.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from mngr.errors import UnreachableError, VendorMissingError
from mngr.runner import Command
from mngr.toolkit.wsexec import CHUNK, STDERR, STDOUT, control

POLL_S = 0.5
DRAIN_S = 1.0  # after the process ended, output a child of it keeps open is read this long
KILL_GRACE_S = 2.0

# Makes the pty the controlling terminal of the new session (so Ctrl-C typed on it signals
# the foreground job), then becomes the transport command: Popen cannot do TIOCSCTTY.
_ON_TTY = (
    "import fcntl, os, sys, termios\n"
    "fcntl.ioctl(0, termios.TIOCSCTTY, 0)\n"
    "try:\n"
    "    os.execvp(sys.argv[1], sys.argv[1:])\n"
    "except OSError as exc:\n"
    "    sys.stderr.write(f'mngr: cannot run {sys.argv[1]}: {exc.strerror}\\r\\n')\n"
    "    sys.exit(127)\n"
)


class Session:
    """A running transport command, or a connection: where input goes, where output comes
    from (stream number, fd), and how it ends."""

    def __init__(
        self,
        input_fd: int,
        outputs: list[tuple[int, int]],
        proc: asyncio.subprocess.Process | None = None,
        sock: socket.socket | None = None,
        pty: bool = False,
    ) -> None:
        self.input_fd = input_fd
        self.outputs = outputs
        self.proc = proc
        self.sock = sock
        self.pty = pty
        self.exited_at: float | None = None
        self.input_open = True

    async def write(self, data: bytes) -> None:
        if self.input_open:
            try:
                await _write_all(self.input_fd, data)
            except OSError:  # it stopped reading (exited, closed stdin): the rest is dropped
                self.close_input()

    def close_input(self) -> None:
        if not self.input_open:
            return
        if self.pty:
            try:
                _write_some(self.input_fd, b"\x04")  # the terminal's end of file
            except OSError:
                pass
            return
        self.input_open = False
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        else:
            os.close(self.input_fd)

    def resize(self, cols: int, rows: int) -> None:
        if self.pty:
            _set_size(self.input_fd, cols, rows)

    async def exit_code(self) -> int:
        """Wait for the end: the process's exit status as a shell says it (128 + signal),
        or 0 for a connection."""
        if self.proc is None:
            return 0
        code = await self.proc.wait()
        self.exited_at = time.monotonic()
        return 128 - code if code < 0 else code

    def gave_up(self) -> bool:
        """Stop reading output the process left to a child of its own (a daemon)."""
        return self.exited_at is not None and time.monotonic() - self.exited_at > DRAIN_S

    async def end(self) -> None:
        """End the process group (TERM, then KILL) if it runs, and close every fd."""
        proc = self.proc
        if proc is not None and proc.returncode is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                except OSError:
                    break
                try:
                    await asyncio.wait_for(asyncio.shield(proc.wait()), KILL_GRACE_S)
                    break
                except TimeoutError:
                    pass
        fds = {fd for _, fd in self.outputs}
        if self.input_open and self.sock is None:
            fds.add(self.input_fd)
        for fd in fds:
            if self.sock is None or fd != self.sock.fileno():
                os.close(fd)
        if self.sock is not None:
            self.sock.close()


async def start(command: Command | None, port: int | None, tty: bool, size: tuple[int, int]):
    """Start `command` (on a pty when `tty`), or connect to 127.0.0.1:`port` when there is
    no command (the host's ports are this machine's)."""
    if command is None:
        return await _connect(port or 0)
    env = {**os.environ, **command.env} if command.env else None
    argv = command.argv
    if tty:
        master, child = os.openpty()
        _set_size(master, *size)
        argv = [sys.executable, "-I", "-c", _ON_TTY, *argv]
        child_fds, session = (child, child, child), Session(master, [(STDOUT, master)], pty=True)
    else:
        stdin, stdout, stderr = os.pipe(), os.pipe(), os.pipe()
        child_fds = (stdin[0], stdout[1], stderr[1])
        session = Session(stdin[1], [(STDOUT, stdout[0]), (STDERR, stderr[0])])
    try:
        session.proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=child_fds[0],
            stdout=child_fds[1],
            stderr=child_fds[2],
            env=env,
            cwd=command.cwd,
            start_new_session=True,
        )
    except OSError as exc:
        await session.end()
        if isinstance(exc, FileNotFoundError):
            raise VendorMissingError(f"'{argv[0]}' was not found on the server's PATH") from None
        raise VendorMissingError(f"cannot run '{argv[0]}' on the server: {exc.strerror}") from None
    finally:
        for fd in set(child_fds):
            os.close(fd)
    for fd in {session.input_fd, *(fd for _, fd in session.outputs)}:
        os.set_blocking(fd, False)
    return session


async def _connect(port: int) -> Session:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        raise UnreachableError(
            f"cannot connect to port {port} in the host: {exc.strerror or exc}"
        ) from None
    return Session(sock.fileno(), [(STDOUT, sock.fileno())], sock=sock)


async def relay(websocket: Any, session: Session) -> None:
    """Input from the socket to the session and its output back, then its exit status; the
    session is ended however this ends."""

    async def pump(stream: int, fd: int) -> None:
        prefix = bytes([stream])
        while data := await _read(fd, session.gave_up):
            await websocket.send_bytes(prefix + data)

    async def output() -> None:
        pumps = [asyncio.ensure_future(pump(stream, fd)) for stream, fd in session.outputs]
        try:
            code = await session.exit_code() if session.proc else 0
            await asyncio.gather(*pumps)
        finally:
            for task in pumps:
                task.cancel()
        await websocket.send_text(control("exit", code=code))
        await websocket.close()

    async def input() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("bytes") is not None:
                await session.write(message["bytes"])
                continue
            try:
                order = json.loads(message.get("text") or "")
            except ValueError:
                continue
            if not isinstance(order, dict):
                continue
            if order.get("type") == "eof":
                session.close_input()
            elif order.get("type") == "resize":
                cols, rows = order.get("cols"), order.get("rows")
                if isinstance(cols, int) and isinstance(rows, int):
                    session.resize(cols, rows)

    tasks = [asyncio.ensure_future(output()), asyncio.ensure_future(input())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await session.end()


def _set_size(fd: int, cols: int, rows: int) -> None:
    import fcntl
    import struct
    import termios

    size = struct.pack("HHHH", min(max(rows, 1), 10000), min(max(cols, 1), 10000), 0, 0)
    try:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, size)
    except OSError:
        pass


async def _wait(fd: int, add: Callable[..., None], remove: Callable[[int], bool]) -> bool:
    """Wait up to POLL_S for `fd` to be ready; False when it was not."""
    ready = asyncio.get_running_loop().create_future()
    add(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await asyncio.wait_for(ready, POLL_S)
        return True
    except TimeoutError:
        return False
    finally:
        remove(fd)


async def _read(fd: int, give_up: Callable[[], bool]) -> bytes:
    """The next bytes from `fd`; b"" at its end, or once `give_up()` says so while idle."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            return os.read(fd, CHUNK)
        except BlockingIOError:
            pass
        except OSError:  # EIO: every process holding the pty's other side has ended
            return b""
        if not await _wait(fd, loop.add_reader, loop.remove_reader) and give_up():
            return b""


def _write_some(fd: int, data: bytes | memoryview) -> int:
    try:
        return os.write(fd, data)
    except BlockingIOError:
        return 0


async def _write_all(fd: int, data: bytes) -> None:
    loop = asyncio.get_running_loop()
    view = memoryview(data)
    while view:
        written = _write_some(fd, view)
        view = view[written:]
        if view and not written:
            await _wait(fd, loop.add_writer, loop.remove_writer)
