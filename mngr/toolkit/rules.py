"""A vendor's stderr classified by a table of rules: the first rule whose pattern matches
decides the error; nothing matched keeps the vendor's own error."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from mngr.errors import MngrError, VendorCommandError


@dataclass(frozen=True)
class Rule:
    """`pattern` (a regular expression) found in stderr makes the error an `error`.

    `say` replaces the message: a format string over the match's groups (`{0}`, `{1}`) and
    the keywords given to `classify` (`{detail}`, `{where}`, ...); otherwise the vendor's
    message is kept with `hint` added in parentheses.
    """

    pattern: str
    error: type[MngrError]
    hint: str = ""
    say: str | None = None


def classify(error: VendorCommandError, rules: list[Rule], **context: Any) -> MngrError:
    for rule in rules:
        match = re.search(rule.pattern, error.stderr)
        if match is None:
            continue
        if rule.say is not None:
            return rule.error(rule.say.format(*match.groups(), **context))
        message = context.get("detail") or error.message
        return rule.error(f"{message} ({rule.hint})" if rule.hint else message)
    return error
