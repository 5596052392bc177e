"""Odd settings, names and faults found by adversarial QA: each gives one clear line and the
right exit code, and leaves nothing half-made."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.parametrize("value", ["0", "-5", "inf", "nan"])
def test_timeout_must_be_a_positive_finite_number(mngr, user_settings: Path, value: str) -> None:
    # A zero or negative timeout made every list of the provider "did not answer within 0s".
    user_settings.write_text(f'[providers.x]\nbackend = "local"\ntimeout_s = {value}\n')
    result = mngr("host", "list", "-p", "x")
    assert result.exit_code == 2
    assert f"{user_settings}:3: provider 'x': timeout_s" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
