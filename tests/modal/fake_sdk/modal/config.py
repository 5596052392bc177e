"""`modal.config` of the test double: the server URL, which the double never dials (unset, the
shim's reachability probe is skipped)."""

from __future__ import annotations

import os
from typing import Any


class Config:
    def get(self, key: str, *, profile: str | None = None, use_env: bool = True) -> Any:
        return os.environ.get("MODAL_" + key.upper()) if key == "server_url" else None


config = Config()
