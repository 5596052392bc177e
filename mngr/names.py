"""Validation of host names, provider names, tags and host references.

Pure and dependency-free: used by the CLI, the server and the completion fast path alike.
"""

from __future__ import annotations

import re

from mngr.errors import UsageError

HOST_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
PROVIDER_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
HOST_ID_RE = re.compile(r"^host-[0-9a-f]{32}$")
SNAPSHOT_ID_RE = re.compile(r"^snap-[0-9a-f]{32}$")
TAG_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
MAX_TAG_VALUE = 255


def new_host_id() -> str:
    import secrets

    return "host-" + secrets.token_hex(16)


def new_snapshot_id() -> str:
    import secrets

    return "snap-" + secrets.token_hex(16)


def not_a_flag(value: str) -> str:
    """A value bound for a vendor's argv (image, AMI, network...) may not start with '-': the
    vendor would read it as a flag (`--image=--privileged`). Raises ValueError (for pydantic)."""
    if value.startswith("-"):
        raise ValueError(f"{value!r} starts with '-', which the vendor would read as a flag")
    return value


def check_host_name(name: str) -> str:
    if not HOST_NAME_RE.fullmatch(name):
        raise UsageError(
            f"invalid host name {name!r}: use 1 to 63 lower-case letters, digits and '-', "
            "starting with a letter or digit"
        )
    return name


def check_provider_name(name: str) -> str:
    if not PROVIDER_NAME_RE.fullmatch(name):
        raise UsageError(
            f"invalid provider name {name!r}: use 1 to 63 lower-case letters, digits, '-' "
            "and '_', starting with a letter or digit"
        )
    return name


def check_snapshot_name(name: str) -> str:
    if not HOST_NAME_RE.fullmatch(name):
        raise UsageError(
            f"invalid snapshot name {name!r}: use 1 to 63 lower-case letters, digits and "
            "'-', starting with a letter or digit"
        )
    return name


# Tags mngr itself sets (keys starting with "mngr" are otherwise its own, refused to users);
# a filter may name them: `--tag mngr.provisioned=failed`.
PROVISIONED_TAG = "mngr.provisioned"  # on a host whose `create --provision` failed
MNGR_TAGS = frozenset({PROVISIONED_TAG})


def check_tag(key: str, value: str, *, own: bool = False) -> tuple[str, str]:
    """`own`: mngr's own tags (MNGR_TAGS) pass too."""
    reserved = key.lower().startswith("mngr") and not (own and key in MNGR_TAGS)
    if not TAG_KEY_RE.fullmatch(key) or reserved:
        raise UsageError(
            f"invalid tag key {key!r}: use letters, digits, '_', '.' and '-' (at most 63), "
            "not starting with 'mngr'"
        )
    if len(value) > MAX_TAG_VALUE or any(ord(c) < 32 for c in value):
        raise UsageError(
            f"invalid value for tag {key!r}: at most {MAX_TAG_VALUE} characters, no control "
            "characters"
        )
    return key, value


def parse_tag(text: str, *, own: bool = False) -> tuple[str, str]:
    """`k=v` -> (k, v). The value may hold any printable text, `=` included."""
    if "=" not in text:
        raise UsageError(f"invalid tag {text!r}: expected KEY=VALUE")
    key, value = text.split("=", 1)
    return check_tag(key.strip(), value, own=own)


def parse_tag_filters(items: list[str] | None) -> dict[str, str | None]:
    """`--tag` filters of list: KEY=VALUE must match; a bare KEY only has to be there."""
    found: dict[str, str | None] = {}
    for item in items or []:
        if "=" in item:
            key, value = parse_tag(item, own=True)
            found[key] = value
        else:
            found[check_tag(item.strip(), "", own=True)[0]] = None
    return found


def parse_tags(items: list[str] | None) -> dict[str, str]:
    tags: dict[str, str] = {}
    for item in items or []:
        key, value = parse_tag(item)
        if key in tags and tags[key] != value:
            raise UsageError(f"tag {key!r} is given twice with different values")
        tags[key] = value
    return tags


def split_host_ref(ref: str) -> tuple[str, str | None]:
    """`NAME`, `NAME.PROVIDER` or `host-<hex>` -> (name or id, provider or None)."""
    if HOST_ID_RE.fullmatch(ref):
        return ref, None
    name, dot, provider = ref.partition(".")
    check_host_name(name)
    if dot:
        check_provider_name(provider)
        return name, provider
    return name, None
