"""Runs vendor commands: argv lists only, a deadline per call, one error type.

The runner never uses a shell. Secrets reach a vendor through ``Command.env`` or
``Command.stdin``, never argv, so an error message (which quotes argv) cannot leak one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from dataclasses import dataclass, field

from mngr.errors import (
    InterruptedByUser,
    VendorCommandError,
    VendorMissingError,
    VendorTimeoutError,
)

# Set when the user interrupts (Ctrl-C / SIGTERM): running commands are killed and plans
# stop, then run the undo of what they already allocated (undo commands ignore it).
CANCELLED = threading.Event()

_POLL_S = 0.1


@dataclass(frozen=True)
class Command:
    """One vendor invocation."""

    argv: list[str]
    timeout_s: float = 60.0
    stdin: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    # Run after Ctrl-C ended this command, where the vendor does not pass the interrupt on
    # (a `docker exec` without a terminal leaves its process running in the container).
    on_interrupt: Command | None = None


@dataclass(frozen=True)
class Completed:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


class Runner:
    """Executes Commands. Injected into backends so tests can swap or observe it."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []  # argv of every command run, for diagnostics
        self._lock = threading.Lock()

    def run(self, command: Command, *, check: bool = True, cancellable: bool = True) -> Completed:
        with self._lock:
            self.calls.append(list(command.argv))
        env = {**os.environ, **command.env} if command.env else None
        try:
            proc = subprocess.Popen(
                command.argv,
                stdin=subprocess.PIPE if command.stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                cwd=command.cwd,
                start_new_session=True,  # the terminal's Ctrl-C reaches us, not the vendor
            )
        except FileNotFoundError as exc:
            raise VendorMissingError(
                f"'{command.argv[0]}' was not found on PATH; install it or set 'binary' "
                "in the provider's settings"
            ) from exc
        except PermissionError as exc:
            raise VendorMissingError(f"'{command.argv[0]}' is not executable") from exc
        stdout, stderr = self._communicate(proc, command, cancellable)
        done = Completed(command.argv, proc.returncode, stdout or "", stderr or "")
        if check and done.returncode != 0:
            raise VendorCommandError(command.argv, done.returncode, done.stdout, done.stderr)
        return done

    def _communicate(
        self, proc: subprocess.Popen[str], command: Command, cancellable: bool
    ) -> tuple[str, str]:
        remaining = command.timeout_s
        pending_input = command.stdin
        while True:
            step = min(_POLL_S, remaining) if cancellable else remaining
            try:
                return proc.communicate(input=pending_input, timeout=max(step, 0.001))
            except subprocess.TimeoutExpired:
                pending_input = None
                remaining -= step
                if cancellable and CANCELLED.is_set():
                    _kill(proc)
                    raise InterruptedByUser("interrupted") from None
                if remaining <= 0:
                    _kill(proc)
                    raise VendorTimeoutError(
                        f"'{os.path.basename(command.argv[0])}' did not answer within "
                        f"{command.timeout_s:g}s"
                    ) from None


def _kill(proc: subprocess.Popen[str]) -> None:
    if proc.pid > 1:  # a real child, leader of its own session
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            proc.kill()
    else:
        proc.kill()
    try:
        proc.communicate(timeout=5)
    except (subprocess.TimeoutExpired, ValueError, OSError):
        pass
