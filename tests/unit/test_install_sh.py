"""install.sh, run for real against an empty HOME (pip installs from this checkout)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "install.sh"


def run_install(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("XDG_", "MNGR_", "VIRTUAL_ENV", "PYTHON"))
    }
    # pip runs `rustc --version` for its user agent, and rustup's proxy then creates
    # ~/.rustup in an empty HOME: that file would not be install.sh's doing.
    path = [d for d in base["PATH"].split(os.pathsep) if not (Path(d) / "rustup").exists()]
    base.update(
        {
            "HOME": str(home),
            "PATH": os.pathsep.join(path),
            "SHELL": "/bin/bash",
            "MNGR_PYTHON": sys.executable,
        }
    )
    base.update(env)
    return subprocess.run(
        ["bash", str(INSTALL), *args],
        env=base,
        capture_output=True,
        text=True,
        timeout=240,
    )


def assert_every_module_ships(link: Path, cwd: Path) -> None:
    """The installed (non-editable) packages hold every module of the checkout: a package
    missing from pyproject.toml breaks every command of an installed mngr, and an editable
    install (the rest of the suite) never notices."""
    python = link.resolve().parent / "python"
    where = subprocess.run(
        [
            python,
            "-c",
            "import mngr, mngr_backends; print(mngr.__path__[0]); print(mngr_backends.__path__[0])",
        ],
        cwd=cwd,  # not the checkout, whose folders would shadow the installed packages
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for source, installed in zip((REPO / "mngr", REPO / "backends"), where, strict=True):
        assert Path(installed).resolve() != source.resolve(), "an editable install"
        wanted = {str(p.relative_to(source)) for p in source.rglob("*.py")}
        shipped = {str(p.relative_to(installed)) for p in Path(installed).rglob("*.py")}
        assert wanted <= shipped, f"not installed: {sorted(wanted - shipped)}"


def assert_a_host_lives_and_dies(link: Path, home: Path, tmp_path: Path) -> None:
    """What the README's first command does, through the installed mngr (its data outside
    HOME, whose emptiness after uninstall is checked below)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "MNGR_"))}
    env |= {"HOME": str(home), "NO_COLOR": "1"}
    env |= {
        f"XDG_{d}_HOME": str(tmp_path / d.lower()) for d in ("DATA", "STATE", "CONFIG", "CACHE")
    }
    for argv in (
        ["host", "create", "demo", "-p", "local"],
        ["host", "exec", "demo", "--", "echo", "ok"],
        ["host", "list", "-p", "local", "-q"],
        ["host", "destroy", "demo", "--yes"],
    ):
        done = subprocess.run([link, *argv], env=env, cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 0, (argv, done.stderr)
        if argv[1] == "exec":
            assert done.stdout == "ok\n"


def everything_in(home: Path) -> list[str]:
    return sorted(str(p.relative_to(home)) for p in home.rglob("*"))


@pytest.mark.slow
def test_install_twice_then_uninstall_leaves_an_empty_home(tmp_path: Path) -> None:
    home = tmp_path / "empty-home"
    home.mkdir()
    link = home / ".local" / "bin" / "mngr"

    first = run_install(home, "--no-completion", SHELL="/bin/zsh")
    assert first.returncode == 0, first.stderr
    assert f"linked {link}" in first.stdout
    assert not (home / ".local" / "share" / "zsh").exists()
    version = subprocess.run([link, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout == "mngr 0.1.0\n"
    assert link.resolve().is_relative_to(home / ".local" / "share" / "mngr" / "venv")
    assert_every_module_ships(link, tmp_path)
    assert_a_host_lives_and_dies(link, home, tmp_path)

    second = run_install(home)  # again, now with completion for bash
    assert second.returncode == 0, second.stderr
    assert "already links" in second.stdout
    bash_completion = home / ".local/share/bash-completion/completions/mngr"
    assert bash_completion.read_text() == (REPO / "completions" / "mngr.bash").read_text()
    # The installed (non-editable) package answers TAB with its shipped command tree.
    tab = subprocess.run(
        [link, "__complete", "bash", "--", "host", "li"], capture_output=True, text=True
    )
    assert tab.stdout == "list\n"
    assert subprocess.run([link, "--version"], capture_output=True).returncode == 0

    gone = run_install(home, "--uninstall")
    assert gone.returncode == 0, gone.stderr
    assert everything_in(home) == []
    assert run_install(home, "--uninstall").returncode == 0  # nothing left to remove


def test_uninstall_keeps_host_data_in_the_data_dir(tmp_path: Path) -> None:
    home = tmp_path / "home-with-hosts"
    manifest_dir = home / ".local" / "share" / "mngr"
    (manifest_dir / "local" / "local" / "web-1").mkdir(parents=True)
    (manifest_dir / "install-manifest").write_text(
        f"dir\t{home / '.local'}\ndir\t{home / '.local/share'}\ndir\t{manifest_dir}\n"
    )
    (home / ".config" / "mngr").mkdir(parents=True)
    (home / ".config" / "mngr" / "settings.toml").write_text("")
    done = run_install(home, "--uninstall")
    assert done.returncode == 0, done.stderr
    assert (manifest_dir / "local" / "local" / "web-1").is_dir()
    assert f"kept {manifest_dir} (not empty)" in done.stdout
    assert f"kept: settings {home / '.config' / 'mngr' / 'settings.toml'}" in done.stdout
    assert "kept: snapshots" in done.stdout


def test_without_python_311_it_says_so_and_writes_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"  # the conftest's isolated HOME: empty
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    old_python = fake_bin / "python3"
    old_python.write_text("#!/bin/sh\nexit 1\n")  # "sys.version_info < (3, 11)"
    old_python.chmod(0o755)
    for tool in ("dirname",):
        found = shutil.which(tool)
        assert found is not None
        (fake_bin / tool).symlink_to(found)
    env = {"HOME": str(home), "PATH": str(fake_bin), "SHELL": "/bin/bash"}
    done = subprocess.run(
        ["/bin/bash", str(INSTALL)], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 1
    assert "needs Python 3.11 or newer" in done.stderr
    assert everything_in(home) == []

    named = run_install(home, MNGR_PYTHON=str(old_python))
    assert named.returncode == 1 and "MNGR_PYTHON" in named.stderr
    assert everything_in(home) == []


def test_unknown_argument_is_a_usage_error(tmp_path: Path) -> None:
    done = run_install(tmp_path, "--frobnicate")
    assert done.returncode == 2 and "unknown argument: --frobnicate" in done.stderr


@pytest.mark.slow
def test_relative_xdg_dirs_are_ignored_as_mngr_ignores_them(tmp_path: Path) -> None:
    # XDG_DATA_HOME=rel put the venv under the working directory and linked
    # ~/.local/bin/mngr -> rel/mngr/venv/bin/mngr: a dangling link.
    home = tmp_path / "fresh-home"
    home.mkdir()
    work = tmp_path / "elsewhere"
    work.mkdir()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "MNGR_"))}
    result = subprocess.run(
        ["bash", str(INSTALL), "--no-completion"],
        env={**base, "HOME": str(home), "MNGR_PYTHON": sys.executable, "XDG_DATA_HOME": "rel"},
        cwd=work,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr
    assert not (work / "rel").exists()
    link = home / ".local" / "bin" / "mngr"
    assert link.resolve().is_relative_to(home / ".local" / "share" / "mngr" / "venv")
    assert subprocess.run([link, "--version"], capture_output=True).returncode == 0


def test_unknown_extras_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    home = tmp_path / "empty-home"
    home.mkdir()
    done = subprocess.run(
        [str(INSTALL), "--with", "gpu"],
        capture_output=True,
        text=True,
        env={**os.environ, "HOME": str(home)},
        timeout=30,
    )
    assert done.returncode == 2 and "unknown extras 'gpu'" in done.stderr
    assert list(home.iterdir()) == []
