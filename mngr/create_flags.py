"""Backend flags of `host create`, declared once in each backend's create-options model.

Every field of a backend's `CreateOptions` becomes a `--flag` shown in `host create --help`
under a panel naming the backends that take it; a flag the chosen provider's backend does
not take is refused ("--gpu is not supported by backend 'ssh'").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, get_args, get_origin

from pydantic import ValidationError

from mngr.backend import Backend, CreateOptions
from mngr.errors import MngrError, UsageError, validation_message
from mngr.registry import backend_names, load_backend

PREFIX = "bk_"


@dataclass
class BackendFlag:
    dest: str  # python name of the option in the create callback
    field: str  # field name in the create-options models
    decls: list[str]  # e.g. ["--build-arg", "-b"]
    help: str
    kind: str  # "flag" (bool), "many" (list) or "value"
    backends: list[str] = field(default_factory=list)

    @property
    def long(self) -> str:
        return self.decls[0]


def _kind(annotation: Any) -> str:
    if annotation is bool:
        return "flag"
    origin = get_origin(annotation)
    if origin in (list, tuple) or any(get_origin(a) in (list, tuple) for a in get_args(annotation)):
        return "many"
    return "value"


# `host create`'s own flags: a backend may not declare one (the resources among them are
# core's, one meaning everywhere; a backend says it takes them with `Backend.takes`).
CORE_FLAGS = frozenset(
    "--provider -p --image --tag -t --from-snapshot --cpus --memory --disk --gpu --gpus "
    "--idle-timeout --dry-run --format -f --help -h".split()
)


def collect() -> dict[str, BackendFlag]:
    """Every backend's create flags. A flag is one thing: a backend declaring a core flag,
    or two backends one flag with different types or help, is refused here."""
    flags: dict[str, BackendFlag] = {}
    annotations: dict[str, Any] = {}
    for backend in backend_names():
        try:
            model = load_backend(backend).create_options_model
        except Exception:  # noqa: BLE001 - a broken third-party backend must not break create
            continue
        for name, info in model.model_fields.items():
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            long = str(extra.get("flag") or "--" + name.replace("_", "-"))
            decls = [long] + ([str(extra["short"])] if extra.get("short") else [])
            if clash := CORE_FLAGS.intersection(decls):
                raise MngrError(
                    f"backend {backend!r} declares {min(clash)}, a flag of mngr's own; give "
                    "its option another name"
                )
            dest = PREFIX + name
            flag = flags.get(dest)
            if flag is None:
                flag = flags[dest] = BackendFlag(
                    dest, name, decls, info.description or "", _kind(info.annotation)
                )
                annotations[dest] = info.annotation
            elif annotations[dest] != info.annotation or flag.help != (info.description or ""):
                raise MngrError(
                    f"backends {flag.backends[0]!r} and {backend!r} both declare {long} with "
                    "different meanings; give one of them a backend-specific name"
                )
            flag.backends.append(backend)
    return flags


def click_options(flags: dict[str, BackendFlag], option_class: type) -> list[Any]:
    """The flags as click options, each under a help panel naming the backends that take it."""
    options = []
    for flag in flags.values():
        kind = {"flag": {"is_flag": True}, "many": {"multiple": True}, "value": {}}[flag.kind]
        options.append(
            option_class(
                [*flag.decls, flag.dest],
                help=flag.help,
                panel=f"Backend options ({', '.join(flag.backends)})",
                **kind,
            )
        )
    return options


def given(values: dict[str, Any]) -> dict[str, Any]:
    """Only the backend flags the user actually passed."""
    return {
        k: v for k, v in values.items() if k.startswith(PREFIX) and v not in (None, False, [], ())
    }


def options_for(backend: type[Backend], values: dict[str, Any]) -> CreateOptions:
    flags = collect()
    model = backend.create_options_model
    data: dict[str, Any] = {}
    for dest, value in given(values).items():
        flag = flags[dest]
        if flag.field not in model.model_fields:
            raise UsageError(f"{flag.long} is not supported by backend '{backend.name}'")
        data[flag.field] = list(value) if isinstance(value, (list, tuple)) else value
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else ""
        flag_name = next((f.long for f in flags.values() if f.field == name), name)
        raise UsageError(validation_message(err, flag_name)) from None
