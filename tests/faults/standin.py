"""A stand-in vendor CLI (docker, aws, ssh, the Modal shim's python) for fault injection.

The fixtures copy this file next to a `scenario.json` under the test's tmp_path, with a
shebang naming this interpreter. Each call appends `{"verb", "argv"}` to `calls.jsonl`
beside it, then answers with the scenario's next answer for its verb:

    {"verb": {"index": 1}}                   the verb is argv[1] (argv[0] is this script)
    {"verb": {"markers": [["mkdir claim", "claim"], ...]}}   the first marker in argv
    {"answers": {"ps": [answer, ...], "*": [answer]}}        the n-th call gets the n-th
                                                             answer; the last one repeats

An answer is `{"out": str, "err": str, "code": int}`, `{"hang": true}` (sleeps until the
runner kills it) or `{"signal": 9}` (kills itself).
"""

import fcntl
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def verb_of(argv: list[str], rule: dict) -> str:
    if "index" in rule:
        index = rule["index"]
        return argv[index] if len(argv) > index else ""
    joined = " ".join(argv)
    for marker, verb in rule["markers"]:
        if marker in joined:
            return verb
    return ""


def main() -> int:
    scenario = json.loads((HERE / "scenario.json").read_text())
    argv = sys.argv
    verb = verb_of(argv, scenario["verb"])
    with open(HERE / "calls.jsonl", "a+") as log:
        fcntl.flock(log, fcntl.LOCK_EX)  # concurrent calls count their turn one at a time
        log.seek(0)
        turn = sum(1 for line in log if json.loads(line)["verb"] == verb)
        log.write(json.dumps({"verb": verb, "argv": argv[1:]}) + "\n")
    answers = scenario["answers"].get(verb) or scenario["answers"].get("*") or [{}]
    answer = answers[min(turn, len(answers) - 1)]
    if answer.get("hang"):
        time.sleep(30)  # the runner kills the whole process group long before
    if answer.get("signal"):
        os.kill(os.getpid(), answer["signal"])
    sys.stdout.write(answer.get("out", ""))
    sys.stderr.write(answer.get("err", ""))
    return answer.get("code", 0)


if __name__ == "__main__":
    sys.exit(main())
