"""Writing settings (`mngr provider add/remove`): comments and layout are kept (tomlkit), the
new provider is validated before anything is written, and the write is atomic (temp file +
rename), so an interrupted write leaves the old file intact."""

from __future__ import annotations

import os
import re
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import tomlkit
from pydantic import ValidationError
from tomlkit.items import AoT, Array, InlineTable

from mngr import paths
from mngr.errors import (
    ConfigError,
    ConflictError,
    MngrError,
    NotFoundError,
    UsageError,
    validation_message,
)
from mngr.names import check_provider_name
from mngr.registry import load_backend

SCOPES = ("user", "project", "local")


def scope_path(scope: str) -> Path:
    if scope == "user":
        return paths.user_settings()
    if scope not in SCOPES:
        raise UsageError(f"invalid --scope {scope!r}: use one of {', '.join(SCOPES)}")
    folder = paths.project_dir() or Path.cwd() / paths.PROJECT_DIR
    return folder / (paths.PROJECT_FILE if scope == "project" else paths.LOCAL_FILE)


def parse_setting(text: str) -> tuple[str, Any]:
    """`key=value`; the value is read as TOML when it parses (numbers, booleans, arrays),
    otherwise kept as a plain string."""
    if "=" not in text:
        raise UsageError(f"invalid --set {text!r}: expected KEY=VALUE")
    key, raw = (part.strip() for part in text.split("=", 1))
    if not key or key in ("name", "backend"):
        raise UsageError(f"invalid --set {text!r}: the key must be a setting of the backend")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


BOM = "\ufeff"


def _read(path: Path) -> str:
    """The file's text as it is (BOM and line endings kept), or "" when there is none."""
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            return handle.read()
    except FileNotFoundError:
        return ""
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a TOML settings file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read settings file ({exc})") from None


def _defined(path: Path, text: str) -> list[str]:
    """The providers a settings text defines, read the way `mngr.config` reads it (both
    forms, mixed too); a file it would refuse is refused here, before any edit."""
    from mngr.config import providers_in_file

    try:
        data = tomllib.loads(text.removeprefix(BOM))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return list(providers_in_file(data, path)[0])


def _load(path: Path) -> tuple[str, tomlkit.TOMLDocument, list[str]]:
    text = _read(path)
    names = _defined(path, text)
    try:
        doc = tomlkit.parse(text.removeprefix(BOM))
    except Exception as exc:  # tomlkit's parse errors carry line and column
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return text, doc, names


def _save(path: Path, original: str, doc: tomlkit.TOMLDocument, expected: list[str]) -> None:
    """Write the edited document in the file's own style (BOM, CRLF), after checking that it
    reads back as exactly the expected providers: a settings file is never left damaged."""
    text = tomlkit.dumps(doc)
    if "\r\n" in original:
        text = text.replace("\r\n", "\n").replace("\n", "\r\n")
    if original.startswith(BOM):
        text = BOM + text
    try:
        written = _defined(path, text)
    except ConfigError as exc:
        reason = str(exc).removeprefix(f"{path}: ")
        raise MngrError(f"{path}: not changed: the edit would not read back ({reason})") from None
    if sorted(written) != sorted(expected):
        raise MngrError(f"{path}: not changed: the edit would not read back as intended")
    _check_loads(path, original, text)
    atomic_write(path, text)


def _check_loads(path: Path, original: str, text: str) -> None:
    """Refuse an edit after which mngr's settings would not load (every command would fail):
    the same checks as loading, over every layer. Settings that do not load already are not
    a reason to refuse: the edit may be the fix."""
    from mngr import config

    try:
        config.load(check_trust=False, edited=(path, original))
    except MngrError:
        return
    try:
        config.load(check_trust=False, edited=(path, text))
    except MngrError as exc:
        reason = re.sub(rf"^{re.escape(str(path))}(:\d+)?: ", "", str(exc))
        raise ConfigError(
            f"{path}: not changed: afterwards the settings would not load: {reason}"
        ) from None


def add_provider(name: str, backend: str, settings: list[str], scope: str = "user") -> Path:
    check_provider_name(name)
    path = scope_path(scope)
    values = dict(parse_setting(item) for item in settings)
    model = load_backend(backend).config_model
    try:
        model.model_validate({"name": name, "backend": backend, **values})
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            from mngr.errors import did_you_mean

            fields = [f for f in model.model_fields if f not in ("name", "backend")]
            raise UsageError(
                f"unknown setting {key!r} for backend {backend!r}{did_you_mean(key, fields)}"
            ) from None
        raise UsageError(f"setting {validation_message(err)}") from None
    original, doc, names = _load(path)
    if name in names:
        raise ConflictError(f"provider {name!r} already exists in {path}")
    section = doc.get("providers")
    if section is None:
        section = tomlkit.aot()
        doc["providers"] = section
    if isinstance(section, AoT):
        table = tomlkit.table()
        table.update({"name": name, "backend": backend, **values})
        section.append(table)
    elif isinstance(section, Array):  # `providers = [{...}]`: add one more inline table
        inline = tomlkit.inline_table()
        inline.update({"name": name, "backend": backend, **values})
        section.append(inline)
    elif isinstance(section, InlineTable):
        inline = tomlkit.inline_table()
        inline.update({"backend": backend, **values})
        section[name] = inline
    else:
        table = tomlkit.table()
        table.update({"backend": backend, **values})
        section[name] = table
    _save(path, original, doc, [*names, name])
    return path


def remove_provider(name: str, scope: str = "user") -> Path:
    path = scope_path(scope)
    original, doc, names = _load(path)
    if name not in names:
        raise NotFoundError(f"no provider {name!r} in {path}")
    if doc.get("default_provider") == name:  # removing it would break every later command
        raise UsageError(
            f"provider {name!r} is the default_provider in {path}; change default_provider first"
        )
    section = doc["providers"]
    if isinstance(section, list):
        for index, item in enumerate(section):
            if item.get("name") == name:
                del section[index]
                break
            if isinstance(item.get(name), dict):  # `[providers.NAME]` after `[[providers]]`
                del item[name]
                break
        if not section:
            del doc["providers"]
    else:
        del section[name]
    _save(path, original, doc, [n for n in names if n != name])
    return path


def atomic_write(path: Path, text: str) -> None:
    linked = path.is_symlink()
    if linked:  # a dotfiles link: write through it, and keep the link
        path = Path(os.path.realpath(path))
    try:
        if not linked:  # never make the folders a dangling link points into
            path.parent.mkdir(parents=True, exist_ok=True)
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise MngrError(f"{path}: cannot write settings file ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise MngrError(f"{path}: cannot write settings file ({exc.strerror or exc})") from None
        raise
