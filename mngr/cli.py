"""The command layer: parse, call the engine, render. No logic lives here."""

import inspect
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from mngr import __version__
from mngr.errors import UsageError

FormatOpt = Annotated[str, typer.Option("--format", "-f", help="table, json or jsonl.")]
ProviderOpt = Annotated[
    str | None, typer.Option("--provider", "-p", help="Provider instance to use.")
]
ProvidersOpt = Annotated[
    list[str] | None, typer.Option("--provider", "-p", help="Only these providers (repeatable).")
]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
ProjectFilesArg = Annotated[
    list[Path] | None,
    typer.Argument(help="Settings files (default: this project's .mngr/ files)."),
]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Print the vendor commands that would run; run none.")
]


class State:
    """Global options, set by the root callback."""

    config: Path | None = None
    jobs: int = 8


def _service() -> Any:
    from mngr import config
    from mngr.service import Service

    return Service(config.load(State.config), jobs=State.jobs)


def _check_format(fmt: str) -> str:
    from mngr.output import FORMATS

    if fmt not in FORMATS:
        raise UsageError(f"invalid --format {fmt!r}: use one of {', '.join(FORMATS)}")
    return fmt


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stderr.isatty()


def _confirm(what: str, yes: bool) -> None:
    if yes:
        return
    if not _interactive():
        raise UsageError(f"refusing to {what} without --yes when not on a terminal")
    if not typer.confirm(f"{what}?", default=False, err=True):
        raise typer.Exit(1)


def _finish(outcomes: list[Any], labels: list[str], verb: str) -> None:
    """Report per-item failures (`destroy a.local: ...`); exit with the first one's code."""
    from mngr import output
    from mngr.errors import MngrError

    failed = [(o, label) for o, label in zip(outcomes, labels, strict=True) if o.error]
    for o, label in failed:
        if isinstance(o.error, KeyboardInterrupt):
            raise o.error
        output.error(f"{verb} {label}: {o.error}")
    if failed:
        first = failed[0][0].error
        code = first.exit_code if isinstance(first, MngrError) else 1
        raise typer.Exit(code)


def _print_batch(batch: Any) -> None:
    from mngr import output

    output.out("".join(output.safe(line) + "\n" for line in batch.render()))


app = typer.Typer(
    name="mngr",
    help="Create, list, stop, start, snapshot and destroy hosts through named providers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
host_app = typer.Typer(help="Manage hosts.", no_args_is_help=True)
snapshot_app = typer.Typer(help="Manage snapshots of hosts.", no_args_is_help=True)
provider_app = typer.Typer(help="Manage provider instances.", no_args_is_help=True)
config_app = typer.Typer(help="Inspect settings.", no_args_is_help=True)
app.add_typer(host_app, name="host")
host_app.add_typer(snapshot_app, name="snapshot")
app.add_typer(provider_app, name="provider")
app.add_typer(config_app, name="config")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mngr {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    config: Annotated[
        Path | None, typer.Option("--config", help="Extra settings file (highest layer).")
    ] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Parallel operations at most.")] = 8,
    version: Annotated[
        bool,
        typer.Option("--version", "-V", callback=_version, is_eager=True, help="Show version."),
    ] = False,
) -> None:
    State.config = config
    State.jobs = jobs


# --- host -------------------------------------------------------------------------------


def host_create(
    names: Annotated[list[str], typer.Argument(help="Names of the hosts to create.")],
    provider: ProviderOpt = None,
    image: Annotated[str | None, typer.Option("--image", help="Image to start from.")] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", "-t", help="Tag KEY=VALUE (repeatable).")
    ] = None,
    from_snapshot: Annotated[
        str | None, typer.Option("--from-snapshot", help="Snapshot id or name to start from.")
    ] = None,
    cpus: Annotated[
        str | None,
        typer.Option("--cpus", metavar="NUMBER", help="CPUs (fractions allowed: 0.5)."),
    ] = None,
    memory: Annotated[
        str | None,
        typer.Option("--memory", metavar="SIZE", help="Memory with a unit: 512m, 2g (GiB)."),
    ] = None,
    disk: Annotated[
        str | None,
        typer.Option("--disk", metavar="SIZE", help="Disk with a unit: 20g (GiB), 1t."),
    ] = None,
    gpu: Annotated[
        str | None,
        typer.Option(
            "--gpu", "--gpus", metavar="GPU", help="GPUs: a count, 'all', or a type: A10G, H100:2."
        ),
    ] = None,
    dry_run: DryRunOpt = False,
    fmt: FormatOpt = "table",
    **backend_flags: Any,
) -> None:
    """Create hosts."""
    from mngr import create_flags, output, resources
    from mngr.names import check_host_name, parse_tags

    _check_format(fmt)
    for name in names:
        check_host_name(name)
    tags = parse_tags(tag)
    service = _service()
    backend = service.engine.backend(provider or service.settings.default_provider)
    batch = service.prepare_create(
        names,
        provider=provider,
        image=image,
        tags=tags,
        from_snapshot=from_snapshot,
        options=create_flags.options_for(type(backend), backend_flags),
        resources=resources.parse(cpus=cpus, memory=memory, disk=disk, gpu=gpu),
    )
    if dry_run:
        _print_batch(batch)
        return
    outcomes = service.run(batch)
    created = [o.value for o in outcomes if o.error is None]
    if created:
        output.render_hosts(created, [], fmt)
    _finish(outcomes, [job.label for job in batch.jobs], "create")


def register_create(with_backend_flags: bool) -> None:
    """Register `host create`, with every installed backend's flags when asked: that imports
    each backend module, so only `host create` itself (and its help) pays for it."""
    sig = inspect.signature(host_create, eval_str=True)
    params = [p for p in sig.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
    if with_backend_flags:
        from mngr import create_flags

        params += create_flags.typer_parameters(create_flags.collect())

    def callback(**kwargs: Any) -> Any:
        return host_create(**kwargs)

    callback.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    callback.__doc__ = host_create.__doc__
    host_app.registered_commands = [c for c in host_app.registered_commands if c.name != "create"]
    host_app.command("create")(callback)
    host_app.registered_commands.insert(0, host_app.registered_commands.pop())  # first in help


@host_app.command("list")
def host_list(
    provider: ProvidersOpt = None,
    state: Annotated[str | None, typer.Option("--state", help="Only hosts in this state.")] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", "-t", help="Only hosts with KEY=VALUE.")
    ] = None,
    fmt: FormatOpt = "table",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print names only.")] = False,
) -> None:
    """List hosts of every provider (or the given ones)."""
    from mngr import output
    from mngr.errors import EXIT_PARTIAL
    from mngr.names import parse_tags
    from mngr.records import HostState

    _check_format(fmt)
    if state is not None and state not in {s.value for s in HostState}:
        raise UsageError(
            f"invalid --state {state!r}: use one of {', '.join(s.value for s in HostState)}"
        )
    result = _service().list_hosts(provider, state=state, tags=parse_tags(tag))
    output.render_hosts(result.hosts, result.errors, fmt, quiet)
    if result.errors:
        raise typer.Exit(EXIT_PARTIAL)


def _run_on_hosts(
    verb: str,
    done: str,
    refs: list[str],
    provider: str | None,
    dry_run: bool,
    missing_ok: bool = False,
    **how: Any,
) -> None:
    """Run one plan per host; `verb` names a failure (`destroy a.local: ...`), `done` a
    success (`destroyed: a.local`)."""
    from mngr import output

    service = _service()
    batch = service.prepare_on_hosts(verb, refs, provider, missing_ok=missing_ok, **how)
    for ref in batch.missing:
        output.message(f"{ref}: no such host, nothing to do")
    if dry_run:
        _print_batch(batch)
        return
    outcomes = service.run(batch)
    for outcome, job in zip(outcomes, batch.jobs, strict=True):
        if outcome.error is None:
            output.message(f"{done}: {job.label}")
    _finish(outcomes, [job.label for job in batch.jobs], verb)


@host_app.command("destroy")
def host_destroy(
    names: Annotated[list[str], typer.Argument(help="Hosts: NAME, NAME.PROVIDER or host id.")],
    provider: ProviderOpt = None,
    yes: YesOpt = False,
    force: Annotated[bool, typer.Option("--force", help="Destroy even if running.")] = False,
    purge: Annotated[bool, typer.Option("--purge", help="Delete its snapshots too.")] = False,
    dry_run: DryRunOpt = False,
) -> None:
    """Destroy hosts. A host that does not exist is not an error."""
    if not dry_run:
        _confirm(f"destroy {', '.join(names)}", yes)
    _run_on_hosts(
        "destroy", "destroyed", names, provider, dry_run, missing_ok=True, force=force, purge=purge
    )


@host_app.command("stop")
def host_stop(
    names: Annotated[list[str], typer.Argument(help="Hosts to stop.")],
    provider: ProviderOpt = None,
    snapshot: Annotated[bool, typer.Option("--snapshot", help="Snapshot before stopping.")] = False,
    dry_run: DryRunOpt = False,
) -> None:
    """Stop hosts."""
    _run_on_hosts("stop", "stopped", names, provider, dry_run, snapshot=snapshot)


@host_app.command("start")
def host_start(
    names: Annotated[list[str], typer.Argument(help="Hosts to start.")],
    provider: ProviderOpt = None,
    dry_run: DryRunOpt = False,
) -> None:
    """Start stopped hosts."""
    _run_on_hosts("start", "started", names, provider, dry_run)


def _run_attached(command: Any) -> int:
    """Run an interactive/passthrough command with our stdio; return its exit code."""
    import subprocess

    from mngr.errors import VendorMissingError

    env = {**os.environ, **command.env} if command.env else None
    try:
        code = subprocess.call(command.argv, cwd=command.cwd, env=env)
        return 128 - code if code < 0 else code  # killed by signal N: 128 + N, as a shell says
    except FileNotFoundError:
        raise VendorMissingError(f"'{command.argv[0]}' was not found on PATH") from None
    except KeyboardInterrupt:
        return 130


@host_app.command("exec")
def host_exec(
    name: Annotated[str, typer.Argument(help="Host to run the command on.")],
    command: Annotated[list[str], typer.Argument(help="Command and its arguments (after --).")],
    provider: ProviderOpt = None,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Run in the background.")] = False,
) -> None:
    """Run a command on a host; its exit code becomes mngr's."""
    tty = sys.stdin.isatty() and sys.stdout.isatty()
    cmd = _service().exec_command(name, list(command), provider, tty=tty, detach=detach)
    raise typer.Exit(_run_attached(cmd))


@host_app.command("shell")
def host_shell(
    name: Annotated[str, typer.Argument(help="Host to open a shell on.")],
    provider: ProviderOpt = None,
) -> None:
    """Open an interactive shell on a host."""
    tty = sys.stdin.isatty() and sys.stdout.isatty()
    raise typer.Exit(_run_attached(_service().shell_command(name, provider, tty=tty)))


# --- snapshots --------------------------------------------------------------------------


@snapshot_app.command("create")
def snapshot_create(
    host: Annotated[str, typer.Argument(help="Host to snapshot.")],
    name: Annotated[str | None, typer.Option("--name", "-n", help="Snapshot name.")] = None,
    provider: ProviderOpt = None,
    dry_run: DryRunOpt = False,
    fmt: FormatOpt = "table",
) -> None:
    """Capture a host's filesystem as a snapshot."""
    from mngr import output

    _check_format(fmt)
    service = _service()
    batch = service.prepare_snapshot(host, provider, name)
    if dry_run:
        _print_batch(batch)
        return
    [outcome] = service.run(batch)
    if outcome.error is not None:
        raise outcome.error
    output.render_snapshots([outcome.value], [], fmt)


@snapshot_app.command("list")
def snapshot_list(
    host: Annotated[str | None, typer.Argument(help="Only snapshots of this host.")] = None,
    provider: ProvidersOpt = None,
    fmt: FormatOpt = "table",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print ids only.")] = False,
) -> None:
    """List snapshots."""
    from mngr import output
    from mngr.errors import EXIT_PARTIAL

    _check_format(fmt)
    snaps, errors = _service().list_snapshots(provider, host)
    output.render_snapshots(snaps, errors, fmt, quiet)
    if errors:
        raise typer.Exit(EXIT_PARTIAL)


@snapshot_app.command("delete")
def snapshot_delete(
    ids: Annotated[list[str], typer.Argument(help="Snapshot ids or names.")],
    provider: ProviderOpt = None,
    yes: YesOpt = False,
    dry_run: DryRunOpt = False,
) -> None:
    """Delete snapshots."""
    from mngr import output

    service = _service()
    batch = service.prepare_snapshot_delete(ids, provider)
    if dry_run:
        _print_batch(batch)
        return
    _confirm(f"delete snapshot {', '.join(ids)}", yes)
    outcomes = service.run(batch)
    for outcome, job in zip(outcomes, batch.jobs, strict=True):
        if outcome.error is None:
            output.message(f"deleted: {job.snapshot.id} ({job.snapshot.name})")
    _finish(outcomes, [job.label for job in batch.jobs], "delete")


# --- providers --------------------------------------------------------------------------


def _shown_settings(entry: Any) -> Any:
    """A provider's settings for `config show` / `provider show`: a password written into a
    URL (`tcp://user:PASS@host`, `https://key:SECRET@endpoint`) is never printed back."""
    from mngr.errors import redact

    def hide(value: Any) -> Any:
        if isinstance(value, str):
            return redact(value)
        if isinstance(value, list):
            return [hide(v) for v in value]
        if isinstance(value, dict):
            return {k: hide(v) for k, v in value.items()}
        return value

    return hide(entry.config.model_dump(mode="json") if entry.config else dict(entry.raw))


@provider_app.command("list")
def provider_list(fmt: FormatOpt = "table") -> None:
    """List provider instances."""
    from mngr import output

    _check_format(fmt)
    rows = _service().provider_rows()
    if fmt == "table":  # reasons in `provider show` and in the JSON
        for row in rows:
            row["cannot"] = list(row.get("unsupported", {})) or None
    columns = ["name", "backend", "status", "default", "cannot", "source"]
    output.render_rows(rows, columns, fmt, "providers")


@provider_app.command("show")
def provider_show(
    name: Annotated[str, typer.Argument(help="Provider name.")], fmt: FormatOpt = "table"
) -> None:
    """Show one provider's merged settings and capabilities."""
    from mngr import output

    _check_format(fmt)
    service = _service()
    entry = service.settings.provider(name)
    row = service.provider_row(name)
    row["settings"] = _shown_settings(entry)
    row["sources"] = entry.sources
    if fmt == "table":
        output.render_mapping(row)
    else:
        output.emit_json({"schema_version": 1, "provider": row})


@provider_app.command("check")
def provider_check(
    names: Annotated[list[str] | None, typer.Argument(help="Providers (default: all).")] = None,
    fmt: FormatOpt = "table",
) -> None:
    """Check that providers are reachable (one cheap call each)."""
    from mngr import output

    _check_format(fmt)
    outcomes = _service().check(names)
    rows = []
    for o in outcomes:
        if o.error is None:
            rows.append({"name": o.item, "ok": True, "details": o.value})
        else:
            rows.append({"name": o.item, "ok": False, "details": {"error": str(o.error)}})
    output.render_rows(rows, ["name", "ok", "details"], fmt, "providers")
    failed = [o.error for o in outcomes if o.error is not None]
    if failed:
        first = failed[0]
        raise typer.Exit(getattr(first, "exit_code", 1))


@provider_app.command("add")
def provider_add(
    name: Annotated[str, typer.Argument(help="Name of the new provider instance.")],
    backend: Annotated[str, typer.Option("--backend", "-b", help="Backend of the provider.")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Setting KEY=VALUE (repeatable).")
    ] = None,
    scope: Annotated[str, typer.Option("--scope", help="user, project or local.")] = "user",
) -> None:
    """Add a provider to a settings file (comments and layout are kept)."""
    from mngr import output, settings_file

    path = settings_file.add_provider(name, backend, set_ or [], scope)
    output.message(f"added provider {name!r} to {path}")


@provider_app.command("remove")
def provider_remove(
    name: Annotated[str, typer.Argument(help="Provider to remove.")],
    scope: Annotated[str, typer.Option("--scope", help="user, project or local.")] = "user",
    yes: YesOpt = False,
) -> None:
    """Remove a provider from a settings file."""
    from mngr import output, settings_file

    _confirm(f"remove provider {name!r}", yes)
    path = settings_file.remove_provider(name, scope)
    output.message(f"removed provider {name!r} from {path}")


# --- config -----------------------------------------------------------------------------


@config_app.command("show")
def config_show(fmt: FormatOpt = "table") -> None:
    """Print the merged providers and the file each came from."""
    from mngr import config, output

    _check_format(fmt)
    settings = config.load(State.config, check_trust=False)  # shows, reaches nothing
    rows = []
    for entry in settings.providers.values():
        values = _shown_settings(entry)
        rows.append(
            {
                "name": entry.name,
                "backend": entry.backend,
                "sources": entry.sources,
                "settings": values,
            }
        )
    if fmt == "table":
        output.render_mapping({"default_provider": settings.default_provider})
        output.render_rows(rows, ["name", "backend", "sources", "settings"], fmt, "providers")
    else:
        output.emit_json(
            {"schema_version": 1, "default_provider": settings.default_provider, "providers": rows}
        )


@config_app.command("path")
def config_path() -> None:
    """Print the settings files consulted, lowest layer first."""
    from mngr import config, output, trust

    for layer in config.layers(State.config):
        if layer.path is None:
            continue
        status = "exists" if layer.path.exists() else "absent"
        if status == "exists" and layer.label in trust.UNTRUSTED_LAYERS:
            try:
                digest = trust.digest(layer.path.read_bytes())
                status += ", trusted" if trust.is_trusted(layer.path, digest) else ", untrusted"
            except OSError:
                status += ", unreadable"
        output.out("\t".join(output.safe(str(v)) for v in (layer.label, layer.path, status)) + "\n")


def _project_files(paths_given: list[Path] | None) -> list[Path]:
    from mngr import paths

    if paths_given:
        return paths_given
    project = paths.project_dir()
    found = [project / name for name in (paths.PROJECT_FILE, paths.LOCAL_FILE)] if project else []
    found = [path for path in found if path.exists()]
    if not found:
        raise UsageError(
            f"no project settings here: no {paths.PROJECT_DIR}/{paths.PROJECT_FILE} or "
            f"{paths.PROJECT_DIR}/{paths.LOCAL_FILE} in {Path.cwd()} or above"
        )
    return found


@config_app.command("trust")
def config_trust(
    files: ProjectFilesArg = None,
) -> None:
    """Trust project settings files as they are now (path and content hash)."""
    from mngr import config, output, trust

    for path in _project_files(files):
        if not path.is_file():
            raise UsageError(f"{path}: not a settings file")
        config.read_toml(path, required=True)  # a file mngr cannot read is not trusted
        trust.trust(path)
        output.message(f"trusted {path.resolve()} (until it changes)")


@config_app.command("untrust")
def config_untrust(
    files: ProjectFilesArg = None,
) -> None:
    """Stop trusting project settings files."""
    from mngr import output, trust

    for path in _project_files(files):
        done = trust.untrust(path)
        output.message(f"{'no longer trusted' if done else 'was not trusted'}: {path.resolve()}")


# --- completion -------------------------------------------------------------------------


@app.command("completion")
def completion(shell: Annotated[str, typer.Argument(help="bash, zsh or fish.")]) -> None:
    """Print the completion script for a shell."""
    from mngr import completion as comp

    sys.stdout.write(comp.script(shell))


# --- serve ------------------------------------------------------------------------------


@app.command("serve")
def serve(
    token_file: Annotated[
        Path,
        typer.Option(
            "--token-file",
            help="Bearer tokens, one per line ('#' comments; an 'ro:' prefix = read-only).",
        ),
    ],
    listen: Annotated[
        str, typer.Option("--listen", help="HOST:PORT to listen on (port 0: any free port).")
    ] = "127.0.0.1:8421",
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="TLS certificate chain (PEM).")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="TLS private key (PEM).")
    ] = None,
    insecure_http: Annotated[
        bool,
        typer.Option("--insecure-http", help="Allow plain HTTP on a non-loopback address."),
    ] = False,
    provider: Annotated[
        list[str] | None,
        typer.Option("--provider", "-p", help="Serve only these providers (default: all)."),
    ] = None,
    request_timeout: Annotated[
        float,
        typer.Option(
            "--request-timeout",
            help="Seconds a list waits for a provider; a slower one is an error row.",
        ),
    ] = 30.0,
    max_connections: Annotated[
        int,
        typer.Option(
            "--max-connections", help="Open connections at most; more are answered with 503."
        ),
    ] = 1000,
    read_timeout: Annotated[
        float,
        typer.Option(
            "--read-timeout", help="Seconds a client may take to send a request's headers or body."
        ),
    ] = 15.0,
) -> None:
    """Serve the HTTP API over this machine's providers (what the `mngr` backend talks to)."""
    from mngr import config
    from mngr.errors import VendorMissingError

    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise VendorMissingError(
            f"mngr serve needs the server extra ({exc.name} is not installed): "
            "pip install 'mngr[server]'"
        ) from None
    from mngr import server

    try:
        server.serve(
            config.load(State.config),
            listen=listen,
            token_file=token_file,
            tls_cert=tls_cert,
            tls_key=tls_key,
            insecure_http=insecure_http,
            providers=provider,
            jobs=State.jobs,
            request_timeout_s=request_timeout,
            max_connections=max_connections,
            read_timeout_s=read_timeout,
        )
    except KeyboardInterrupt:
        pass  # Ctrl-C / SIGTERM: uvicorn has already shut down gracefully


def build(with_backend_flags: bool) -> typer.Typer:
    register_create(with_backend_flags)
    return app


def run(argv: list[str]) -> int:
    """Entry point after the fast paths: run the Typer app, map errors to exit codes."""
    from mngr.errors import EXIT_INTERRUPTED, EXIT_USAGE, MngrError

    # Backend flags import every backend; only `host create` (and its help) need them.
    build(with_backend_flags="create" in argv)
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="mngr", standalone_mode=False)
        if result == EXIT_INTERRUPTED:  # Typer turned a Ctrl-C into a bare exit code
            from mngr import output

            output.error("interrupted")
        return result if isinstance(result, int) else 0
    except typer.Exit as exc:
        return exc.exit_code
    except MngrError as exc:
        _report(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        _report("interrupted")
        return EXIT_INTERRUPTED
    except typer.Abort:
        _report("aborted")
        return 1
    except Exception as exc:  # click usage errors and anything unexpected
        usage = _click_usage_error(exc)
        if usage is not None:
            if usage:
                _report(usage)
            return EXIT_USAGE
        if os.environ.get("MNGR_DEBUG"):
            raise
        _report(f"internal error: {exc!r} (set MNGR_DEBUG=1 for a traceback)")
        return 1


def _report(text: str) -> None:
    from mngr import output  # here, not atop run(): it imports the pydantic records

    output.error(text)


def _click_usage_error(exc: Exception) -> str | None:
    """The one-line text of a click usage error (bad option, missing argument...)."""
    from typer._click import exceptions as click_exc

    if isinstance(exc, click_exc.NoArgsIsHelpError):
        return ""  # the help was already printed
    if not isinstance(exc, click_exc.ClickException):
        return None
    text = exc.format_message()
    # Typer validates values through pydantic: say it in mngr's words, not the validator's.
    text = text.replace("Input should be", "must be").replace("Value error, ", "")
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        text += f" (see '{ctx.command_path} --help')"
    return text
