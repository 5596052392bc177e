"""Settings: layered TOML files merged into validated provider instances.

Layers, lowest first: built-in < user < project < local < $MNGR_CONFIG < --config.
Same-named providers merge field by field, the higher layer winning. Both the documented
`[[providers]]` (with `name`) form and the `[providers.NAME]` table form are accepted.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mngr import paths
from mngr.errors import ConfigError
from mngr.names import PROVIDER_NAME_RE

if TYPE_CHECKING:
    from mngr.backend import ProviderConfig

TOP_LEVEL_KEYS = ("providers", "default_provider")
BUILTIN = "built-in"


@dataclass
class Layer:
    label: str  # "built-in", "user", "project", "local", "MNGR_CONFIG", "--config"
    path: Path | None
    required: bool = False  # a file named explicitly must exist


_VALIDATING = threading.RLock()


@dataclass
class ProviderEntry:
    name: str
    raw: dict[str, Any]
    sources: list[str] = field(default_factory=list)  # files (or "built-in") it came from
    unavailable: str | None = None  # why it cannot be used (e.g. backend not installed)
    builtin: bool = False
    untrusted: dict[str, Path] = field(default_factory=dict)  # key -> untrusted file setting it
    validated: bool = False
    _config: ProviderConfig | None = field(default=None, repr=False)

    @property
    def backend(self) -> str:
        return str(self.raw.get("backend", ""))

    @property
    def pristine(self) -> bool:
        """A built-in no settings file mentions: nothing of the user's to check, so it is
        validated (and its backend module imported) only when something uses it."""
        return self.sources == [BUILTIN]

    @property
    def config(self) -> ProviderConfig | None:
        if not self.validated:
            with _VALIDATING:  # threads of one fan-out may ask at once
                if not self.validated:
                    validate_entry(self)
                    self.validated = True
        return self._config


@dataclass
class Settings:
    providers: dict[str, ProviderEntry]
    default_provider: str
    layers: list[Layer]

    def provider(self, name: str) -> ProviderEntry:
        from mngr.errors import NotFoundError, did_you_mean

        entry = self.providers.get(name)
        if entry is None:
            raise NotFoundError(
                f"no provider named {name!r}{did_you_mean(name, list(self.providers))}"
            )
        return entry


def layers(explicit: Path | None = None, cwd: Path | None = None) -> list[Layer]:
    found = [Layer(BUILTIN, None), Layer("user", paths.user_settings())]
    project = paths.project_dir(cwd)
    if project is not None:
        found.append(Layer("project", project / paths.PROJECT_FILE))
        found.append(Layer("local", project / paths.LOCAL_FILE))
    env_file = os.environ.get("MNGR_CONFIG")
    if env_file:
        found.append(Layer("MNGR_CONFIG", Path(env_file), required=True))
    if explicit is not None:
        found.append(Layer("--config", explicit, required=True))
    return found


def read_toml(path: Path, *, required: bool) -> dict[str, Any] | None:
    """Parse one settings file; every failure names the file (and line when TOML gives one)."""
    found = read_settings(path, required=required)
    return None if found is None else found[0]


def read_settings(
    path: Path, *, required: bool, text: str | None = None
) -> tuple[dict[str, Any], bytes] | None:
    """A settings file's TOML and the very bytes it was parsed from (for the trust check);
    `text`: what the file would hold after an edit, read instead of the file."""
    try:
        raw = path.read_bytes() if text is None else text.encode()
        text = raw.decode("utf-8-sig")  # -sig: a BOM some editors write is fine
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{path}: settings file not found") from None
        return None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a TOML settings file") from None
    except PermissionError:
        raise ConfigError(f"{path}: cannot read settings file (permission denied)") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: settings file is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read settings file ({exc.strerror})") from None
    import tomllib  # not on the start-up path of commands that read no settings

    try:
        return tomllib.loads(text), raw
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_mixed_forms(path, text) or f"{path}: invalid TOML: {exc}") from None


ONE_FORM = (
    "use one form per file: all `[[providers]]` entries (each with name = ...), or all "
    "`[providers.NAME]` tables"
)


def _mixed_forms(path: Path, text: str) -> str | None:
    """TOML cannot read `[[providers]]` after `[providers.NAME]`: say so, not 'Cannot
    overwrite a value'."""
    lines = text.splitlines()
    table = next((n for n, line in enumerate(lines, 1) if _TABLE_HEADER.match(line)), None)
    array = next(
        (n for n, line in enumerate(lines, 1) if _ARRAY_HEADER.match(line) and table and n > table),
        None,
    )
    if table is None or array is None:
        return None
    return (
        f"{path}:{array}: `[[providers]]` cannot follow `[providers.NAME]` (line {table}) in "
        f"one file; {ONE_FORM}"
    )


def providers_in_file(data: dict[str, Any], path: Path) -> tuple[dict[str, dict[str, Any]], Any]:
    """The providers a file defines (name -> raw fields) and its `default_provider`."""
    from mngr.errors import did_you_mean

    for key in data:
        if key not in TOP_LEVEL_KEYS:
            line = find_line(path, key)
            raise ConfigError(
                f"{where(path, line)}: unknown key {key!r}{did_you_mean(key, list(TOP_LEVEL_KEYS))}"
            )
    default = data.get("default_provider")
    if default is not None and not isinstance(default, str):
        raise ConfigError(
            f"{where(path, find_line(path, 'default_provider'))}: default_provider must be a string"
        )
    section = data.get("providers", {})
    result: dict[str, dict[str, Any]] = {}
    if isinstance(section, list):
        for index, item in enumerate(section, 1):
            if not isinstance(item, dict):
                raise ConfigError(f"{path}: providers entry {index} must be a table")
            name = item.get("name")
            if not isinstance(name, str) or not name:
                raise ConfigError(f"{path}: providers entry {index} has no 'name'")
            if name in result:
                line = find_line(path, "name", value=name, occurrence=2)
                raise ConfigError(f"{where(path, line)}: provider {name!r} is defined twice")
            item = dict(item)
            # TOML reads a `[providers.NAME]` written after `[[providers]]` as a sub-table of
            # the last array entry; the two forms may be mixed, so lift it back out.
            for key, value in list(item.items()):
                if not isinstance(value, dict):
                    continue
                if "backend" not in value:
                    line = find_line_of_header(path, f"providers.{key}")
                    raise ConfigError(
                        f"{where(path, line)}: [providers.{key}] follows a `[[providers]]` "
                        f"entry, so TOML reads it as part of provider {name!r}; write it as its "
                        f'own `[[providers]]` entry with name = "{key}", or {ONE_FORM}'
                    )
                if key in result or key == name:
                    raise ConfigError(f"{path}: provider {key!r} is defined twice")
                result[key] = {"name": key, **item.pop(key)}
            result[name] = item
    elif isinstance(section, dict):
        for name, item in section.items():
            if not isinstance(item, dict):
                raise ConfigError(
                    f"{where(path, find_line(path, name))}: providers.{name} must be a table"
                )
            if "name" in item and item["name"] != name:
                raise ConfigError(f"{path}: providers.{name} has a different name {item['name']!r}")
            result[name] = {"name": name, **item}
    else:
        raise ConfigError(f"{path}: 'providers' must be an array of tables or a table")
    for name in result:
        if not PROVIDER_NAME_RE.fullmatch(name):
            raise ConfigError(
                f"{where(path, find_line(path, 'name', value=name))}: invalid provider name "
                f"{name!r}: use lower-case letters, digits, '-' and '_'"
            )
    return result, default


# Built-in instances and the vendor binary each needs on PATH to exist.
BUILTIN_TEMPLATES: dict[str, tuple[dict[str, Any], str | None]] = {
    "local": ({"name": "local", "backend": "local"}, None),
    "local_docker": ({"name": "local_docker", "backend": "docker"}, "docker"),
}


def builtin_providers() -> dict[str, dict[str, Any]]:
    found = {}
    for name, (raw, binary) in BUILTIN_TEMPLATES.items():
        if binary is None or shutil.which(binary):
            found[name] = dict(raw)
    return found


def load(
    explicit: Path | None = None,
    *,
    check_trust: bool = True,
    edited: tuple[Path, str] | None = None,
) -> Settings:
    """Read every layer, merge it, and validate each provider against its config model.

    `check_trust`: refuse a key that needs trust when an untrusted project file sets it
    (off only for commands that show settings and reach nothing: `config show`).
    `edited`: (file, text): load as if that file held the text (an edit not yet written)."""
    from mngr import trust

    all_layers = layers(explicit)
    merged: dict[str, ProviderEntry] = {
        name: ProviderEntry(name, raw, [BUILTIN], builtin=True)
        for name, raw in builtin_providers().items()
    }
    default, default_from = "local", BUILTIN
    for layer in all_layers:
        if layer.path is None:
            continue
        text = edited[1] if edited and _same_file(edited[0], layer.path) else None
        found = read_settings(layer.path, required=layer.required, text=text)
        if found is None:
            continue
        data, raw_bytes = found
        trusted = layer.label not in trust.UNTRUSTED_LAYERS or trust.is_trusted(
            layer.path, trust.digest(raw_bytes)
        )
        defined, layer_default = providers_in_file(data, layer.path)
        if layer_default is not None:
            default, default_from = layer_default, str(layer.path)
        for name, raw in defined.items():
            entry = merged.get(name)
            if entry is None and name in BUILTIN_TEMPLATES and "backend" not in raw:
                # settings for a built-in whose vendor CLI is not installed here
                template, binary = BUILTIN_TEMPLATES[name]
                merged[name] = ProviderEntry(
                    name,
                    {**template, **raw},
                    [BUILTIN, str(layer.path)],
                    builtin=True,
                    unavailable=f"'{binary}' is not on PATH",
                )
            elif entry is None:
                merged[name] = ProviderEntry(name, raw, [str(layer.path)])
            else:
                if (
                    entry.sources[0] == BUILTIN
                    and raw.get("backend", entry.backend) != entry.backend
                ):
                    line = find_line(layer.path, "backend", provider=name)
                    raise ConfigError(
                        f"{where(layer.path, line)}: {name!r} is a built-in provider of backend "
                        f"{entry.backend!r}; give a provider of backend {raw['backend']!r} "
                        "another name"
                    )
                entry.raw = {**entry.raw, **raw}
                entry.sources.append(str(layer.path))
                entry.builtin = False
            entry = merged[name]
            for key in raw:
                if trusted:
                    entry.untrusted.pop(key, None)  # a trusted higher layer decides it
                else:
                    entry.untrusted[key] = layer.path
    settings = Settings(merged, default, all_layers)
    if default not in merged:
        raise ConfigError(
            f"{default_from}: default_provider {default!r} is not a configured provider"
        )
    for entry in merged.values():
        if not entry.pristine:
            validate_entry(entry)
            entry.validated = True
            if check_trust:
                check_trusted(entry)
    check_shared_state(merged)
    return settings


def _same_file(a: Path, b: Path) -> bool:
    return a == b or a.resolve() == b.resolve()


def check_trusted(entry: ProviderEntry) -> None:
    """Refuse a key needing trust that an untrusted project file sets, before any use."""
    if not entry.untrusted or entry.config is None:
        return
    for key, path in entry.untrusted.items():
        if key in type(entry.config).needs_trust:
            line = find_line(path, key, provider=entry.name)
            raise ConfigError(
                f"{where(path, line)}: provider {entry.name!r}: {key!r} may only be set by a "
                f"settings file you trust (it decides where credentials go or what runs); "
                f"read the file, then run `mngr config trust {shlex.quote(str(path))}`"
            )


def check_shared_state(providers: dict[str, ProviderEntry]) -> None:
    """Two enabled providers that keep their hosts in one place would see and destroy each
    other's hosts: refuse such settings, naming both."""
    from mngr.registry import load_backend

    seen: dict[str, ProviderEntry] = {}
    configured = {e.backend for e in providers.values() if not e.pristine}
    for entry in providers.values():
        if entry.pristine and entry.backend not in configured:
            continue  # no other provider of its backend to share with
        if entry.config is None or not entry.config.enabled:
            continue
        key = load_backend(entry.backend).shared_state_key(entry.config)
        if key is None:
            continue
        first = seen.setdefault(key, entry)
        if first is not entry:
            raise ConfigError(
                f"{entry.sources[-1]}: providers {first.name!r} and {entry.name!r} would keep "
                f"their hosts in one place ({key}); give each its own"
            )


def validate_entry(entry: ProviderEntry) -> None:
    from pydantic import ValidationError

    from mngr.errors import did_you_mean, validation_message
    from mngr.registry import is_known, load_backend

    origin = Path(entry.sources[-1]) if entry.sources[-1] != BUILTIN else None
    backend = entry.raw.get("backend")
    if not isinstance(backend, str) or not backend:
        raise ConfigError(f"{origin or BUILTIN}: provider {entry.name!r} has no 'backend'")
    if not is_known(backend):
        if entry.builtin:
            entry.unavailable = f"backend {backend!r} is not installed"
            return
        line = find_line(origin, "backend", value=backend) if origin else None
        from mngr.registry import backend_names

        raise ConfigError(
            f"{where(origin, line)}: provider {entry.name!r}: unknown backend "
            f"{backend!r}{did_you_mean(backend, backend_names())}"
        )
    model = load_backend(backend).config_model
    _refuse_url_passwords(entry, origin)
    try:
        entry._config = model.model_validate(entry.raw)
    except ValidationError as exc:
        errors = exc.errors()
        # An unknown key first: `regoin` explains the missing `region`, not the other way round.
        err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        key = str(err["loc"][0]) if err["loc"] else ""
        source = _source_of(entry, key) if key else origin
        line = find_line(source, key, provider=entry.name) if source and key else None
        if err["type"] == "extra_forbidden":
            hint = did_you_mean(
                key, [f for f in model.model_fields if f not in ("name", "backend")]
            )
            message = f"unknown key {key!r} for backend {backend!r}{hint}"
        elif err["type"] == "missing":
            message = f"missing required key {key!r} for backend {backend!r}"
        else:
            message = validation_message(err)
        raise ConfigError(f"{where(source, line)}: provider {entry.name!r}: {message}") from None


def _refuse_url_passwords(entry: ProviderEntry, origin: Path | None) -> None:
    """A password written into any URL setting would reach argv (`ps`), messages and
    dry runs: settings never hold secrets."""
    import json

    from mngr.errors import has_url_password

    for key, value in entry.raw.items():
        if has_url_password(json.dumps(value)):
            source = _source_of(entry, key) or origin
            line = find_line(source, key, provider=entry.name) if source else None
            raise ConfigError(
                f"{where(source, line)}: provider {entry.name!r}: {key!r} holds a password "
                "inside a URL, and settings never hold credentials: remove it; use token_env or "
                "token_file where the backend has them, or the vendor's own credentials "
                "(ssh keys, TLS certificates, AWS profiles)"
            )


def _source_of(entry: ProviderEntry, key: str) -> Path | None:
    """The highest file that set `key` for this provider (the one to blame)."""
    for source in reversed(entry.sources):
        if source == BUILTIN:
            continue
        if find_line(Path(source), key, provider=entry.name) is not None:
            return Path(source)
    last = entry.sources[-1]
    return None if last == BUILTIN else Path(last)


def where(path: Path | None, line: int | None) -> str:
    if path is None:
        return BUILTIN
    return f"{path}:{line}" if line else str(path)


_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?")
_TABLE_HEADER = re.compile(r"^\s*\[\s*[\"']?providers[\"']?\s*\.")
_ARRAY_HEADER = re.compile(r"^\s*\[\[\s*[\"']?providers[\"']?\s*\]\]")


def find_line_of_header(path: Path, title: str) -> int | None:
    """Line of the `[title]` header (quotes around parts ignored)."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    for number, line in enumerate(lines, 1):
        header = _HEADER.match(line)
        if header and header.group(1).replace('"', "").replace("'", "") == title:
            return number
    return None


def find_line(
    path: Path | None,
    key: str,
    *,
    provider: str | None = None,
    value: str | None = None,
    occurrence: int = 1,
) -> int | None:
    """Best-effort line number of `key = ...` (inside `provider`'s section when given)."""
    if path is None:
        return None
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    key_re = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=\s*(.*)$")
    in_section = provider is None
    seen = 0
    for number, line in enumerate(lines, 1):
        header = _HEADER.match(line)
        if header and provider is not None:
            title = header.group(1).replace('"', "").replace("'", "")
            # `[providers.NAME]`, or `[[providers]]` holding `name = "NAME"`.
            if title == "providers":
                in_section = _block_has_name(lines, number, provider)
            else:
                in_section = title == f"providers.{provider}"
            continue
        match = key_re.match(line)
        if match and in_section:
            if value is not None and value not in match.group(1):
                continue
            seen += 1
            if seen == occurrence:
                return number
    return None


def _block_has_name(lines: list[str], start: int, name: str) -> bool:
    name_re = re.compile(rf"^\s*name\s*=\s*[\"']{re.escape(name)}[\"']")
    for line in lines[start:]:
        if _HEADER.match(line):
            return False
        if name_re.match(line):
            return True
    return False
