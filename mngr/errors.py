"""The one user-facing error family and the exit-code table.

Every error the CLI prints is a MngrError: one line, no traceback, mapped to an exit code.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_VENDOR_MISSING = 4
EXIT_UNAUTHORISED = 5
EXIT_PARTIAL = 6
EXIT_INTERRUPTED = 130


class MngrError(Exception):
    """Base of every error shown to the user."""

    exit_code = EXIT_ERROR
    kind = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(MngrError):
    exit_code = EXIT_USAGE
    kind = "usage"


class ConfigError(UsageError):
    kind = "config"


class UnsupportedError(UsageError):
    kind = "unsupported"


class NotFoundError(MngrError):
    exit_code = EXIT_NOT_FOUND
    kind = "not-found"


class ConflictError(MngrError):
    kind = "conflict"


class VendorMissingError(MngrError):
    exit_code = EXIT_VENDOR_MISSING
    kind = "vendor-missing"


class UnauthorisedError(MngrError):
    exit_code = EXIT_UNAUTHORISED
    kind = "unauthorised"


class UnreachableError(MngrError):
    kind = "unreachable"


class VendorTimeoutError(UnreachableError):
    kind = "timeout"


class VendorOutputError(MngrError):
    """The vendor answered, but not with what we can parse."""

    kind = "bad-output"


class InterruptedByUser(MngrError):
    exit_code = EXIT_INTERRUPTED
    kind = "interrupted"


class PartialListError(MngrError):
    """A provider listed some of its hosts but not all (one machine of a pool is down...).

    `Engine.list_hosts` shows `hosts` and one error row per entry of `errors`; anything else
    that lists one provider sees an ordinary error.
    """

    exit_code = EXIT_PARTIAL
    kind = "partial"

    def __init__(self, hosts: list[object], errors: list[Exception]) -> None:
        self.hosts = list(hosts)
        self.errors = list(errors)
        super().__init__("; ".join(str(e) for e in errors) or "some hosts could not be listed")


class VendorCommandError(MngrError):
    """A vendor command exited non-zero. Keeps argv, exit code, stdout and stderr.

    Backends classify it (via ``Backend.classify``) into one of the specific errors above;
    ``kind`` says which one it became.
    """

    def __init__(self, argv: list[str], returncode: int, stdout: str, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        detail = first_line(stderr) or "no error text"
        super().__init__(f"{_short_argv(argv)} failed ({exit_status(returncode)}): {detail}")


def exit_status(returncode: int) -> str:
    """`exit 1`, or `killed by SIGKILL` for a process a signal ended (a negative code)."""
    if returncode >= 0:
        return f"exit {returncode}"
    import signal

    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


def first_line(text: str) -> str:
    """The most telling line of a vendor's stderr: the first non-empty one, trimmed."""
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line[:300]
    return ""


def _short_argv(argv: list[str]) -> str:
    """A command as `docker run`: binary and sub-verbs only, so no value (or secret) leaks."""
    words = [argv[0].rsplit("/", 1)[-1]] if argv else []
    for word in argv[1:3]:
        if word.startswith("-") or not word.replace("-", "").isalnum():
            break
        words.append(word)
    return shlex.join(words)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for a near miss, else the list of choices, else nothing."""
    import difflib

    options = sorted(choices)
    close = difflib.get_close_matches(word, options, n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    if options:
        return f" (expected one of: {', '.join(options)})"
    return ""
