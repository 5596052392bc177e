"""The one user-facing error family and the exit-code table.

Every error the CLI prints is a MngrError: one line, no traceback, mapped to an exit code.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping
from typing import Any

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_VENDOR_MISSING = 4
EXIT_UNAUTHORISED = 5
EXIT_PARTIAL = 6
EXIT_INTERRUPTED = 130


# `scheme://user:PASSWORD@`: the password runs to the last `@` of the word, so one holding
# `/` or `@` is caught too (over-matching a path with `@` in it only hides more).
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:@/]*):\S*@")


def has_url_password(text: str) -> bool:
    return "://" in text and _URL_PASSWORD.search(text) is not None


def redact(text: str) -> str:
    """Text with any password written into a URL replaced by `***`."""
    return _URL_PASSWORD.sub(r"\1:***@", text) if "://" in text else text


class MngrError(Exception):
    """Base of every error shown to the user. A password inside a URL never reaches one."""

    exit_code = EXIT_ERROR
    kind = "error"

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return self._message

    @message.setter
    def message(self, text: str) -> None:
        self._message = redact(text)

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
    # From a fan-out: each item's outcome when it stopped (a value: it finished; an error:
    # it was cancelled and undone; neither: still undoing when mngr gave up waiting).
    outcomes: list[Any] | None = None


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


def validation_problem(error: Mapping[str, Any]) -> str:
    """What one pydantic error says is wrong, in mngr's words ("must be a number greater
    than 0"), never the validator's ("Input should be...", "Value error, ...")."""
    kind = str(error.get("type", ""))
    ctx = error.get("ctx") or {}
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    fixed = {
        "missing": "is required",
        "extra_forbidden": "is not a known key",
        "finite_number": "must be a finite number",
        "bool_type": "must be true or false (a TOML boolean)",
        "bool_parsing": "must be true or false",
        "string_type": "must be a string",
        "list_type": "must be a list",
        "dict_type": "must be a table",
        "model_type": "must be a table",
        "int_type": "must be a whole number",
        "int_parsing": "must be a whole number",
        "int_from_float": "must be a whole number",
        "float_type": "must be a number",
        "float_parsing": "must be a number",
        "none_required": "must not be set",
    }
    if kind in fixed:
        return fixed[kind]
    bounds = {
        "greater_than": ("gt", "greater than"),
        "greater_than_equal": ("ge", "at least"),
        "less_than": ("lt", "less than"),
        "less_than_equal": ("le", "at most"),
        "string_too_short": ("min_length", "at least {} characters long"),
        "string_too_long": ("max_length", "at most {} characters long"),
        "too_short": ("min_length", "at least {} items long"),
        "too_long": ("max_length", "at most {} items long"),
    }
    if kind in bounds:
        key, words = bounds[kind]
        limit = ctx.get(key)
        shown = f"{limit:g}" if isinstance(limit, float) else str(limit)
        return "must be " + (words.format(shown) if "{}" in words else f"{words} {shown}")
    if kind in ("literal_error", "enum") and "expected" in ctx:
        return f"must be one of {ctx['expected']}"
    text = str(error.get("msg", "is not valid"))
    for prefix, replacement in (("Value error, ", ""), ("Input should be", "must be")):
        if text.startswith(prefix):
            text = replacement + text[len(prefix) :]
    return text


def validation_key(error: Mapping[str, Any]) -> str:
    """The dotted key an error is about (`machines.0.address`), or '' for the whole value."""
    return ".".join(str(part) for part in error.get("loc", ()))


def validation_message(error: Mapping[str, Any], key: str | None = None) -> str:
    """`timeout_s must be greater than 0`, or `url: <validator's own sentence>`; `key`
    replaces the dotted key (a flag name, say)."""
    key = validation_key(error) if key is None else key
    problem = validation_problem(error)
    if not key:
        return problem
    return f"{key}{' ' if problem.startswith(('must ', 'is ')) else ': '}{problem}"
