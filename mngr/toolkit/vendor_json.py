"""Vendor JSON into lenient models: a field a new vendor release adds never breaks parsing,
and output mngr cannot read is one error naming the command that printed it."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mngr.errors import VendorOutputError, validation_message
from mngr.records import HostState

M = TypeVar("M", bound=BaseModel)


class Lenient(BaseModel):
    """Unknown fields ignored; fields may be given by alias or by name."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, defer_build=True)


class HostFields(Lenient):
    """A host as mngr itself writes it down (a local record file, the Modal shim's output),
    read back leniently; a backend subclasses it with what else it keeps."""

    id: str
    name: str
    state: HostState = HostState.UNKNOWN
    image: str | None = None
    created_at: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    snapshots: list[str] = Field(default_factory=list)


def _unreadable(command: str, problem: str, text: str) -> VendorOutputError:
    snippet = " ".join(text.split())[:200]
    return VendorOutputError(
        f"`{command}` printed output mngr cannot read ({problem}): {snippet!r}"
    )


def load(text: str, command: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise _unreadable(command, f"not JSON: {exc.msg}", text) from None


def parse(model: type[M], text: str, command: str) -> M:
    """One JSON document as `model`."""
    return validate(model, load(text, command), command, text)


def parse_many(model: type[M], text: str, command: str) -> list[M]:
    """A JSON array, or one JSON object a line (what a `--format '{{json .}}'` prints)."""
    stripped = text.strip()
    if stripped.startswith("["):
        items = load(stripped, command)
    else:
        items = [load(line, command) for line in stripped.splitlines() if line.strip()]
    if not isinstance(items, list):
        raise _unreadable(command, "expected a JSON array", text)
    return [validate(model, item, command, text) for item in items]


def validate(model: type[M], value: Any, command: str, text: str = "") -> M:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        problem = validation_message(exc.errors()[0])
        raise _unreadable(command, problem, text or json.dumps(value)) from None
