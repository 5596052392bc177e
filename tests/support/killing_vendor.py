"""A vendor CLI between mngr and the real one, for the gc tests: it runs the real CLI, then
SIGKILLs mngr (its parent) once a call's arguments contain a given text, so the resources
left are exactly what a create killed at that step leaves, with mngr itself unchanged. It
can also show given EC2 instances as `pending` in `describe-instances` (moto never pends).

`vendor(tmp_path, real, kill_after=" run ", pending=[id, ...])` writes the script a
provider's `binary` setting points at.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path


def vendor(
    folder: Path, real: str, *, kill_after: str = "", pending: list[str] | tuple[str, ...] = ()
) -> str:
    """The path of a wrapper of `real` (the file's name says which vendor it stands for)."""
    path = folder / f"killing-{Path(real).name}"
    args = [sys.executable, __file__, real, kill_after, ",".join(pending)]
    path.write_text(f'#!/bin/sh\nexec {shlex.join(args)} "$@"\n')
    path.chmod(0o755)
    return str(path)


def _pending(out: str, ids: set[str]) -> str:
    doc = json.loads(out)
    for reservation in doc.get("Reservations", []):
        for instance in reservation.get("Instances", []):
            if instance["InstanceId"] in ids and instance["State"]["Name"] == "running":
                instance["State"] = {"Code": 0, "Name": "pending"}
    return json.dumps(doc)


def main(real: str, kill_after: str, pending: str, *args: str) -> int:
    done = subprocess.run([real, *args], stdout=subprocess.PIPE, text=True, check=False)
    out = done.stdout
    if pending and "describe-instances" in args and done.returncode == 0 and out.strip():
        out = _pending(out, set(pending.split(",")))
    sys.stdout.write(out)
    sys.stdout.flush()
    if kill_after and kill_after in f" {' '.join(args)} ":
        os.kill(os.getppid(), signal.SIGKILL)  # mngr dies with this call done
    return done.returncode


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
