#!/usr/bin/env python3
"""A stand-in vendor CLI for the fake-CLI backend used in core and fault-injection tests.

State lives in $FAKEVENDOR_DIR (one JSON file per host). $FAKEVENDOR_FAULT may be
`<verb>:<fault>[@HOST]` with fault one of: fail, garbage, truncated, hang, kill, denied, slow
(`@HOST`: only when the verb acts on that host).
"""

import json
import os
import signal
import sys
import time
from pathlib import Path


def main() -> int:
    verb, args = sys.argv[1], sys.argv[2:]
    state = Path(os.environ["FAKEVENDOR_DIR"])
    state.mkdir(parents=True, exist_ok=True)
    with open(state / "calls.log", "a") as log:
        log.write(" ".join(sys.argv[1:]) + "\n")
    fault = os.environ.get("FAKEVENDOR_FAULT", "")
    kind, _, only = fault.partition(":")[2].partition("@")  # `tag:hang@c`: only for host c
    if fault.partition(":")[0] == verb and (not only or args[:1] == [only]):
        if kind == "fail":
            sys.stderr.write("Error: the service said no\n")
            return 1
        if kind == "denied":
            sys.stderr.write("Error: AccessDenied: not authorised to perform this action\n")
            return 1
        if kind == "garbage":
            sys.stdout.write("<html>502 Bad Gateway</html>\n")
            return 0
        if kind == "truncated":
            sys.stdout.write('[{"name": "a", "id": "x"')
            return 0
        if kind == "hang":
            time.sleep(60)
        if kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if kind == "slow":
            time.sleep(float(os.environ.get("FAKEVENDOR_SLOW_S", "1")))
    if verb == "list":
        hosts = [json.loads(p.read_text()) for p in sorted(state.glob("*.host"))]
        sys.stdout.write(json.dumps(hosts))
    elif verb == "create":
        path = state / f"{args[0]}.host"
        if path.exists():
            sys.stderr.write(f"Error: Conflict: {args[0]} already exists\n")
            return 1
        path.write_text(json.dumps({"name": args[0], "id": args[1], "state": "running"}))
    elif verb == "tag":
        pass
    elif verb == "delete":
        (state / f"{args[0]}.host").unlink(missing_ok=True)
    elif verb == "whoami":
        sys.stdout.write('{"user": "tester"}')
    return 0


if __name__ == "__main__":
    sys.exit(main())
