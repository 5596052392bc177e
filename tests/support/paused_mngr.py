"""Run the mngr console entry, pausing once its hosts are resolved and its plan is built:
it writes "paused" to stderr and runs the plan when a line arrives on stdin. Tests use it
to act as a stale process (one that looked a host up before others changed it)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mngr import engine, plan  # noqa: E402
from mngr.entry import main  # noqa: E402

_execute = plan.execute


def _paused(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
    sys.stderr.write("paused\n")
    sys.stderr.flush()
    sys.stdin.readline()
    return _execute(*args, **kwargs)


plan.execute = engine.execute = _paused
main()
