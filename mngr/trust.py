"""Which project settings files the user trusts, by path and content hash (as direnv does).

A `.mngr/settings.toml` or `.mngr/settings.local.toml` found by walking up from the working
directory may come from someone else's repository. Until `mngr config trust` records its
path and the SHA-256 of its bytes, it may not set a key its backend marks as needing trust
(where a credential is sent, which program runs); any change to the file needs trusting
again. The record lives in the user's state folder, never in the project. Stdlib only.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from mngr import paths
from mngr.errors import ConfigError

UNTRUSTED_LAYERS = ("project", "local")


def store() -> Path:
    return paths.state_home() / "trusted.json"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _load() -> dict[str, str]:
    try:
        recorded = json.loads(store().read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{store()}: cannot read the trusted files ({exc})") from None
    if not isinstance(recorded, dict):
        raise ConfigError(f"{store()}: not a record of trusted files; remove it to start over")
    return {str(k): str(v) for k, v in recorded.items()}


def _save(recorded: dict[str, str]) -> None:
    target = store()
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, target)


def is_trusted(path: Path, content_digest: str) -> bool:
    return _load().get(str(path.resolve())) == content_digest


def trust(path: Path) -> str:
    """Trust the file as it is now; returns the digest recorded."""
    resolved = path.resolve()
    try:
        data = resolved.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    recorded = _load()
    recorded[str(resolved)] = digest(data)
    _save(recorded)
    return recorded[str(resolved)]


def untrust(path: Path) -> bool:
    """Forget the file; False when it was not trusted."""
    recorded = _load()
    if recorded.pop(str(path.resolve()), None) is None:
        return False
    _save(recorded)
    return True
