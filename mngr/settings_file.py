"""Writing settings (`mngr provider add/remove`): comments and layout are kept (tomlkit), the
new provider is validated before anything is written, and the write is atomic (temp file +
rename), so an interrupted write leaves the old file intact."""

from __future__ import annotations

import os
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import tomlkit
from pydantic import ValidationError

from mngr import paths
from mngr.errors import ConfigError, ConflictError, NotFoundError, UsageError
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


def _load(path: Path) -> tomlkit.TOMLDocument:
    try:
        return tomlkit.parse(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return tomlkit.document()
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a TOML settings file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read settings file ({exc})") from None
    except Exception as exc:  # tomlkit's parse errors carry line and column
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def _names(doc: tomlkit.TOMLDocument) -> list[str]:
    section = doc.get("providers")
    if section is None:
        return []
    if isinstance(section, list):
        return [str(item.get("name")) for item in section if isinstance(item, dict)]
    return [str(key) for key in section]


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
        raise UsageError(f"setting {key!r}: {err['msg']}") from None
    doc = _load(path)
    if name in _names(doc):
        raise ConflictError(f"provider {name!r} already exists in {path}")
    section = doc.get("providers")
    if isinstance(section, dict):
        table = tomlkit.table()
        table.update({"backend": backend, **values})
        section[name] = table
    else:
        if section is None:
            section = tomlkit.aot()
            doc["providers"] = section
        table = tomlkit.table()
        table.update({"name": name, "backend": backend, **values})
        section.append(table)
    atomic_write(path, tomlkit.dumps(doc))
    return path


def remove_provider(name: str, scope: str = "user") -> Path:
    path = scope_path(scope)
    doc = _load(path)
    if name not in _names(doc):
        raise NotFoundError(f"no provider {name!r} in {path}")
    section = doc["providers"]
    if isinstance(section, list):
        index = next(i for i, t in enumerate(section) if t.get("name") == name)
        del section[index]
        if not section:
            del doc["providers"]
    else:
        del section[name]
    atomic_write(path, tomlkit.dumps(doc))
    return path


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
