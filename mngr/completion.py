"""Shell completion: the `mngr __complete` fast path and the shell scripts that call it.

A TAB runs `mngr __complete SHELL -- WORD... CURRENT`. The answer comes from the command
tree in `completion_tree.json` (generated from the click app by `mngr.completion_gen`),
provider names read raw from the settings files, and host names from the local backend's
directories plus the cache that each `mngr host list` refreshes. No vendor CLI is called
and nothing heavy is imported: stdlib and `mngr.paths` only (`mngr.config` alone would
double the time of a TAB, so its layer paths are mirrored here, pinned by a test).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from mngr import paths

TYPE_CHECKING = False  # `typing` costs 3 ms at start-up; only type checkers need it here
if TYPE_CHECKING:
    from typing import Any

SHELLS = ("bash", "zsh", "fish")
TREE_FILE = Path(__file__).with_name("completion_tree.json")
FILES = "::files"  # first line of an answer that asks the shell to complete file names

Candidate = tuple[str, str]  # (value, description)


def answer(args: list[str]) -> int:
    """`mngr __complete SHELL -- WORD...`: print one candidate per line; never fail loudly."""
    if len(args) < 2 or args[0] not in SHELLS or args[1] != "--":
        sys.stderr.write("usage: mngr __complete bash|zsh|fish -- WORD... CURRENT\n")
        return 2
    shell, words = args[0], args[2:]
    if shell == "bash":
        words = _join_bash_equals(words)
    try:
        lines = render(shell, complete(words))
    except Exception:  # a broken settings file or cache must not spill onto the prompt
        if os.environ.get("MNGR_DEBUG"):
            raise
        return 1
    # A name holding control characters (from a provider's labels) is never offered: it
    # cannot be typed, and would reach the terminal raw.
    lines = [line for line in lines if line.replace("\t", " ").isprintable()]
    if lines:
        sys.stdout.write("\n".join(lines) + "\n")
    return 0


def render(shell: str, result: Completion) -> list[str]:
    if result.files is not None:
        return [FILES, result.files]
    if shell == "bash":  # bash replaces only the text after `=`; the others the whole word
        return result.values
    values = [result.prefix + value for value in result.values]
    descriptions = [desc for _, desc in result.candidates]
    if shell == "zsh":  # _describe's "value:description", colons in the value escaped
        return [
            value.replace(":", r"\:") + (f":{desc}" if desc else "")
            for value, desc in zip(values, descriptions, strict=True)
        ]
    return [
        f"{value}\t{desc}" if desc else value
        for value, desc in zip(values, descriptions, strict=True)
    ]


class Completion:
    def __init__(
        self,
        candidates: list[Candidate] | None = None,
        *,
        files: str | None = None,
        prefix: str = "",
    ) -> None:
        self.candidates = candidates or []
        self.files = files  # the partial path, when the shell should complete file names
        self.prefix = prefix  # `--option=` when the value is typed in the same word

    @property
    def values(self) -> list[str]:
        return [value for value, _ in self.candidates]


def _join_bash_equals(words: list[str]) -> list[str]:
    """bash splits `--provider=lo` into `--provider`, `=`, `lo` (COMP_WORDBREAKS): rejoin."""
    joined: list[str] = []
    glue = False
    for word in words:
        if word == "=" and joined:
            joined[-1] += "="
            glue = True
        elif glue:
            joined[-1] += word
            glue = False
        else:
            joined.append(word)
    return joined


# --- the command line so far --------------------------------------------------------------


def load_tree() -> dict[str, Any]:
    return json.loads(TREE_FILE.read_text(encoding="utf-8"))


def _find_option(node: dict[str, Any], name: str) -> dict[str, Any] | None:
    for option in node["options"]:
        if name in option["names"]:
            return option
    return None


def complete(words: list[str], tree: dict[str, Any] | None = None) -> Completion:
    """Candidates for the last word, given the words typed after `mngr` before it."""
    node = tree or load_tree()
    *done, current = words or [""]
    given: dict[str, list[str]] = {}  # option dest -> values typed (e.g. provider, config)
    used: set[str] = set()  # dests of options already given at this level
    positionals: list[str] = []
    expecting: dict[str, Any] | None = None  # option waiting for its value
    after_dashes = False
    for word in done:
        if expecting is not None:
            given.setdefault(expecting["dest"], []).append(word)
            expecting = None
        elif after_dashes:
            positionals.append(word)
        elif word == "--":
            after_dashes = True
        elif word.startswith("-") and word != "-":
            name, eq, value = word.partition("=")
            option = _find_option(node, name)
            if option is None:
                continue
            used.add(option["dest"])
            if option["value"] is not None:
                if eq:
                    given.setdefault(option["dest"], []).append(value)
                else:
                    expecting = option
        elif word in node["commands"] and not positionals:
            node = node["commands"][word]
            used = set()
        else:
            positionals.append(word)

    if expecting is not None:
        return _values(expecting["value"], current, given, [])
    if current.startswith("-") and not after_dashes:
        name, eq, partial = current.partition("=")
        if eq and current.startswith("--"):
            option = _find_option(node, name)
            if option is None or option["value"] is None:
                return Completion()
            found = _values(option["value"], partial, given, [])
            found.prefix = name + "="
            return found
        return Completion(_options(node, current, used))
    if node["commands"]:
        return Completion(
            [
                (name, sub["help"])
                for name, sub in node["commands"].items()
                if name.startswith(current)
            ]
        )
    argument = _argument_at(node, len(positionals))
    if argument is None:
        return Completion(_options(node, current, used)) if not after_dashes else Completion()
    if after_dashes and argument["nargs"] == -1 and argument["value"] is None:
        return Completion()
    return _values(argument["value"], current, given, positionals)


def _argument_at(node: dict[str, Any], index: int) -> dict[str, Any] | None:
    for argument in node["args"]:
        if argument["nargs"] == -1:
            return argument
        if index == 0:
            return argument
        index -= 1
    return None


def _options(node: dict[str, Any], current: str, used: set[str]) -> list[Candidate]:
    """Long options (short ones only when typed), minus those given already once."""
    found = []
    for option in node["options"]:
        if option["dest"] in used and not option["multiple"]:
            continue
        names = [n for n in option["names"] if n.startswith("--")] or option["names"]
        if len(current) == 2 and not current.startswith("--"):
            names = [n for n in option["names"] if n == current]
        found += [(n, option["help"]) for n in names if n.startswith(current)]
    return found


# --- values ---------------------------------------------------------------------------------


def _values(
    kind: str | list[str] | None, partial: str, given: dict[str, list[str]], taken: list[str]
) -> Completion:
    if isinstance(kind, list):
        return Completion([(c, "") for c in kind if c.startswith(partial)])
    if kind == "files":
        return Completion(files=partial)
    if kind == "providers":
        found = providers(_explicit_config(given))
        return Completion(
            [(name, backend) for name, backend in found.items() if name.startswith(partial)]
        )
    if kind == "hosts":
        wanted = given.get("provider") or None
        found = hosts(_explicit_config(given), wanted)
        return Completion(
            [
                (ref, provider)
                for ref, provider in _host_refs(found, partial)
                if ref.startswith(partial) and ref not in taken
            ]
        )
    return Completion()


def _explicit_config(given: dict[str, list[str]]) -> Path | None:
    typed = given.get("config")
    return Path(os.path.expanduser(typed[-1])) if typed else None


def _host_refs(found: list[tuple[str, str]], partial: str) -> list[Candidate]:
    """NAME for each host; NAME.PROVIDER too once a `.` is typed or a name is ambiguous."""
    count: dict[str, int] = {}
    for name, _ in found:
        count[name] = count.get(name, 0) + 1
    refs: dict[str, str] = {}
    for name, provider in found:
        if "." not in partial:
            refs.setdefault(name, provider)
        if "." in partial or count[name] > 1:
            refs[f"{name}.{provider}"] = provider
    return list(refs.items())


def providers(explicit: Path | None = None) -> dict[str, str]:
    """Provider name -> backend, across the settings layers, read raw and leniently."""
    found = {
        name: str(raw.get("backend", ""))
        for name, raw in _provider_tables(explicit).items()
        if raw.get("enabled", True) is not False  # a disabled provider is not offered
    }
    return dict(sorted(found.items()))


def _provider_tables(explicit: Path | None) -> dict[str, dict[str, Any]]:
    """Raw provider tables across the settings layers; a broken file is skipped (a TAB
    never fails), a valid one is read exactly as `mngr.config` reads it."""
    from mngr import config
    from mngr.errors import ConfigError

    merged = config.builtin_providers()
    for layer in config.layers(explicit):
        if layer.path is None:
            continue
        try:
            data = config.read_toml(layer.path, required=False)
            defined, _ = config.providers_in_file(data or {}, layer.path)
        except ConfigError:
            continue
        for name, raw in defined.items():
            merged[name] = {**merged.get(name, {}), **raw}
    return merged


def hosts(explicit: Path | None = None, wanted: list[str] | None = None) -> list[tuple[str, str]]:
    """(host name, provider) pairs: local providers' directories, then the `list` cache."""
    tables = _provider_tables(explicit)
    found: list[tuple[str, str]] = []
    local = set()
    for provider, raw in tables.items():
        if raw.get("backend") != "local" or (wanted and provider not in wanted):
            continue
        local.add(provider)
        found += [(name, provider) for name in _local_host_dirs(provider, raw)]
    for provider, names in _cached_names().items():
        if provider in local or provider not in tables or (wanted and provider not in wanted):
            continue  # a local provider's directories are the truth; the cache may be older
        found += [(name, provider) for name in names if isinstance(name, str)]
    return sorted(found)


def _local_host_dirs(provider: str, raw: dict[str, Any]) -> list[str]:
    # Same layout as backends/local.py (which cannot be imported here: it needs pydantic).
    root_setting = raw.get("root")
    if isinstance(root_setting, str) and root_setting:
        root = Path(os.path.expanduser(root_setting))
    else:
        root = paths.data_home() / "local" / provider
    try:
        entries = list(os.scandir(root))
    except OSError:
        return []
    return [
        entry.name
        for entry in entries
        if not entry.name.startswith(".")
        and entry.is_dir(follow_symlinks=False)
        and os.path.exists(os.path.join(entry.path, ".mngr", "host.json"))
    ]


def _cached_names() -> dict[str, list[str]]:
    try:
        data = json.loads(paths.host_names_cache().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, list)}


# --- the scripts ----------------------------------------------------------------------------

_HEADER = """\
# mngr completion for {shell}. Generated by `python -m mngr.completion_gen`; do not edit.
# Each TAB runs `mngr __complete {shell} -- WORDS...`, which reads the command tree shipped
# with mngr, the settings files and the local host directories (no vendor CLI is called).
"""

_BASH = """\
# Install: save as ~/.local/share/bash-completion/completions/mngr, or `source` it.

_mngr_complete() {
    local cmd=${COMP_WORDS[0]} out
    [[ $cmd == "~/"* ]] && cmd=$HOME/${cmd#"~/"}
    out=$("$cmd" __complete bash -- "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null) || return 0
    local -a lines=()
    [[ -n $out ]] && mapfile -t lines <<<"$out"
    if [[ ${lines[0]-} == "::files" ]]; then
        compopt -o filenames 2>/dev/null
        mapfile -t COMPREPLY < <(compgen -f -- "${lines[1]-}")
    else
        COMPREPLY=("${lines[@]}")
    fi
}

complete -F _mngr_complete mngr
"""

_ZSH = """\
#compdef mngr
# Install: save as _mngr in a directory on $fpath, before `compinit` runs.

_mngr() {
    local -a lines
    local cmd=${words[1]/#\\~\\//$HOME/}
    lines=("${(@f)$("$cmd" __complete zsh -- "${(@Q)words[2,CURRENT-1]}" "${(Q)PREFIX}" \\
        2>/dev/null)}")
    if [[ ${lines[1]-} == "::files" ]]; then
        compset -P '*='
        _files
        return
    fi
    lines=(${lines:#})
    (( ${#lines} )) || return 1
    _describe -t mngr 'mngr' lines
}

# Autoloaded from $fpath: complete now; sourced: register.
if [[ $funcstack[1] == _mngr ]]; then
    _mngr "$@"
else
    compdef _mngr mngr
fi
"""

_FISH = """\
# Install: save as ~/.config/fish/completions/mngr.fish

function __mngr_complete
    set -l tokens (commandline -opc)
    set -l current (commandline -ct)
    set -l cmd (string replace -r '^~/' "$HOME/" -- $tokens[1])
    set -l lines ($cmd __complete fish -- $tokens[2..-1] $current 2>/dev/null)
    if test "$lines[1]" = "::files"
        __fish_complete_path $lines[2]
    else
        printf '%s\\n' $lines
    end
end

complete -c mngr -f -a '(__mngr_complete)'
"""

_SCRIPTS = {"bash": _BASH, "zsh": _ZSH, "fish": _FISH}


def script(shell: str) -> str:
    """The completion script for `shell` (what `mngr completion SHELL` prints)."""
    if shell not in _SCRIPTS:
        from mngr.errors import UsageError

        raise UsageError(f"unknown shell {shell!r}: use one of {', '.join(SHELLS)}")
    body = _SCRIPTS[shell]
    if shell == "zsh":  # `#compdef` must stay the first line
        first, rest = body.split("\n", 1)
        return f"{first}\n{_HEADER.format(shell=shell)}{rest}"
    return _HEADER.format(shell=shell) + body
