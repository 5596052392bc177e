"""Backends are found through the `mngr.backends` entry-point group and imported lazily:
nothing here imports a backend module until a provider of that backend is used."""

from __future__ import annotations

from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING

from mngr.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from mngr.backend import Backend

GROUP = "mngr.backends"

# Backends registered in-process (tests, embedding); looked up before entry points.
_registered: dict[str, type[Backend]] = {}


def register(name: str, cls: type[Backend]) -> None:
    _registered[name] = cls
    load_backend.cache_clear()


def unregister(name: str) -> None:
    _registered.pop(name, None)
    load_backend.cache_clear()


@cache
def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def backend_names() -> list[str]:
    return sorted({*_entry_points(), *_registered})


def is_known(name: str) -> bool:
    return name in _registered or name in _entry_points()


@cache
def load_backend(name: str) -> type[Backend]:
    if name in _registered:
        return _registered[name]
    ep = _entry_points().get(name)
    if ep is None:
        raise ConfigError(f"unknown backend {name!r}{did_you_mean(name, backend_names())}")
    return ep.load()
