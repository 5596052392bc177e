"""Where mngr reads settings and keeps its (non-authoritative) files. Stdlib only."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_DIR = ".mngr"
PROJECT_FILE = "settings.toml"
LOCAL_FILE = "settings.local.toml"


def _xdg(var: str, default: str) -> Path:
    value = os.environ.get(var)
    if value and os.path.isabs(value):
        return Path(value)
    return Path.home() / default


def config_home() -> Path:
    return _xdg("XDG_CONFIG_HOME", ".config") / "mngr"


def data_home() -> Path:
    return _xdg("XDG_DATA_HOME", ".local/share") / "mngr"


def cache_home() -> Path:
    return _xdg("XDG_CACHE_HOME", ".cache") / "mngr"


def state_home() -> Path:
    return _xdg("XDG_STATE_HOME", ".local/state") / "mngr"


def user_settings() -> Path:
    return config_home() / "settings.toml"


def project_dir(start: Path | None = None) -> Path | None:
    """The nearest `.mngr/` directory holding settings, walking up from the working dir."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / PROJECT_DIR
        if (candidate / PROJECT_FILE).exists() or (candidate / LOCAL_FILE).exists():
            return candidate
    return None


def host_names_cache() -> Path:
    return cache_home() / "host-names.json"


def install_hint(extra: str) -> str:
    """How to add an optional extra, in the way this mngr was installed: install.sh keeps its
    virtual environment under the data folder; anything else was a pip install."""
    import sys

    try:
        by_script = Path(sys.prefix).resolve() == (data_home() / "venv").resolve()
    except OSError:
        by_script = False
    if by_script:
        return f"./install.sh --with {extra} (run from your mngr checkout)"
    return f"pip install 'mngr[{extra}]'"
