"""Plans: multi-step work where each allocating step carries its undo.

A failed step, a timeout or an interrupt runs the undo of every step already done (newest
first), so a failed create leaves nothing behind. `--dry-run` prints the same plan.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from mngr.errors import (
    ConflictError,
    InterruptedByUser,
    MngrError,
    NotFoundError,
    UnreachableError,
    VendorMissingError,
    VendorTimeoutError,
)
from mngr.runner import CANCELLED, Command, Completed


class Runs(Protocol):
    """What runs a plan's commands (a backend: it classifies its vendor's errors)."""

    def run(self, command: Command, *, cancellable: bool = True) -> Completed: ...


class Ref(str):
    """An argv placeholder filled at run time from what an earlier step parsed."""

    __slots__ = ()


Context = dict[str, Any]


@dataclass(frozen=True)
class Poll:
    """Repeat a step's command until `done(stdout, ctx)` is true (it raises to give up),
    pausing `delays_s` between calls (the last one repeats), for at most `timeout_s`."""

    done: Callable[[str, Context], bool]
    timeout_s: float
    delays_s: tuple[float, ...] = (1.0, 2.0, 3.0, 5.0, 10.0)
    hint: str = ""  # added to the timeout message: the setting that bounds the wait


@dataclass
class Step:
    """One step: a vendor command (with an optional parser, or polled until done), an
    in-process action, or sub-steps that depend on what earlier steps found (`expand`)."""

    description: str
    command: Command | None = None
    parse: Callable[[str, Context], None] | None = None
    action: Callable[[Context], None] | None = None
    poll: Poll | None = None
    # Run as part of this step (one EBS snapshot deletion per snapshot found, say).
    expand: Callable[[Context], list[Step]] | None = None
    undo: Step | None = None
    # Run the undo even when this step itself failed (it may have allocated before failing).
    # Never applied to a conflict: the thing that exists then belongs to someone else.
    undo_if_failed: bool = False
    # A NotFoundError from this step's command counts as done (deleting what is gone).
    missing_ok: bool = False

    def render(self) -> str:
        if self.command is None:
            return f"# {self.description}"
        argv = shlex.join(str(a) if not isinstance(a, Ref) else f"<{a}>" for a in self.command.argv)
        if self.poll is not None:
            return f"# {self.description}: poll {argv} (at most {self.poll.timeout_s:g}s)"
        return argv


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)
    # Builds the verb's result (usually a Host) from the context once every step is done.
    finish: Callable[[Context], Any] | None = None
    context: Context = field(default_factory=dict)
    # The step running now (its description), for a progress line; "" before and after.
    current: str = ""

    def render(self) -> list[str]:
        return [step.render() for step in self.steps]


def _never_reached(exc: BaseException) -> bool:
    """The vendor could not reach its provider at all (not a timeout: that may have acted)."""
    return isinstance(exc, UnreachableError) and not isinstance(exc, VendorTimeoutError)


def execute(plan: Plan, backend: Runs) -> Any:
    ctx = plan.context
    done: list[Step] = []
    unreached: Step | None = None  # a failed step whose provider was never reached
    try:
        for step in plan.steps:
            if CANCELLED.is_set():
                raise InterruptedByUser("interrupted")
            plan.current = step.description
            try:
                _run_step(step, ctx, backend, cancellable=True)
            except BaseException as exc:
                # A conflict is someone else's; a vendor that is missing never started.
                if step.undo_if_failed and not isinstance(exc, ConflictError | VendorMissingError):
                    done.append(step)
                    unreached = step if _never_reached(exc) else None
                raise
            done.append(step)
        return plan.finish(ctx) if plan.finish else None
    except BaseException as exc:
        plan.current = "undoing"
        leftovers = _undo(done, ctx, backend, unreached)
        if leftovers and isinstance(exc, MngrError):
            exc.message += "; could not undo: " + "; ".join(leftovers)
        raise


def _undo(
    done: list[Step], ctx: Context, backend: Runs, unreached: Step | None = None
) -> list[str]:
    leftovers: list[str] = []
    for step in reversed(done):
        if step.undo is None:
            continue
        try:
            _run_step(step.undo, ctx, backend, cancellable=False)
        except Exception as exc:  # keep undoing the rest; report what is left
            if step is unreached and _never_reached(exc):
                continue  # neither the step nor its undo reached the provider: nothing was made
            leftovers.append(f"{step.undo.description} ({exc})")
    return leftovers


def _run_step(step: Step, ctx: Context, backend: Runs, *, cancellable: bool) -> None:
    if step.command is not None and step.poll is not None:
        _poll(step.description, step.poll, _resolve(step.command, ctx), ctx, backend, cancellable)
    elif step.command is not None:
        command = _resolve(step.command, ctx)
        try:
            out = backend.run(command, cancellable=cancellable)
        except NotFoundError:
            if step.missing_ok:
                return
            raise
        if step.parse is not None:
            step.parse(out.stdout, ctx)
    elif step.action is not None:
        try:
            step.action(ctx)
        except OSError as exc:  # a file vanished or is unwritable: say which, not a traceback
            detail = exc.strerror or str(exc)
            if exc.filename:
                detail += f": {exc.filename}"
            raise MngrError(f"{step.description}: {detail}") from exc
    if step.expand is not None:
        for sub in step.expand(ctx):
            _run_step(sub, ctx, backend, cancellable=cancellable)


def _poll(
    what: str, poll: Poll, command: Command, ctx: Context, backend: Runs, cancellable: bool
) -> None:
    deadline = time.monotonic() + poll.timeout_s
    delays = iter(poll.delays_s)
    delay = 0.0
    while not poll.done(backend.run(command, cancellable=cancellable).stdout, ctx):
        delay = next(delays, delay)
        if time.monotonic() + delay > deadline:
            hint = f" ({poll.hint})" if poll.hint else ""
            raise VendorTimeoutError(f"{what}: gave up after {poll.timeout_s:g}s{hint}")
        if not cancellable:
            time.sleep(delay)
        elif CANCELLED.wait(delay):
            raise InterruptedByUser("interrupted")


def _resolve(command: Command, ctx: Context) -> Command:
    if not any(isinstance(a, Ref) for a in command.argv):
        return command
    argv = [str(ctx[a]) if isinstance(a, Ref) else a for a in command.argv]
    return Command(argv, command.timeout_s, command.stdin, command.env, command.cwd)
