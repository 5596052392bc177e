"""The README's settings examples stay valid settings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mngr import config

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"```toml\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_settings_examples_load(block: str, tmp_path: Path) -> None:
    path = tmp_path / "settings.toml"
    path.write_text(block)
    settings = config.load(path)
    assert all(
        entry.config is not None or entry.unavailable for entry in settings.providers.values()
    )


def test_readme_has_settings_examples() -> None:
    assert len(BLOCKS) >= 2
