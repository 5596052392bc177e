"""`mngr host forward HOST PORT... --format json` until the CLI command is wired: the same
Service forward and `Forward.run`, as its own process, for the signal tests."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mngr.config import load  # noqa: E402
from mngr.service import Service  # noqa: E402

args = [a for a in sys.argv[1:] if a not in ("--format", "json")]
forward = Service(load()).forward(args[0], args[1:], report=lambda m: print(m, file=sys.stderr))
try:
    forward.run(lambda _: print(json.dumps(forward.record()), flush=True))
except KeyboardInterrupt:
    sys.exit(130)
