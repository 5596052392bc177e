"""One argv builder for every vendor CLI, so a command reads as the list of its flags."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def _word(value: Any) -> str:
    if isinstance(value, str):  # as it is: a plan's Ref placeholder stays a Ref
        return value
    return f"{value:g}" if isinstance(value, float) else str(value)


class Argv(list[str]):
    """`Argv(["docker", "run"]).add("--name", name).add("--label", labels)`.

    `add` skips None and False, writes True as the bare flag, and repeats the flag for each
    item of a list or tuple; `eq=True` writes `--flag=value` (one word) instead of two.
    """

    def add(self, flag: str, value: Any = True, *, eq: bool = False) -> Argv:
        if value is None or value is False:
            return self
        if value is True:
            self.append(flag)
            return self
        values = value if isinstance(value, list | tuple) else [value]
        for item in values:
            if eq:
                self.append(f"{flag}={_word(item)}")
            else:
                self += [flag, _word(item)]
        return self

    def add_all(self, values: Mapping[str, Any], *, eq: bool = False) -> Argv:
        """`--key-name value` for each entry (underscores become dashes)."""
        for key, value in values.items():
            self.add("--" + key.replace("_", "-"), value, eq=eq)
        return self

    def words(self, words: Iterable[Any]) -> Argv:
        """Append positional words as they are."""
        self += [_word(w) for w in words]
        return self
