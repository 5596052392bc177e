"""Creates killed at a chosen step (SIGKILL of mngr itself), for the gc tests: what is left is
exactly what such a create leaves. Two ways, neither a hook in mngr:

- `vendor(folder, real, kill_after=TEXT)`: a script for a provider's `binary` setting that
  runs the real vendor CLI, then SIGKILLs mngr (its parent) once a call's arguments contain
  TEXT. It can also show given EC2 instances as `pending` since STUCK_SINCE in
  `describe-instances` (moto's never pend), as an instance stuck pending shows on EC2.
- `run_killed(step, *args)`: for a backend with no vendor between (local), the mngr console
  entry run here, SIGKILLing itself once the plan step whose description starts with `step`
  is done.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STUCK_SINCE = "2026-01-01T00:00:00+00:00"  # when a pending instance shown here was launched


def vendor(
    folder: Path, real: str, *, kill_after: str = "", pending: list[str] | tuple[str, ...] = ()
) -> str:
    """The path of a wrapper of the vendor CLI `real`."""
    path = folder / f"killing-{Path(real).name}"
    args = [sys.executable, __file__, "--vendor", real, kill_after, ",".join(pending)]
    path.write_text(f'#!/bin/sh\nexec {shlex.join(args)} "$@"\n')
    path.chmod(0o755)
    return str(path)


def run_killed(*args: str, step: str = "") -> subprocess.CompletedProcess[str]:
    """`mngr ARGS` as its own process, which must die by SIGKILL: from a `vendor` wrapper, or
    (given `step`) from itself after that plan step."""
    how = [__file__, "--mngr", step] if step else ["-m", "mngr"]
    done = subprocess.run(
        [sys.executable, *how, *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == -signal.SIGKILL, (done.returncode, done.stderr)
    return done


def _as_pending(out: str, ids: set[str]) -> str:
    doc = json.loads(out)
    for reservation in doc.get("Reservations", []):
        for instance in reservation.get("Instances", []):
            if instance["InstanceId"] in ids and instance["State"]["Name"] == "running":
                instance["State"] = {"Code": 0, "Name": "pending"}
                instance["LaunchTime"] = STUCK_SINCE
    return json.dumps(doc)


def _vendor(real: str, kill_after: str, pending: str, *args: str) -> int:
    done = subprocess.run([real, *args], stdout=subprocess.PIPE, text=True, check=False)
    out = done.stdout
    if pending and "describe-instances" in args and done.returncode == 0 and out.strip():
        out = _as_pending(out, set(pending.split(",")))
    sys.stdout.write(out)
    sys.stdout.flush()
    if kill_after and kill_after in f" {' '.join(args)} ":
        os.kill(os.getppid(), signal.SIGKILL)  # mngr dies with this call done
    return done.returncode


def _mngr(step: str) -> None:
    sys.path.insert(0, str(ROOT))
    from mngr import plan
    from mngr.entry import main

    run_step = plan._run_step

    def killing(one: plan.Step, *args: object, **kwargs: object) -> None:
        run_step(one, *args, **kwargs)
        if one.description.startswith(step):
            os.kill(os.getpid(), signal.SIGKILL)

    plan._run_step = killing
    main()


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    if mode == "--vendor":
        sys.exit(_vendor(*rest))
    sys.argv = [sys.argv[0], *rest[1:]]
    _mngr(rest[0])
