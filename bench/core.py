"""Start-up and core-path timings: `--version`, a TAB, `--help` and a list of 100 local hosts.

Each row runs the command N times, each in a fresh process with its own empty HOME, and
reports the median wall time and the peak RSS (from wait4's rusage). Targets from issue 2
(2-core machine): --version < 150 ms and < 40 MiB, completion < 80 ms, list of 100 local
hosts < 300 ms.

With --instructions, each row also counts the instructions of one run under valgrind
(callgrind): a figure that a busy machine does not change, to compare two commits.

Run: python bench/core.py [--runs N] [--mngr PATH] [--instructions]
(default mngr: the console script beside this Python, else `python -m mngr`).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import Measurement, instructions, machine, measure, print_table  # noqa: E402

HOSTS = 100


def mngr_command(explicit: str | None) -> list[str]:
    if explicit:
        return [explicit]
    script = Path(sys.executable).with_name("mngr")
    return [str(script)] if script.exists() else [sys.executable, "-m", "mngr"]


def isolated_env(home: Path) -> dict[str, str]:
    return {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "NO_COLOR": "1",
    }


def rows(mngr: list[str], base: Path, runs: int, count: bool = False) -> list[Measurement]:
    env = isolated_env(base)
    names = [f"h{i:03d}" for i in range(HOSTS)]
    subprocess.run(
        [*mngr, "host", "create", *names, "--provider", "local", "--format", "json"],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        check=True,
    )

    def row(label: str, args: list[str], target: str = "") -> Measurement:
        result = measure(label, [*mngr, *args], runs=runs, env=env, target=target)
        if count:
            result.minstr = instructions([*mngr, *args], env)
        return result

    # What the bash script runs for `mngr host destroy <TAB>` and `mngr host <TAB>`.
    return [
        row("mngr --version", ["--version"], "< 150 ms, < 40 MiB"),
        row("TAB: mngr host <TAB>", ["__complete", "bash", "--", "host", ""], "< 80 ms"),
        row(
            f"TAB: mngr host destroy <TAB> ({HOSTS} hosts)",
            ["__complete", "bash", "--", "host", "destroy", ""],
            "< 80 ms",
        ),
        row("mngr --help", ["--help"]),
        row(
            f"mngr host list -p local ({HOSTS} hosts)", ["host", "list", "-p", "local"], "< 300 ms"
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--mngr", help="mngr executable to measure")
    parser.add_argument(
        "--instructions", action="store_true", help="also count instructions with valgrind"
    )
    args = parser.parse_args()
    mngr = mngr_command(args.mngr)
    with tempfile.TemporaryDirectory() as tmp:
        print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f}")
        print(f"mngr: {' '.join(mngr)}\n")
        measured = rows(mngr, Path(tmp), args.runs, args.instructions)
        print_table(f"Core paths, median of {args.runs} runs", measured)


if __name__ == "__main__":
    main()
