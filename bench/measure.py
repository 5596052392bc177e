"""Shared measuring for the bench scripts: run a command several times in a fresh process,
report the median wall time and the peak resident memory (of the process and any children
it waited for), and print rows as a table."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass
class Measurement:
    label: str
    median_ms: float
    peak_mib: float
    runs: int
    target: str = ""
    cpu_ms: float = 0.0  # median user + system time: steadier than wall time on a busy machine
    # Instructions the program ran (valgrind callgrind), in millions: the same on a busy
    # machine as on an idle one, so two commits compare even when wall times cannot.
    minstr: float | None = None


# Each run starts from this small process, not from the bench's own (larger) Python: a
# child's peak RSS includes the memory of the process it was forked from, so forking straight
# from here would put a floor of this script's size under every figure.
_TRAMPOLINE = """
import os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    try:
        os.execvp(sys.argv[1], sys.argv[1:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - start
code = os.waitstatus_to_exitcode(status)
print(code, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss)
"""


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
    cpus: list[float] = []
    full_env = bench_env(env)
    for _ in range(runs):
        proc = subprocess.run(
            [sys.executable, "-I", "-S", "-c", _TRAMPOLINE, *argv],
            capture_output=True,
            env=full_env,
        )
        code_text, wall_s, cpu_s, maxrss_kib = proc.stdout.split()
        code = int(code_text)
        if code not in ok_codes:
            err = proc.stderr.decode(errors="replace")
            raise SystemExit(f"{label}: {' '.join(argv)} exited {code}: {err[-500:]}")
        walls.append(float(wall_s) * 1000)
        cpus.append(float(cpu_s) * 1000)
        peaks.append(int(maxrss_kib) / 1024)  # KiB on Linux
    return Measurement(
        label, statistics.median(walls), max(peaks), runs, target, statistics.median(cpus)
    )


def bench_env(env: dict[str, str] | None) -> dict[str, str]:
    """The environment of a measured run. An installed mngr has its bytecode compiled; a
    PYTHONDONTWRITEBYTECODE=1 inherited from a sandbox would compile every module on every
    run (about 60 ms), so it is dropped."""
    full = {**os.environ, **(env or {})}
    full.pop("PYTHONDONTWRITEBYTECODE", None)
    return full


def instructions(argv: Sequence[str], env: dict[str, str] | None = None) -> float | None:
    """Millions of instructions one run executes, counted by valgrind (None without it)."""
    import re
    import shutil

    if shutil.which("valgrind") is None:
        return None
    full_env = bench_env(env)
    subprocess.run(argv, capture_output=True, env=full_env)  # bytecode written, caches warm
    proc = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv],
        capture_output=True,
        env=full_env,
    )
    found = re.search(rb"Collected : (\d+)", proc.stderr)
    return int(found.group(1)) / 1e6 if found else None


def print_table(title: str, rows: list[Measurement]) -> str:
    lines = [
        f"### {title}",
        "",
        "| what | median wall (ms) | median CPU (ms) | peak RSS (MiB) | runs | target "
        "| instructions (M) |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        minstr = "" if r.minstr is None else f"{r.minstr:.0f}"
        lines.append(
            f"| {r.label} | {r.median_ms:.0f} | {r.cpu_ms:.0f} | {r.peak_mib:.1f} | {r.runs} "
            f"| {r.target} | {minstr} |"
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


def median_ms(fn: Callable[[], object], runs: int) -> float:
    """Median wall time of an in-process call, in ms."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)
