"""`modal.experimental` of the test double: the one call the shim makes."""

from __future__ import annotations

from typing import Any

from modal import NotFoundError, _call, _state


def image_delete(image_id: str, *, client: Any = None) -> None:
    _call("experimental.image_delete", image_id=image_id)
    with _state() as state:
        if state["images"].pop(image_id, None) is None:
            raise NotFoundError(f"Image {image_id} not found")
