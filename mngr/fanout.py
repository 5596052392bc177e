"""Fan-out: run one function over many items concurrently, each with a deadline, and hand
back every result or error as data. Core, so a backend (a pool of machines) may use it
without importing the engine."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from mngr.errors import InterruptedByUser, UnreachableError
from mngr.runner import CANCELLED

T = TypeVar("T")
R = TypeVar("R")

UNDO_GRACE_S = 120.0


@dataclass
class Outcome:
    """The result of one fanned-out item: a value or an error, never both."""

    item: Any
    value: Any = None
    error: BaseException | None = None


# Waiting: called about ten times a second with the items not done yet and the seconds
# waited, then once with no items at the end (a terminal's progress line clears itself).
Waiting = Callable[[list[Any], float], None]


def fan_out(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    jobs: int,
    deadline_s: float | None = None,
    waiting: Waiting | None = None,
) -> list[Outcome]:
    """Run fn over items on at most `jobs` daemon threads, in order of items.

    An item still running at the deadline becomes a timeout error; it never blocks the
    others. On Ctrl-C the work is cancelled and given time to undo what it allocated.
    """
    items = list(items)
    outcomes = [Outcome(item) for item in items]
    todo: queue.Queue[int] = queue.Queue()
    for index in range(len(items)):
        todo.put(index)
    finished: queue.Queue[int] = queue.Queue()

    def worker() -> None:
        while True:
            try:
                index = todo.get_nowait()
            except queue.Empty:
                return
            try:
                outcomes[index].value = fn(items[index])
            except BaseException as exc:  # noqa: BLE001 - handed to the caller as data
                outcomes[index].error = exc
            finished.put(index)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(min(jobs, len(items)))]
    for thread in threads:
        thread.start()
    pending = set(range(len(items)))
    start = time.monotonic()
    try:
        while pending:
            if waiting is not None:
                waiting([items[i] for i in sorted(pending)], time.monotonic() - start)
            wait = 0.1
            if deadline_s is not None:
                left = deadline_s - (time.monotonic() - start)
                if left <= 0:
                    break
                wait = min(wait, left)
            try:
                pending.discard(finished.get(timeout=wait))
            except queue.Empty:
                continue
    except KeyboardInterrupt:
        CANCELLED.set()
        end = time.monotonic() + UNDO_GRACE_S
        for thread in threads:
            thread.join(max(0.0, end - time.monotonic()))
        # A MngrError, not a bare KeyboardInterrupt: it says what each item came to.
        interrupted = InterruptedByUser("interrupted")
        interrupted.outcomes = outcomes
        raise interrupted from None
    finally:
        if waiting is not None:
            waiting([], time.monotonic() - start)
    for index in pending:
        outcomes[index].error = UnreachableError(f"did not answer within {deadline_s:g}s")
    return outcomes
