"""Generate the completion files from the click app: `python -m mngr.completion_gen`.

Writes `mngr/completion_tree.json` (every command, option and argument, with `host create`'s
backend flags, read from the click tree) and `completions/mngr.{bash,zsh,fish}`. Run it
again whenever a command, an option or a backend changes; `--check` only reports stale files
(tests/unit/test_completions_fresh.py does the same).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from mngr import completion

COMMAND = "python -m mngr.completion_gen"
REPO = Path(__file__).resolve().parent.parent
BUILTIN_BACKENDS = "mngr_backends."  # entry points of the backends shipped with mngr


def _value_kind(path: tuple[str, ...], param: Any) -> str | list[str] | None:
    """What a parameter's value completes to: a dynamic kind, fixed choices, or "" (free).

    The click tree says which parameters take values, not what they mean; these rules say
    that, by parameter name, for the few names whose values mngr knows.
    """
    import click

    from mngr.output import FORMATS
    from mngr.records import HostState
    from mngr.settings_file import SCOPES

    is_argument = param.param_type_name == "argument"
    if not is_argument and (param.is_flag or param.count):
        return None
    if isinstance(param.type, click.Path):
        return "files"
    if isinstance(param.type, click.Choice):
        return [str(choice) for choice in param.type.choices]
    name = param.name
    fixed: dict[str, list[str]] = {
        "fmt": list(FORMATS),
        "state": [s.value for s in HostState],
        "scope": list(SCOPES),
        "backend": _builtin_backends(),
        "shell": list(completion.SHELLS),
    }
    if name in fixed:
        return fixed[name]
    if name == "provider":
        return "providers"
    if is_argument and path[:1] == ("host",) and name in ("name", "names", "host"):
        return "" if path == ("host", "create") else "hosts"
    if is_argument and path[:1] == ("provider",) and name in ("name", "names"):
        return "" if path == ("provider", "add") else "providers"
    return ""


def _builtin_backends() -> list[str]:
    from importlib.metadata import entry_points

    from mngr.registry import GROUP

    return sorted(
        {ep.name for ep in entry_points(group=GROUP) if ep.value.startswith(BUILTIN_BACKENDS)}
    )


def _third_party_flags() -> set[str]:
    """Backend flags only third-party backends take: not part of the committed tree."""
    from mngr import create_flags

    builtin = set(_builtin_backends())
    return {dest for dest, f in create_flags.collect().items() if not builtin & set(f.backends)}


def _first_line(text: str | None) -> str:
    line = (text or "").strip().split("\n")[0].strip()
    return line[:-1] if line.endswith(".") else line


def _node(command: Any, ctx: Any, path: tuple[str, ...], skip: set[str]) -> dict[str, Any]:
    import click

    options, args = [], []
    help_option = command.get_help_option(ctx)
    for param in command.get_params(ctx):
        if getattr(param, "hidden", False) or param.name in skip:
            continue
        if param.param_type_name == "argument":
            args.append(
                {"name": param.name, "nargs": param.nargs, "value": _value_kind(path, param)}
            )
        else:
            options.append(
                {
                    # click names its help option's dest differently from one version to
                    # the next (`help`, `_click_default_help`): the tree says `help`
                    "dest": "help" if param is help_option else param.name,
                    # long names first; click keeps the help option's names in a set
                    "names": sorted(
                        [*param.opts, *param.secondary_opts],
                        key=lambda n: (not n.startswith("--"), n),
                    ),
                    "help": _first_line(param.help),
                    "value": _value_kind(path, param),
                    "multiple": bool(param.multiple),
                }
            )
    commands = {}
    for name in sorted(getattr(command, "commands", {})):
        sub = command.commands[name]
        if sub.hidden:
            continue
        sub_ctx = click.Context(sub, parent=ctx, info_name=name, **sub.context_settings)
        commands[name] = _node(sub, sub_ctx, (*path, name), skip)
    return {
        "help": _first_line(command.help or command.short_help),
        "options": options,
        "args": args,
        "commands": commands,
    }


def tree() -> dict[str, Any]:
    """The whole command tree, with `host create`'s (built-in) backend flags."""
    import click

    from mngr.cli import build

    root = build(with_backend_flags=True)
    ctx = click.Context(root, info_name="mngr", **root.context_settings)
    return _node(root, ctx, (), _third_party_flags())


def outputs() -> dict[Path, str]:
    """Every generated file and its content."""
    files = {
        completion.TREE_FILE: json.dumps(tree(), indent=1, ensure_ascii=False) + "\n",
    }
    for shell, name in (("bash", "mngr.bash"), ("zsh", "mngr.zsh"), ("fish", "mngr.fish")):
        files[REPO / "completions" / name] = completion.script(shell)
    return files


def stale() -> list[Path]:
    """Generated files whose committed content differs from what the app gives now."""
    found = []
    for path, text in outputs().items():
        try:
            current = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            current = None
        if current != text:
            found.append(path)
    return found


def main(argv: list[str]) -> int:
    if not (REPO / "completions").is_dir():
        sys.stderr.write(f"{REPO}/completions not found: run this from a mngr checkout\n")
        return 2
    if argv == ["--check"]:
        old = stale()
        for path in old:
            sys.stderr.write(f"stale: {path.relative_to(REPO)}\n")
        if old:
            sys.stderr.write(f"regenerate with: {COMMAND}\n")
        return 1 if old else 0
    if argv:
        sys.stderr.write(f"usage: {COMMAND} [--check]\n")
        return 2
    for path, text in outputs().items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
