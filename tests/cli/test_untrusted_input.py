"""A cloned repository's settings run nothing until trusted; text a provider supplies (host
names, tags) reaches the terminal with its control characters escaped in every format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_an_untrusted_project_file_runs_no_program(mngr, isolated_home: Path) -> None:
    repo = Path.cwd()
    (repo / ".mngr").mkdir()
    marker = repo / "hook-ran"
    hook = repo / ".mngr" / "hook.sh"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    hook.chmod(0o755)
    project = repo / ".mngr" / "settings.toml"
    project.write_text(f'[providers.hooked]\nbackend = "docker"\nbinary = "{hook}"\n')
    for args in (("host", "list"), ("provider", "check", "hooked"), ("host", "create", "x")):
        result = mngr(*args)
        assert result.exit_code == 2
        assert "'binary' may only be set by a settings file you trust" in result.stderr
    assert not marker.exists()
    assert mngr("config", "trust").exit_code == 0
    assert mngr("host", "list", "-p", "hooked").exit_code == 6
    assert marker.exists()  # trusted, the user's own choice is obeyed


def test_config_trust_without_a_project_file_says_where_it_looked(mngr) -> None:
    result = mngr("config", "trust")
    assert result.exit_code == 2 and "no project settings here" in result.stderr


def test_a_user_file_needs_no_trust(mngr, user_settings: Path) -> None:
    user_settings.write_text('[providers.box]\nbackend = "docker"\nbinary = "/bin/false"\n')
    assert mngr("provider", "list").exit_code == 0


EVIL = "a\x1b]0;pwned\x07\x1b[2J\x9b31m\u202eb"


@pytest.fixture
def evil_host(mngr, isolated_home: Path) -> str:
    """A host whose record (written behind mngr's back) holds terminal escapes."""
    assert mngr("host", "create", "plain").exit_code == 0
    root = isolated_home / ".local" / "share" / "mngr" / "local" / "local"
    record = json.loads((root / "plain" / ".mngr" / "host.json").read_text())
    (root / "plain").rename(root / EVIL)
    record["name"] = EVIL
    record["tags"] = {"note": "x\x1b[31my"}
    (root / EVIL / ".mngr" / "host.json").write_text(json.dumps(record))
    return EVIL


@pytest.mark.parametrize(
    "args",
    [(), ("--format", "json"), ("--format", "jsonl"), ("-q",)],
    ids=["table", "json", "jsonl", "quiet"],
)
def test_provider_text_is_escaped_in_every_format(mngr, evil_host: str, args) -> None:
    result = mngr("host", "list", *args)
    assert result.exit_code == 0, result.stderr
    for char in ("\x1b", "\x07", "\x9b", "\u202e"):
        assert char not in result.stdout + result.stderr
    if args and args[0] == "--format":
        first = json.loads(result.stdout.splitlines()[0])
        names = [h["name"] for h in first["hosts"]] if "hosts" in first else [first["name"]]
        assert names == [evil_host]  # escaped for the terminal, exact for a JSON parser
    else:
        assert len(result.stdout.strip().splitlines()) == (1 if args else 2)
