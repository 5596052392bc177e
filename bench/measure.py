"""Shared measuring for the bench scripts: run a command several times in a fresh process,
report the median wall time and the peak resident memory (of the process and any children
it waited for), and print rows as a table."""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class Measurement:
    label: str
    median_ms: float
    peak_mib: float
    runs: int
    target: str = ""


def measure(
    label: str,
    argv: Sequence[str],
    *,
    runs: int = 7,
    env: dict[str, str] | None = None,
    target: str = "",
    ok_codes: tuple[int, ...] = (0,),
) -> Measurement:
    walls: list[float] = []
    peaks: list[float] = []
    full_env = {**os.environ, **(env or {})}
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=full_env
        )
        _, status, usage = os.wait4(proc.pid, 0)
        walls.append((time.perf_counter() - start) * 1000)
        code = os.waitstatus_to_exitcode(status)
        proc.returncode = code
        if code not in ok_codes:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise SystemExit(f"{label}: {' '.join(argv)} exited {code}: {err[-500:]}")
        if proc.stderr:
            proc.stderr.close()
        peaks.append(usage.ru_maxrss / 1024)  # KiB on Linux
    return Measurement(label, statistics.median(walls), max(peaks), runs, target)


def print_table(title: str, rows: list[Measurement]) -> str:
    lines = [
        f"### {title}",
        "",
        "| what | median wall (ms) | peak RSS (MiB) | runs | target |",
        "|---|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.label} | {r.median_ms:.0f} | {r.peak_mib:.1f} | {r.runs} | {r.target} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    return text


def machine() -> str:
    import platform

    return (
        f"{platform.node() or 'machine'}: {os.cpu_count()} cores, {platform.machine()}, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )
