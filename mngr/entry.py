"""Console entry point. `--version`, completion requests and the hidden `__remote-exec` (exec
through a mngr server) answer before anything heavy is imported (no click, no pydantic);
everything else goes to the CLI."""

from __future__ import annotations

import sys


def _sigterm(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # same path as Ctrl-C: cancel, undo what was allocated, exit 130


def main() -> None:
    argv = sys.argv[1:]
    if argv in (["--version"], ["-V"]):
        from mngr import __version__

        sys.stdout.write(f"mngr {__version__}\n")
        return
    if argv[:1] == ["__complete"]:
        from mngr.completion import answer

        sys.exit(answer(argv[1:]))
    import signal  # not above: it imports enum, a cost the fast paths need not pay

    signal.signal(signal.SIGTERM, _sigterm)
    if argv[:1] == ["__remote-exec"]:  # the mngr backend's transport: one per connection
        from mngr.toolkit.wsexec import main as remote_exec

        sys.exit(remote_exec(argv[1:]))
    try:
        from mngr.cli import run

        code = run(argv)
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        code = 130
    sys.exit(code)
