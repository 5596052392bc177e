"""The completion fast path: what a TAB offers, what it imports, and the shell scripts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mngr import completion, paths
from mngr.completion import complete
from tests.conftest import require

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("typer", "click", "pydantic", "rich", "mngr_backends")


def values(*words: str) -> list[str]:
    return complete(list(words)).values


def make_local_host(name: str, provider: str = "local", root: Path | None = None) -> None:
    folder = (root or paths.data_home() / "local" / provider) / name / ".mngr"
    folder.mkdir(parents=True)
    (folder / "host.json").write_text(json.dumps({"name": name}))


def write_cache(names: dict[str, list[str]]) -> None:
    paths.host_names_cache().parent.mkdir(parents=True, exist_ok=True)
    paths.host_names_cache().write_text(json.dumps(names))


def test_commands_and_subcommands_complete_by_prefix() -> None:
    assert {"completion", "config", "host", "provider"} <= set(values(""))
    assert values("ho") == ["host"]
    assert set(values("host", "")) >= {"create", "list", "destroy", "snapshot", "exec"}
    assert values("host", "snapshot", "d") == ["delete"]


def test_options_of_the_command_being_typed() -> None:
    assert values("host", "list", "--f") == ["--format"]
    assert "--dry-run" in values("host", "create", "--")
    assert values("-") == ["--config", "--jobs", "--timeout", "--version", "--help"]
    assert values("host", "list", "-q") == ["-q"]


def test_an_option_given_once_is_not_offered_again_unless_repeatable() -> None:
    offered = values("host", "list", "--quiet", "--tag", "a=b", "--")
    assert "--quiet" not in offered and "--tag" in offered


def test_fixed_option_values() -> None:
    assert values("host", "list", "--format", "") == ["table", "json", "jsonl"]
    assert values("host", "list", "--state", "st") == ["stopping", "stopped"]
    assert values("completion", "") == ["bash", "zsh", "fish"]
    assert "local" in values("provider", "add", "x", "--backend", "")
    assert values("provider", "add", "x", "--scope", "") == ["user", "project", "local"]


def test_providers_come_from_both_settings_forms_across_layers(
    user_settings: Path, tmp_path: Path
) -> None:
    user_settings.write_text('[[providers]]\nname = "prod"\nbackend = "aws"\n')
    project = tmp_path / "work" / ".mngr" / "settings.toml"
    project.parent.mkdir(parents=True)
    project.write_text('[providers.remote-docker]\nbackend = "docker"\n')
    found = complete(["host", "list", "--provider", ""]).candidates
    assert ("prod", "aws") in found and ("remote-docker", "docker") in found
    assert ("local", "local") in found
    assert values("provider", "show", "pr") == ["prod"]


def test_a_broken_settings_file_does_not_hide_the_others(
    user_settings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_settings.write_text("[[providers]\nname = ")
    extra = tmp_path / "extra.toml"
    extra.write_text('[providers.mine]\nbackend = "local"\n')
    monkeypatch.setenv("MNGR_CONFIG", str(extra))
    offered = values("host", "list", "-p", "")
    assert "local" in offered and "mine" in offered


def test_config_typed_on_the_line_is_read(tmp_path: Path) -> None:
    extra = tmp_path / "extra.toml"
    extra.write_text('[providers.from-flag]\nbackend = "local"\n')
    assert "from-flag" in values("--config", str(extra), "host", "list", "-p", "")
    assert "from-flag" not in values("host", "list", "-p", "")


def test_hosts_come_from_local_directories_and_the_list_cache(
    user_settings: Path, tmp_path: Path
) -> None:
    make_local_host("web-1")
    (paths.data_home() / "local" / "local" / "half-made").mkdir()  # no record yet
    root = tmp_path / "boxes"
    user_settings.write_text(
        f'[[providers]]\nname = "box"\nbackend = "local"\nroot = "{root}"\n'
        '[[providers]]\nname = "prod"\nbackend = "aws"\n'
    )
    make_local_host("db", root=root)
    write_cache({"prod": ["api-1"], "local": ["stale-one"], "removed-provider": ["x"]})
    found = complete(["host", "destroy", ""]).candidates
    assert found == [("api-1", "prod"), ("db", "box"), ("web-1", "local")]


def test_host_names_are_filtered_by_provider_and_already_given_names(user_settings: Path) -> None:
    user_settings.write_text('[[providers]]\nname = "prod"\nbackend = "aws"\n')
    make_local_host("web-1")
    make_local_host("web-2")
    write_cache({"prod": ["api-1", "web-1"]})
    assert values("host", "stop", "--provider", "prod", "") == ["api-1", "web-1"]
    assert values("host", "stop", "-p=local", "") == ["web-1", "web-2"]
    assert "web-1" not in values("host", "destroy", "web-1", "")
    # An ambiguous name is offered qualified too; a typed `.` asks for qualified names.
    assert values("host", "exec", "web-1") == ["web-1", "web-1.local", "web-1.prod"]
    assert values("host", "exec", "web-1.") == ["web-1.local", "web-1.prod"]


def test_host_name_slots_only_where_a_host_is_meant() -> None:
    make_local_host("web-1")
    assert values("host", "snapshot", "create", "") == ["web-1"]
    assert values("host", "create", "") == []  # a new name
    assert values("host", "exec", "web-1", "--", "") == []  # the command to run
    assert values("host", "snapshot", "delete", "") == []


def test_settings_file_option_asks_the_shell_for_file_names() -> None:
    result = complete(["--config", "some/pa"])
    assert result.files == "some/pa"
    assert completion.render("bash", result) == [completion.FILES, "some/pa"]


def test_value_in_the_same_word_as_its_option() -> None:
    result = complete(["host", "list", "--format=js"])
    assert completion.render("bash", result) == ["json", "jsonl"]  # bash replaces after `=`
    assert completion.render("fish", result) == ["--format=json", "--format=jsonl"]
    assert completion.render("zsh", result) == ["--format=json", "--format=jsonl"]


def test_bash_words_split_at_equals_are_joined_again(capsys: pytest.CaptureFixture[str]) -> None:
    assert completion.answer(["bash", "--", "host", "list", "--format", "=", "j"]) == 0
    assert capsys.readouterr().out.split() == ["json", "jsonl"]
    assert completion.answer(["bash", "--", "host", "list", "--format", "="]) == 0
    assert capsys.readouterr().out.split() == ["table", "json", "jsonl"]


def test_descriptions_for_zsh_and_fish(capsys: pytest.CaptureFixture[str]) -> None:
    completion.answer(["fish", "--", "host", "li"])
    assert capsys.readouterr().out == "list\tList hosts of every provider (or the given ones)\n"
    completion.answer(["zsh", "--", "host", "li"])
    assert capsys.readouterr().out == "list:List hosts of every provider (or the given ones)\n"


def test_bad_request_is_a_usage_error_without_candidates(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert completion.answer(["tcsh", "--", "host"]) == 2
    assert capsys.readouterr().out == ""


def test_a_corrupt_cache_is_ignored() -> None:
    paths.host_names_cache().parent.mkdir(parents=True)
    paths.host_names_cache().write_text("{not json")
    make_local_host("web-1")
    assert values("host", "stop", "") == ["web-1"]


# --- through a real process and real shells -------------------------------------------------


@pytest.fixture
def mngr_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `mngr` command on PATH that runs this checkout's code."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    launcher = bin_dir / "mngr"
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m mngr "$@"\n')
    launcher.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    return launcher


def test_a_tab_imports_nothing_heavy(mngr_on_path: Path) -> None:
    make_local_host("web-1")
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "mngr", "__complete", "bash", "--"]
        + ["host", "destroy", "--provider", "local", ""],
        capture_output=True,
        text=True,
        check=True,
    )
    assert run.stdout.split() == ["web-1"]
    imported = [line.split("|")[-1].strip() for line in run.stderr.splitlines()]
    heavy = [m for m in imported if m.split(".")[0] in HEAVY or m in ("mngr.cli", "mngr.backend")]
    assert heavy == []


def test_completion_command_prints_the_committed_scripts(mngr_on_path: Path) -> None:
    for shell in completion.SHELLS:
        out = subprocess.run(
            ["mngr", "completion", shell], capture_output=True, text=True, check=True
        ).stdout
        assert out == (REPO / "completions" / f"mngr.{shell}").read_text()


def test_bash_script_completes_through_the_real_command(
    mngr_on_path: Path, isolated_home: Path
) -> None:
    make_local_host("web-1")
    (isolated_home / "bin").mkdir()
    (isolated_home / "bin" / "mngr").symlink_to(mngr_on_path)
    script = REPO / "completions" / "mngr.bash"
    probe = (
        f'source "{script}"\n'
        'c() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMPREPLY=(); _mngr_complete;'
        ' printf "%s," "${COMPREPLY[@]}"; echo; }\n'
        'c mngr ho\nc mngr host destroy ""\nc mngr host list --format = js\nc mngr --config /e\n'
        'c "~/bin/mngr" ho\n'
    )
    out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["host,", "web-1,", "json,jsonl,", "/etc,", "host,"]


def test_fish_script_completes_through_the_real_command(
    mngr_on_path: Path, isolated_home: Path
) -> None:
    require(shutil.which("fish") is not None, "fish is not installed")
    make_local_host("web-1")
    script = REPO / "completions" / "mngr.fish"
    (isolated_home / "bin").mkdir()
    (isolated_home / "bin" / "mngr").symlink_to(mngr_on_path)
    probe = (
        f'source "{script}"; complete -C "mngr host stop "; complete -C "mngr host li";'
        ' complete -C "~/bin/mngr host sto"'
    )
    out = subprocess.run(["fish", "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [
        "web-1\tlocal",
        "list\tList hosts of every provider (or the given ones)",
        "stop\tStop hosts",
    ]


ZSH_CAPTURE = r"""
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "PROMPT=; fpath=($1 \$fpath); autoload -U compinit; compinit -u -D"
zpty -w z 'compadd () {
  if [[ ${@[1,(i)(-|--)]} == *-(O|A|D)\ * ]]; then builtin compadd "$@"; return $?; fi
  typeset -a __hits; builtin compadd -A __hits "$@"
  local h; for h in $__hits; do print -r -- "<<$h>>"; done
}'
zpty -w z "bindkey '^I' complete-word"
zpty -w z "print -r -- ::start::"
zpty -r z line '*::start::*'
zpty -n -w z "$2"$'\t'
sleep 1
while zpty -r -t z line; do
  [[ $line == *'<<'*'>>'* ]] && print -r -- ${${line#*<<}%%>>*}
done
zpty -d z
"""


def test_zsh_script_completes_through_the_real_command(
    mngr_on_path: Path, tmp_path: Path, isolated_home: Path
) -> None:
    require(shutil.which("zsh") is not None, "zsh is not installed")
    make_local_host("web-1")
    fpath = tmp_path / "zfunc"
    fpath.mkdir()
    shutil.copy(REPO / "completions" / "mngr.zsh", fpath / "_mngr")
    capture = tmp_path / "capture.zsh"
    capture.write_text(ZSH_CAPTURE)

    def tab(line: str) -> list[str]:
        run = subprocess.run(
            ["zsh", "-f", str(capture), str(fpath), line],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return run.stdout.split()

    (isolated_home / "bin").mkdir()
    (isolated_home / "bin" / "mngr").symlink_to(mngr_on_path)
    assert tab("mngr host sto") == ["stop"]
    assert tab("~/bin/mngr host sto") == ["stop"]
    assert tab("mngr host stop ") == ["web-1"]
    assert tab("mngr host list --format=j") == ["--format=json", "--format=jsonl"]


def test_providers_come_from_every_layer_in_both_forms(
    user_settings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_settings.write_text('[[providers]]\nname = "a"\nbackend = "local"\n')
    (tmp_path / "work" / ".mngr").mkdir()
    (tmp_path / "work" / ".mngr" / "settings.toml").write_text('[providers.b]\nbackend = "aws"\n')
    broken = tmp_path / "env.toml"
    broken.write_text("[[providers]\n")  # a broken layer is skipped, never an error
    monkeypatch.setenv("MNGR_CONFIG", str(broken))
    found = completion.providers()
    assert found["a"] == "local" and found["b"] == "aws" and found["local"] == "local"


def test_a_disabled_provider_is_not_offered(user_settings: Path) -> None:
    user_settings.write_text('[providers.off]\nbackend = "local"\nenabled = false\n')
    assert "off" not in completion.providers()
