"""A process on a real pseudo-terminal: it is the session leader and the pty is its
controlling terminal, so bytes written to the master are keys typed at it and `\\x03` makes
the line discipline send SIGINT to the foreground process group (nobody sends it by hand)."""

from __future__ import annotations

import fcntl
import os
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

RUN_MNGR = Path(__file__).with_name("run_mngr.py")  # mngr with the stand-in backend too
CTRL_C = b"\x03"


def mngr_argv(*args: str) -> list[str]:
    return [sys.executable, str(RUN_MNGR), *args]


class Terminal:
    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))

        def own_the_terminal() -> None:
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(
            argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**os.environ, "TERM": "xterm", **(env or {})},
            preexec_fn=own_the_terminal,  # noqa: PLW1509 (the child only calls setsid/ioctl)
            close_fds=True,
        )
        os.close(slave)
        self.master = master
        self._output = bytearray()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO: every process holding the slave has gone
                return
            if not chunk:
                return
            with self._lock:
                self._output += chunk

    @property
    def output(self) -> str:
        with self._lock:
            return self._output.decode("utf-8", "replace")

    def type(self, data: bytes | str) -> None:
        os.write(self.master, data.encode() if isinstance(data, str) else data)

    def expect(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.output)
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} never appeared; the terminal shows:\n{self.output}")

    def wait(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def close(self) -> None:
        """End whatever the test left on the terminal (its whole process group)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.proc.poll() is None:
            self.proc.wait(10)
        os.close(self.master)


def wait_until(check, timeout: float = 30) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return bool(check())


def local_processes(argv: list[str]) -> list[int]:
    """Pids of this machine whose command line is exactly `argv`."""
    want = "\0".join(argv) + "\0"
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_text() == want:
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids
