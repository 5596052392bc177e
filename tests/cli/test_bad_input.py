"""Bad input: one line naming the file/line or argument, the right exit code, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def data_dir(home: Path) -> Path:
    return home / ".local" / "share" / "mngr" / "local" / "local"


@pytest.mark.parametrize(
    "name", ["Upper", "has space", "a;b", "$(id)", "..", "a/b", "x" * 64, "", "-x"]
)
def test_bad_host_names_exit_2_and_create_nothing(mngr, isolated_home: Path, name: str) -> None:
    result = (
        mngr("host", "create", "--", name) if name.startswith("-") else mngr("host", "create", name)
    )
    assert result.exit_code == 2
    assert "invalid host name" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not data_dir(isolated_home).exists() or not any(data_dir(isolated_home).iterdir())


def test_tag_without_equals(mngr) -> None:
    result = mngr("host", "create", "a", "--tag", "novalue")
    assert result.exit_code == 2 and "expected KEY=VALUE" in result.stderr


def test_unknown_option_is_a_usage_error(mngr) -> None:
    result = mngr("host", "list", "--colour")
    assert result.exit_code == 2 and "no such option" in result.stderr


def test_bad_format_and_state(mngr) -> None:
    assert mngr("host", "list", "--format", "xml").exit_code == 2
    assert mngr("host", "list", "--state", "sleeping").exit_code == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[[providers]\n", "invalid TOML"),
        ('[[providers]]\nname = "a"\nbackend = "local"\nbogus = 1\n', "unknown key 'bogus'"),
        ('[[providers]]\nname = "a"\nbackend = "nope"\n', "unknown backend 'nope'"),
        ('[[providers]]\nbackend = "local"\n', "has no 'name'"),
    ],
)
def test_bad_settings_exit_2_naming_the_file(mngr, user_settings: Path, text, expected) -> None:
    user_settings.write_text(text)
    result = mngr("host", "list")
    assert result.exit_code == 2
    assert expected in result.stderr and str(user_settings) in result.stderr
    assert "Traceback" not in result.stderr


def test_provider_add_on_a_broken_file_changes_nothing(mngr, user_settings: Path) -> None:
    user_settings.write_text("# mine\n[[providers]\n")
    before = user_settings.read_bytes()
    result = mngr("provider", "add", "x", "--backend", "local")
    assert result.exit_code == 2 and "invalid TOML" in result.stderr
    assert user_settings.read_bytes() == before


def test_provider_add_keeps_comments_and_remove_undoes_it(mngr, user_settings: Path) -> None:
    original = '# my providers\n[[providers]]  # first\nname = "a"\nbackend = "local"\n'
    user_settings.write_text(original)
    assert mngr("provider", "add", "b", "--backend", "local", "--set", "timeout_s=5").exit_code == 0
    text = user_settings.read_text()
    assert text.startswith(original) and 'name = "b"' in text and "timeout_s = 5" in text
    assert mngr("provider", "add", "b", "--backend", "local").exit_code == 1
    assert mngr("provider", "add", "c", "--backend", "lokal").exit_code == 2
    assert mngr("provider", "add", "c", "--backend", "local", "--set", "roots=x").exit_code == 2
    assert mngr("provider", "remove", "b", "--yes").exit_code == 0
    assert user_settings.read_text() == original
    assert mngr("provider", "remove", "b", "--yes").exit_code == 3


def test_provider_add_project_scope(mngr, isolated_home: Path) -> None:
    assert mngr("provider", "add", "p", "--backend", "local", "--scope", "project").exit_code == 0
    assert (Path.cwd() / ".mngr" / "settings.toml").exists()
    shown = mngr("config", "show", "--format", "json").stdout
    assert '"p"' in shown and ".mngr/settings.toml" in shown


def test_interrupted_settings_write_leaves_the_old_file(user_settings: Path, monkeypatch) -> None:
    from mngr import settings_file

    user_settings.write_text("# keep me\n")

    def boom(src: str, dst: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(settings_file.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        settings_file.add_provider("x", "local", [], "user")
    assert user_settings.read_text() == "# keep me\n"
    assert [p.name for p in user_settings.parent.iterdir()] == ["settings.toml"]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mngr", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def test_console_script_errors_have_no_traceback_unless_debug(user_settings: Path) -> None:
    user_settings.write_text("[[providers]\n")
    plain = run_cli("host", "list")
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert len(plain.stderr.strip().splitlines()) == 1


def test_version_and_help(isolated_home: Path) -> None:
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("mngr ")
    helped = run_cli("host", "create", "--help")
    assert helped.returncode == 0 and "--from-snapshot" in helped.stdout


def test_a_reader_that_goes_away_is_not_an_error(mngr, isolated_home: Path) -> None:
    assert mngr("host", "create", *[f"h{i}" for i in range(300)]).exit_code == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "mngr", "host", "list", "--format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.read(10)
    proc.stdout.close()  # more than a pipe buffer is still to come
    assert proc.wait(60) == 0
    assert proc.stderr is not None and proc.stderr.read() == b""


def test_every_help_lists_its_arguments_once(mngr) -> None:
    """One "Arguments" section whatever the click version (8.5 adds its own section)."""
    import click

    from mngr.cli import app

    def paths(group: click.Group, prefix: list[str]) -> list[list[str]]:
        found = []
        for name, command in group.commands.items():
            found.append([*prefix, name])
            if isinstance(command, click.Group):
                found += paths(command, [*prefix, name])
        return found

    checked = 0
    for path in paths(app, []):
        helped = mngr(*path, "--help")
        assert helped.exit_code == 0, path
        assert "Positional arguments" not in helped.stdout, path
        assert helped.stdout.count("Arguments:") <= 1, path
        checked += "Arguments:" in helped.stdout
    assert checked > 10  # commands with arguments were among them
