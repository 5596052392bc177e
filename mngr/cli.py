"""The command layer on click: parse, call the use-case layer (`mngr.service`), render.

No use-case logic lives here. Click is imported, pydantic is not: a command's values reach
the service as plain strings and numbers, validated there (or in `mngr.resources`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from mngr import __version__
from mngr.errors import UsageError

# --- help: options grouped in panels, arguments with their help ---------------------------


class Opt(click.Option):
    """An option that names its help panel ("Backend options (docker, modal)")."""

    def __init__(self, *args: Any, panel: str = "Options", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.panel = panel


class Arg(click.Argument):
    """An argument with a help line, shown under "Arguments"."""

    def __init__(self, *args: Any, help: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = help

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        return self.make_metavar(ctx), self.help


class Command(click.Command):
    def format_arguments(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Nothing: click 8.5 lists arguments by itself ("Positional arguments"), older
        versions do not; `format_options` writes the one "Arguments" section on both."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        args = [p.get_help_record(ctx) for p in self.get_params(ctx) if isinstance(p, Arg)]
        if args:
            with formatter.section("Arguments"):
                formatter.write_dl([a for a in args if a])
        panels: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = None if isinstance(param, Arg) else param.get_help_record(ctx)
            if record is not None:
                panels.setdefault(getattr(param, "panel", "Options"), []).append(record)
        for title, rows in panels.items():
            with formatter.section(title):
                formatter.write_dl(rows)


class Group(click.Group):
    command_class = Command
    aliases = {"ls": "list", "rm": "destroy"}  # the names a shell user types first

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)  # in the order they were added, `create` first

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        found = super().get_command(ctx, name)
        if found is None and name in self.aliases:
            found = super().get_command(ctx, self.aliases[name])
        return found

    format_arguments = Command.format_arguments

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        Command.format_options(self, ctx, formatter)  # type: ignore[arg-type]
        self.format_commands(ctx, formatter)


Group.group_class = Group


def option(*decls: str, **kwargs: Any) -> Callable[[Any], Any]:
    return click.option(*decls, cls=Opt, **kwargs)


def argument(name: str, help: str, **kwargs: Any) -> Callable[[Any], Any]:
    return click.argument(name, cls=Arg, help=help, **kwargs)


def _decorate(*decorators: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def apply(f: Any) -> Any:
        for decorator in reversed(decorators):
            f = decorator(f)
        return f

    return apply


def fmt_opt(f: Any) -> Any:
    return option("--format", "-f", "fmt", default="table", help="table, json or jsonl.")(f)


def provider_opt(f: Any) -> Any:
    return option("--provider", "-p", default=None, help="Provider instance to use.")(f)


def providers_opt(f: Any) -> Any:
    return option("--provider", "-p", multiple=True, help="Only these providers (repeatable).")(f)


def yes_opt(f: Any) -> Any:
    return option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")(f)


def dry_run_opt(f: Any) -> Any:
    return option(
        "--dry-run",
        is_flag=True,
        help="Print the vendor commands that would run and what would be refused; run none.",
    )(f)


def _examples(*lines: str) -> str:
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


class State:
    """Global options, set by the root callback."""

    config: Path | None = None
    jobs: int = 8
    timeout: float | None = None


def _exit(code: int) -> None:
    raise click.exceptions.Exit(code)


def _service() -> Any:
    from mngr import config
    from mngr.service import Service

    service = Service(config.load(State.config), jobs=State.jobs)
    service.engine.max_deadline_s = State.timeout
    if sys.stderr.isatty():
        from mngr.output import waiting_line

        service.engine.waiting = waiting_line
    return service


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
    # One answer to every way of saying no (n, Enter, Ctrl-C, end of input): "aborted",
    # exit 1; anything else is asked again in mngr's words (click's says "Error: ...").
    from mngr import output

    while True:
        sys.stderr.write(f"{what}? [y/N]: ")
        sys.stderr.flush()
        try:
            line = sys.stdin.readline()
        except KeyboardInterrupt:
            sys.stderr.write("\n")
            raise click.Abort from None
        answer = line.strip().lower()
        if answer in ("y", "yes"):
            return
        if not line:  # end of input: the cursor is still on the prompt's line
            sys.stderr.write("\n")
        if not line or answer in ("", "n", "no"):
            raise click.Abort
        output.error(f"answer y or n, not {answer!r}")


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
        _exit(first.exit_code if isinstance(first, MngrError) else 1)


def _print_batch(batch: Any) -> None:
    """A dry run: the commands, what --purge would keep, and each item the real run would
    refuse, exiting with the code the real run would exit with."""
    from mngr import output

    output.out("".join(output.safe(line) + "\n" for line in batch.render()))
    for snap, why in batch.kept:
        output.message(f"would keep snapshot {snap.id} ({snap.name}): {why}")
    for ref, error in batch.refused:
        output.error(f"would be refused: {ref}: {error}")
    if batch.refused:
        output.message("the real run would refuse the whole command and change nothing")
        _exit(batch.refused[0][1].exit_code)


def _version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        click.echo(f"mngr {__version__}")
        ctx.exit()


@click.group(
    cls=Group,
    name="mngr",
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Create, list, stop, start, snapshot and destroy hosts through named providers.",
)
@option(
    "--config",
    type=click.Path(path_type=Path),
    default=None,
    help="Extra settings file (highest layer).",
)
@option("--jobs", "-j", type=click.IntRange(min=1), default=8, help="Parallel operations at most.")
@option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    default=None,
    help="Give up on a provider that has not answered a list or lookup by then.",
)
@option(
    "--version",
    "-V",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_version,
    help="Show version.",
)
def app(config: Path | None, jobs: int, timeout: float | None) -> None:
    State.config = config
    State.jobs = jobs
    State.timeout = timeout


@app.group("host", help="Manage hosts.")
def host_app() -> None:
    pass


# --- host -------------------------------------------------------------------------------

_CREATE_OPTIONS = _decorate(
    argument("names", "Names of the hosts to create.", nargs=-1, required=True),
    provider_opt,
    option("--image", default=None, help="Image to start from."),
    option("--tag", "-t", multiple=True, help="Tag KEY=VALUE (repeatable)."),
    option("--from-snapshot", default=None, help="Snapshot id or name to start from."),
    option("--cpus", metavar="NUMBER", default=None, help="CPUs (fractions allowed: 0.5)."),
    option("--memory", metavar="SIZE", default=None, help="Memory with a unit: 512m, 2g (GiB)."),
    option("--disk", metavar="SIZE", default=None, help="Disk with a unit: 20g (GiB), 1t."),
    option(
        "--gpu",
        "--gpus",
        "gpu",
        metavar="GPU",
        default=None,
        help="GPUs: a count, 'all', or a type: A10G, H100:2.",
    ),
    option(
        "--idle-timeout",
        metavar="DURATION",
        default=None,
        help="Stop by itself after this long unused: 30m, 2h (0: never).",
    ),
    option(
        "--provision",
        metavar="DEPLOY.py",
        default=None,
        help="Run this pyinfra deploy on the new hosts (needs the provision extra).",
    ),
    option(
        "--destroy-on-failure",
        is_flag=True,
        help="Destroy a host whose --provision failed (default: keep it, tagged).",
    ),
    dry_run_opt,
    fmt_opt,
    option("--quiet", "-q", is_flag=True, help="Print the new hosts' ids only."),
)


def host_create(
    names: tuple[str, ...],
    provider: str | None,
    image: str | None,
    tag: tuple[str, ...],
    from_snapshot: str | None,
    cpus: str | None,
    memory: str | None,
    disk: str | None,
    gpu: str | None,
    idle_timeout: str | None,
    provision: str | None,
    destroy_on_failure: bool,
    dry_run: bool,
    fmt: str,
    quiet: bool,
    **backend_flags: Any,
) -> None:
    """Create hosts."""
    from mngr import create_flags, output, resources
    from mngr.errors import InterruptedByUser
    from mngr.names import check_host_name, parse_tags

    _check_format(fmt)
    for name in names:
        check_host_name(name)
    tags = parse_tags(list(tag))
    if destroy_on_failure and not provision:
        raise UsageError("--destroy-on-failure goes with --provision DEPLOY.py")
    if provision:  # before anything is made
        from mngr import provision as provisioning

        provisioning.require_pyinfra()
        provisioning.deploy_file(provision)
    service = _service()
    backend = service.engine.backend(provider or service.settings.default_provider)
    batch = service.prepare_create(
        list(names),
        provider=provider,
        image=image,
        tags=tags,
        from_snapshot=from_snapshot,
        options=create_flags.options_for(type(backend), backend_flags),
        resources=resources.parse(cpus=cpus, memory=memory, disk=disk, gpu=gpu),
        idle_timeout=idle_timeout,
    )
    if dry_run:
        _print_batch(batch)
        return
    try:
        outcomes = service.run(batch)
    except InterruptedByUser as exc:
        _say_what_the_interrupt_left(batch, exc.outcomes or [])
        raise
    created = [o.value for o in outcomes if o.error is None]
    provisioned = 0
    if provision and created:
        results, created = service.provision_created(
            created, provision, destroy_on_failure=destroy_on_failure
        )
        provisioned = _provision_report(results)
    if created and quiet:
        output.out("".join(f"{host.id}\n" for host in created))
    elif created:
        output.render_hosts(created, [], fmt)
    _finish(outcomes, [job.label for job in batch.jobs], "create")
    _exit(provisioned)


def _say_what_the_interrupt_left(batch: Any, outcomes: list[Any]) -> None:
    """After Ctrl-C in a create of several hosts: the ones already made are kept (they are
    whole and usable), the others were rolled back; say which is which."""
    from mngr import output

    kept = [j.label for j, o in zip(batch.jobs, outcomes, strict=False) if o.value is not None]
    undone = [j.label for j, o in zip(batch.jobs, outcomes, strict=False) if o.error is not None]
    unsure = [j.label for j, o in zip(batch.jobs, outcomes, strict=False) if o.value is None]
    unsure = [label for label in unsure if label not in undone]
    if kept:
        output.message(
            f"created before the interrupt, kept: {', '.join(kept)} "
            f"(remove with: mngr host destroy {' '.join(kept)})"
        )
    if undone:
        output.message(f"rolled back: {', '.join(undone)}")
    if unsure:
        output.message(f"still being undone when mngr stopped: {', '.join(unsure)}")


def register_create(with_backend_flags: bool) -> None:
    """Register `host create`, with every installed backend's flags when asked: that imports
    each backend module, so only `host create` itself (and its help) pays for it."""
    command = click.command(
        "create",
        cls=Command,
        epilog=_examples(
            "mngr host create web-1 web-2 -p local_docker --memory 2g",
            "mngr host create api --from-snapshot before-upgrade",
            "mngr host create dev -p local_docker --idle-timeout 30m",
        ),
    )(_CREATE_OPTIONS(host_create))
    if with_backend_flags:
        from mngr import create_flags

        command.params += create_flags.click_options(create_flags.collect(), Opt)
    host_app.add_command(command)


register_create(with_backend_flags=False)  # its place in the listing: first


@host_app.command(
    "list",
    epilog=_examples("mngr host list --state running", "mngr host list -p local_docker -f json"),
)
@providers_opt
@option("--state", default=None, help="Only hosts in this state.")
@option("--tag", "-t", multiple=True, help="Only hosts with KEY=VALUE (or with KEY at all).")
@fmt_opt
@option("--quiet", "-q", is_flag=True, help="Print names only.")
@option("--wide", "-w", is_flag=True, help="Table: every value whole, times as written.")
def host_list(
    provider: tuple[str, ...],
    state: str | None,
    tag: tuple[str, ...],
    fmt: str,
    quiet: bool,
    wide: bool,
) -> None:
    """List hosts of every provider (or the given ones)."""
    from mngr import output
    from mngr.errors import EXIT_PARTIAL
    from mngr.names import parse_tag_filters
    from mngr.records import HostState

    _check_format(fmt)
    if state is not None and state not in {s.value for s in HostState}:
        raise UsageError(
            f"invalid --state {state!r}: use one of {', '.join(s.value for s in HostState)}"
        )
    tags = parse_tag_filters(list(tag))
    result = _service().list_hosts(
        list(provider) or None, state=state, tags=tags, snapshots=fmt != "table"
    )
    output.render_hosts(result.hosts, result.errors, fmt, quiet, wide)
    if result.errors:
        _exit(EXIT_PARTIAL)


def _run_on_hosts(
    verb: str,
    done: str,
    refs: list[str],
    provider: str | None,
    dry_run: bool,
    missing_ok: bool = False,
    yes: bool | None = None,
    **how: Any,
) -> None:
    """Run one plan per host; `verb` names a failure (`destroy a.local: ...`), `done` a
    success (`destroyed: a.local`). `yes` not None: ask first, naming the hosts found."""
    from mngr import output
    from mngr.errors import EXIT_PARTIAL

    service = _service()
    batch = service.prepare_on_hosts(verb, refs, provider, missing_ok=missing_ok, **how)
    for ref in batch.missing:
        output.message(f"{ref}: no such host, nothing to do")
    for host in batch.unchanged:
        output.message(f"{host.ref}: already {host.state}, nothing to do")
    if dry_run:
        _print_batch(batch)
        return
    batch.check()
    if not batch.jobs:
        return
    if yes is not None:
        _confirm(f"{verb} {', '.join(job.label for job in batch.jobs)}", yes)
    outcomes = service.run(batch)
    hosts, snaps = outcomes[: len(batch.jobs)], outcomes[len(batch.jobs) :]
    for outcome, job in zip(hosts, batch.jobs, strict=True):
        if outcome.error is None:
            output.message(f"{done}: {job.label}")
    gone = {id(j.host) for j, o in zip(batch.jobs, hosts, strict=True) if o.error is None}
    failed = _report_purge(batch, snaps, gone)
    _finish(hosts, [job.label for job in batch.jobs], verb)
    if failed:
        _exit(EXIT_PARTIAL)


def _report_purge(batch: Any, outcomes: list[Any], gone: set[int]) -> bool:
    """`destroy --purge`: each snapshot deleted, kept (another host runs from it, or its own
    host was not destroyed) or failed; True when a delete failed (the hosts went: exit 6).
    A snapshot kept because another host runs from it is only a warning."""
    from mngr import output

    failed = False
    for outcome, job in zip(outcomes, batch.then, strict=True):
        snap = job.snapshot
        if outcome.error is None:
            output.message(f"deleted snapshot: {snap.id} ({snap.name})")
        elif id(job.host) not in gone:
            output.message(
                f"kept snapshot {snap.id} ({snap.name}): {job.host.ref} was not destroyed"
            )
        else:
            failed = True
            output.error(f"delete snapshot {snap.id} ({snap.name}): {outcome.error}")
    for snap, why in batch.kept:
        output.message(
            f"warning: kept snapshot {snap.id} ({snap.name}): {why} "
            f"(delete it once that host is gone: mngr host snapshot delete {snap.id})"
        )
    return failed


@host_app.command("show", epilog=_examples("mngr host show web-1", "mngr host show web-1 -f json"))
@argument("name", "Host: NAME, NAME.PROVIDER or host id.")
@provider_opt
@fmt_opt
def host_show(name: str, provider: str | None, fmt: str) -> None:
    """Show one host in full."""
    from mngr import output
    from mngr.records import SCHEMA_VERSION

    _check_format(fmt)
    service = _service()
    host = service.resolve_host(name, provider)
    service.attach_snapshots([host])
    if fmt == "table":
        output.render_mapping(host.to_json())
    else:
        output.emit_json({"schema_version": SCHEMA_VERSION, "host": host.to_json()})


@host_app.command("destroy", epilog=_examples("mngr host destroy web-1 --yes"))
@argument("names", "Hosts: NAME, NAME.PROVIDER or host id.", nargs=-1, required=True)
@provider_opt
@yes_opt
@option("--force", is_flag=True, help="Kill a running host at once (no graceful stop first).")
@option(
    "--purge",
    is_flag=True,
    help="Delete its snapshots too (one another host runs from is kept, with a warning).",
)
@option("--missing-ok", is_flag=True, help="A host that does not exist is not an error.")
@dry_run_opt
def host_destroy(
    names: tuple[str, ...],
    provider: str | None,
    yes: bool,
    force: bool,
    purge: bool,
    missing_ok: bool,
    dry_run: bool,
) -> None:
    """Destroy hosts (asks first, naming the hosts it found)."""
    _run_on_hosts(
        "destroy",
        "destroyed",
        list(names),
        provider,
        dry_run,
        missing_ok=missing_ok,
        yes=yes,
        force=force,
        purge=purge,
    )


@host_app.command("stop", epilog=_examples("mngr host stop web-1 --snapshot"))
@argument("names", "Hosts to stop.", nargs=-1, required=True)
@provider_opt
@option("--snapshot", is_flag=True, help="Snapshot before stopping.")
@dry_run_opt
def host_stop(names: tuple[str, ...], provider: str | None, snapshot: bool, dry_run: bool) -> None:
    """Stop hosts."""
    _run_on_hosts("stop", "stopped", list(names), provider, dry_run, snapshot=snapshot)


@host_app.command(
    "start", epilog=_examples("mngr host start web-1", "mngr host start web-1 --snapshot before")
)
@argument("names", "Hosts to start.", nargs=-1, required=True)
@provider_opt
@option(
    "--snapshot",
    default=None,
    help="Start one host from this snapshot (name or id): its files become the snapshot's.",
)
@dry_run_opt
def host_start(
    names: tuple[str, ...], provider: str | None, snapshot: str | None, dry_run: bool
) -> None:
    """Start stopped hosts, or one host from a chosen snapshot (same name and id)."""
    if snapshot is None:
        _run_on_hosts("start", "started", list(names), provider, dry_run)
        return
    if len(names) != 1:
        raise UsageError("--snapshot starts one host; name exactly one")
    service = _service()
    batch = service.prepare_restore(names[0], snapshot, provider)
    _run_one_on_host(service, batch, "start", f"started from snapshot {snapshot}", dry_run)


def _run_one_on_host(service: Any, batch: Any, verb: str, done: str, dry_run: bool) -> None:
    """Run (or print, for --dry-run) a batch of one plan on one host."""
    from mngr import output

    if dry_run:
        _print_batch(batch)
        return
    outcomes = service.run(batch)
    if outcomes[0].error is None:
        output.message(f"{done}: {batch.jobs[0].label}")
    _finish(outcomes, [batch.jobs[0].label], verb)


@host_app.command(
    "tag",
    epilog=_examples(
        "mngr host tag web-1 team=infra owner=ana", "mngr host tag web-1 --remove team"
    ),
)
@argument("name", "Host to tag.")
@argument("tags", "KEY=VALUE tags to set.", nargs=-1)
@option("--remove", "-r", multiple=True, help="Remove this tag key (repeatable).")
@provider_opt
@dry_run_opt
def host_tag(
    name: str, tags: tuple[str, ...], remove: tuple[str, ...], provider: str | None, dry_run: bool
) -> None:
    """Set or remove a host's tags (where its backend can change them)."""
    from mngr.names import parse_tags

    service = _service()
    batch = service.prepare_tag(name, parse_tags(list(tags)), list(remove), provider)
    _run_one_on_host(service, batch, "tag", "tagged", dry_run)


@host_app.command("touch", epilog=_examples("mngr host touch web-1"))
@argument("name", "Host whose idle clock starts again.")
@provider_opt
def host_touch(name: str, provider: str | None) -> None:
    """Count a host as in use now: its idle timeout starts again."""
    from mngr import output

    host = _service().touch(name, provider)
    output.message(f"touched: {host.ref}")


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
        if command.on_interrupt is not None:  # end what the vendor left running
            end = command.on_interrupt
            try:
                subprocess.run(end.argv, capture_output=True, timeout=end.timeout_s, env=env)
            except (OSError, subprocess.SubprocessError):
                pass
        return 130


@host_app.command(
    "exec",
    epilog=_examples("mngr host exec web-1 -- uname -a", "mngr host exec web-1 -d -- ./serve"),
)
@argument("name", "Host to run the command on.")
@argument("command", "Command and its arguments (after --).", nargs=-1, required=True)
@provider_opt
@option(
    "--detach",
    "-d",
    is_flag=True,
    help="Run in the background; its output goes to `mngr host logs`.",
)
def host_exec(name: str, command: tuple[str, ...], provider: str | None, detach: bool) -> None:
    """Run a command on a host; its exit code becomes mngr's."""
    tty = sys.stdin.isatty() and sys.stdout.isatty()
    cmd = _service().exec_command(name, list(command), provider, tty=tty, detach=detach)
    _exit(_run_attached(cmd))


@host_app.command("logs", epilog=_examples("mngr host logs web-1", "mngr host logs web-1 -f -n 0"))
@argument("name", "Host whose detached commands' output to show.")
@provider_opt
@option("--lines", "-n", type=click.IntRange(min=0), default=50, help="Last lines to show.")
@option("--follow", "-f", is_flag=True, help="Keep printing what comes, until Ctrl-C.")
def host_logs(name: str, provider: str | None, lines: int, follow: bool) -> None:
    """Show the output of the commands started with `exec --detach`."""
    _exit(_run_attached(_service().logs_command(name, provider, lines=lines, follow=follow)))


@host_app.command("shell", epilog=_examples("mngr host shell web-1"))
@argument("name", "Host to open a shell on.")
@provider_opt
def host_shell(name: str, provider: str | None) -> None:
    """Open an interactive shell on a host."""
    tty = sys.stdin.isatty() and sys.stdout.isatty()
    _exit(_run_attached(_service().shell_command(name, provider, tty=tty)))


@host_app.command(
    "forward",
    epilog=_examples(
        "mngr host forward web-1 8080", "mngr host forward web-1 9000:8080 0:5432 -f json"
    ),
)
@argument("name", "Host whose ports to reach.")
@argument(
    "ports",
    "[LOCAL_PORT:]REMOTE_PORT (LOCAL_PORT 0 or omitted: a free port).",
    nargs=-1,
    required=True,
)
@provider_opt
@option("--address", default="127.0.0.1", help="Local address to listen on (default: 127.0.0.1).")
@fmt_opt
def host_forward(
    name: str, ports: tuple[str, ...], provider: str | None, address: str, fmt: str
) -> None:
    """Relay local ports to ports inside a host until Ctrl-C."""
    from mngr import output
    from mngr.errors import EXIT_INTERRUPTED
    from mngr.records import SCHEMA_VERSION

    _check_format(fmt)
    forward = _service().forward(
        name, list(ports), provider, address=address, report=output.message
    )

    def announce(bound: list[Any]) -> None:
        if fmt == "table":
            output.out(
                "".join(f"{b.address}:{b.port} -> {forward.host}:{b.remote}\n" for b in bound)
            )
        else:
            output.emit_json({"schema_version": SCHEMA_VERSION, **forward.record()})

    try:
        forward.run(announce)
    except KeyboardInterrupt:  # Ctrl-C is how a forward ends: every relay is closed by now
        _exit(EXIT_INTERRUPTED)


def _transfer(verb: str, name: str, sources: tuple[str, ...], fmt: str, **how: Any) -> None:
    from mngr import output
    from mngr.records import SCHEMA_VERSION

    _check_format(fmt)
    progress = output.TransferProgress() if sys.stderr.isatty() and fmt == "table" else None
    try:
        result = getattr(_service(), verb)(name, list(sources), progress=progress, **how)
    finally:
        if progress is not None:
            progress.finish()
    if fmt != "table":
        output.emit_json({"schema_version": SCHEMA_VERSION, **result.to_dict()})


_transfer_options = _decorate(
    provider_opt,
    option("--exclude", multiple=True, help="Leave out what matches (rsync pattern; repeatable)."),
    option("--delete", is_flag=True, help="Delete what the source does not have (a mirror)."),
    fmt_opt,
)


@host_app.command(
    "push",
    epilog=_examples(
        "mngr host push web-1 ./src --to work", "mngr host push web-1 ./site/. --to www --delete"
    ),
)
@argument("name", "Host to copy to.")
@argument(
    "sources", "Local files and folders (SRC/. : a folder's contents).", nargs=-1, required=True
)
@option("--to", "dest", default=".", help="Folder on the host (default: its working folder).")
@_transfer_options
def host_push(
    name: str,
    sources: tuple[str, ...],
    dest: str,
    provider: str | None,
    exclude: tuple[str, ...],
    delete: bool,
    fmt: str,
) -> None:
    """Copy files and folders into a host (rsync when both ends have it, else tar)."""
    _transfer(
        "push",
        name,
        sources,
        fmt,
        dest=dest,
        provider=provider,
        exclude=list(exclude),
        delete=delete,
    )


@host_app.command(
    "pull",
    epilog=_examples(
        "mngr host pull web-1 work/out.log", "mngr host pull web-1 work/build --to ./out"
    ),
)
@argument("name", "Host to copy from.")
@argument("sources", "Files and folders on the host.", nargs=-1, required=True)
@option("--to", "dest", default=".", help="Local folder (default: the current one).")
@_transfer_options
def host_pull(
    name: str,
    sources: tuple[str, ...],
    dest: str,
    provider: str | None,
    exclude: tuple[str, ...],
    delete: bool,
    fmt: str,
) -> None:
    """Copy files and folders out of a host."""
    _transfer(
        "pull",
        name,
        sources,
        fmt,
        dest=dest,
        provider=provider,
        exclude=list(exclude),
        delete=delete,
    )


@host_app.command(
    "ssh-config",
    epilog=_examples("mngr host ssh-config >> ~/.ssh/config.d/mngr", "mngr host ssh-config web-1"),
)
@argument("names", "Hosts (default: every host).", nargs=-1)
@provider_opt
def host_ssh_config(names: tuple[str, ...], provider: str | None) -> None:
    """Print ssh_config Host stanzas for hosts with an ssh endpoint (ssh pool, aws)."""
    from mngr import output
    from mngr.errors import EXIT_PARTIAL

    result = _service().ssh_config(list(names), provider)
    output.out(result.text)
    for ref, why in result.skipped:
        output.message(f"{ref}: skipped: {why}")
    for row in result.errors:
        output.error(f"provider {row.provider}: {row.message}")
    if result.errors:
        _exit(EXIT_PARTIAL)
    if names and result.skipped:
        _exit(1)


# --- provisioning (pyinfra) ---------------------------------------------------------------


def _provision_report(results: list[Any], dry_run: bool = False) -> int:
    """One line per host (provisioned, or its error, with the fate of a host that failed at
    create); the exit code: 0 every host succeeded, 6 some failed, 1 all did."""
    from mngr import output
    from mngr.errors import EXIT_PARTIAL

    failed = [r for r in results if r.error]
    for r in results:
        if r.error is None and dry_run:
            output.message(f"dry run, nothing changed on {r.host.ref} (planned changes above)")
        elif r.error is None:
            output.message(
                f"provisioned {r.host.ref}: {r.operations} operation(s), {r.changed} changed"
            )
        else:
            after = f"; host {r.fate}" if r.fate is not None else ""
            output.error(f"provision {r.host.ref}: {r.error}{after}")
    if not failed:
        return 0
    return 1 if len(failed) == len(results) else EXIT_PARTIAL


@host_app.command(
    "provision",
    epilog=_examples(
        "mngr host provision web-1 web-2 deploy.py",
        "mngr host provision web-1 deploy.py --data env=prod --dry-run",
    ),
)
@argument("hosts", "Hosts to provision.", nargs=-1, required=True)
@argument("deploy", "The pyinfra deploy file (deploy.py).")
@option("--data", multiple=True, help="KEY=VALUE the deploy reads as host.data.KEY (repeatable).")
@provider_opt
@option("--jobs", "-j", type=click.IntRange(min=1), default=None, help="Hosts at once.")
@option("--dry-run", is_flag=True, help="Show pyinfra's planned changes; change nothing.")
def host_provision(
    hosts: tuple[str, ...],
    deploy: str,
    data: tuple[str, ...],
    provider: str | None,
    jobs: int | None,
    dry_run: bool,
) -> None:
    """Run a pyinfra deploy on hosts of any provider (needs the provision extra)."""
    from mngr import provision

    provision.require_pyinfra()
    values = provision.parse_data(list(data))
    if jobs is not None:
        State.jobs = jobs
    results = _service().provision(
        list(hosts), deploy, data=values, dry_run=dry_run, provider=provider
    )
    _exit(_provision_report(results, dry_run=dry_run))


@host_app.command(
    "inventory",
    epilog=_examples(
        "mngr host inventory > inventory.py && pyinfra inventory.py deploy.py",
        "mngr host inventory -f ansible -p pool > hosts.json",
    ),
)
@providers_opt
@option("--tag", "-t", multiple=True, help="Only hosts with KEY=VALUE (or with KEY at all).")
@option("--format", "-f", "fmt", default="pyinfra", help="pyinfra, ansible or json.")
def host_inventory(provider: tuple[str, ...], tag: tuple[str, ...], fmt: str) -> None:
    """Print the running hosts as an inventory: grouped per provider and per tag."""
    from mngr import output
    from mngr.errors import EXIT_PARTIAL
    from mngr.inventory import FORMATS
    from mngr.names import parse_tag_filters

    if fmt not in FORMATS:
        raise UsageError(f"invalid --format {fmt!r}: use one of {', '.join(FORMATS)}")
    service = _service()
    inventory = service.inventory(list(provider) or None, parse_tag_filters(list(tag)))
    if fmt == "pyinfra":
        output.out(inventory.pyinfra(service.config_file))
    else:
        output.emit_json(inventory.ansible() if fmt == "ansible" else inventory.record())
    if inventory.left_out:
        shown = ", ".join(f"{h.ref} ({h.state})" for h in inventory.left_out)
        output.message(f"left out, not running: {shown}")
    for row in inventory.errors:
        output.error(f"provider {row.provider}: {row.message}")
    if inventory.errors:
        _exit(EXIT_PARTIAL)


# --- snapshots --------------------------------------------------------------------------


@host_app.group("snapshot", help="Manage snapshots of hosts.")
def snapshot_app() -> None:
    pass


@snapshot_app.command("create", epilog=_examples("mngr host snapshot create web-1 -n before"))
@argument("host", "Host to snapshot.")
@option("--name", "-n", default=None, help="Snapshot name.")
@provider_opt
@dry_run_opt
@fmt_opt
def snapshot_create(
    host: str, name: str | None, provider: str | None, dry_run: bool, fmt: str
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


@snapshot_app.command("list", epilog=_examples("mngr host snapshot list web-1"))
@argument("host", "Only snapshots of this host.", required=False, default=None)
@providers_opt
@fmt_opt
@option("--quiet", "-q", is_flag=True, help="Print ids only.")
@option("--wide", "-w", is_flag=True, help="Table: times as written.")
def snapshot_list(
    host: str | None, provider: tuple[str, ...], fmt: str, quiet: bool, wide: bool
) -> None:
    """List snapshots."""
    from mngr import output
    from mngr.errors import EXIT_PARTIAL

    _check_format(fmt)
    snaps, errors = _service().list_snapshots(list(provider) or None, host)
    output.render_snapshots(snaps, errors, fmt, quiet, wide)
    if errors:
        _exit(EXIT_PARTIAL)


@snapshot_app.command("delete", epilog=_examples("mngr host snapshot delete before --yes"))
@argument("ids", "Snapshot ids or names.", nargs=-1, required=True)
@provider_opt
@yes_opt
@dry_run_opt
def snapshot_delete(ids: tuple[str, ...], provider: str | None, yes: bool, dry_run: bool) -> None:
    """Delete snapshots."""
    from mngr import output

    service = _service()
    batch = service.prepare_snapshot_delete(list(ids), provider)
    if dry_run:
        _print_batch(batch)
        return
    batch.check()
    _confirm(f"delete snapshot {', '.join(ids)}", yes)
    outcomes = service.run(batch)
    for outcome, job in zip(outcomes, batch.jobs, strict=True):
        if outcome.error is None:
            output.message(f"deleted: {job.snapshot.id} ({job.snapshot.name})")
    _finish(outcomes, [job.label for job in batch.jobs], "delete")


# --- providers --------------------------------------------------------------------------


@app.group("provider", help="Manage provider instances.")
def provider_app() -> None:
    pass


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


@provider_app.command("list", epilog=_examples("mngr provider list"))
@fmt_opt
def provider_list(fmt: str) -> None:
    """List provider instances."""
    from mngr import output

    _check_format(fmt)
    rows = _service().provider_rows()
    if fmt == "table":  # reasons in `provider show` and in the JSON
        for row in rows:
            row["cannot"] = list(row.get("unsupported", {})) or None
    columns = ["name", "backend", "status", "default", "cannot", "source"]
    output.render_rows(rows, columns, fmt, "providers")


@provider_app.command("show", epilog=_examples("mngr provider show local_docker"))
@argument("name", "Provider name.")
@fmt_opt
def provider_show(name: str, fmt: str) -> None:
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


@provider_app.command(
    "check", epilog=_examples("mngr provider check", "mngr provider check my-aws")
)
@argument("names", "Providers (default: all).", nargs=-1)
@fmt_opt
def provider_check(names: tuple[str, ...], fmt: str) -> None:
    """Check that providers are reachable (one cheap call each)."""
    from mngr import output

    _check_format(fmt)
    outcomes = _service().check(list(names) or None)
    rows = []
    for o in outcomes:
        if o.error is None:
            took = o.value.pop("answered_ms", None)
            rows.append({"name": o.item, "ok": True, "ms": took, "details": o.value})
        else:
            rows.append(
                {"name": o.item, "ok": False, "ms": None, "details": {"error": str(o.error)}}
            )
    output.render_rows(rows, ["name", "ok", "ms", "details"], fmt, "providers")
    failed = [o.error for o in outcomes if o.error is not None]
    if failed:
        _exit(getattr(failed[0], "exit_code", 1))


@provider_app.command(
    "add", epilog=_examples("mngr provider add gpu-box --backend ssh --set hosts=gpu1,gpu2")
)
@argument("name", "Name of the new provider instance.")
@option("--backend", "-b", required=True, help="Backend of the provider.")
@option("--set", "set_", multiple=True, help="Setting KEY=VALUE (repeatable).")
@option("--scope", default="user", help="user, project or local.")
def provider_add(name: str, backend: str, set_: tuple[str, ...], scope: str) -> None:
    """Add a provider to a settings file (comments and layout are kept)."""
    from mngr import output, settings_file

    path = settings_file.add_provider(name, backend, list(set_), scope)
    output.message(f"added provider {name!r} to {path}")


@provider_app.command("remove", epilog=_examples("mngr provider remove gpu-box --yes"))
@argument("names", "Providers to remove.", nargs=-1, required=True)
@option("--scope", default="user", help="user, project or local.")
@option("--force", is_flag=True, help="Remove even if it has hosts (they are left running).")
@yes_opt
def provider_remove(names: tuple[str, ...], scope: str, force: bool, yes: bool) -> None:
    """Remove providers from a settings file. A provider with hosts is kept unless --force:
    its hosts would keep running (and costing) with no mngr command to reach them."""
    from mngr import output, settings_file
    from mngr.errors import ConfigError

    try:
        service = _service()
    except ConfigError as exc:  # settings that do not load: removing may be the fix
        output.message(f"not checking for hosts: the settings do not load ({exc})")
        service = None
    left = (
        [h.ref for h in service.hosts_left_by_removing(list(names), force=force)]
        if service is not None
        else []
    )
    behind = (
        f" (leaves {len(left)} host(s) running and unlisted: {', '.join(left)})" if left else ""
    )
    _confirm(f"remove provider {', '.join(names)}{behind}", yes)
    for name in names:
        path = settings_file.remove_provider(name, scope)
        output.message(f"removed provider {name!r} from {path}")


# --- config -----------------------------------------------------------------------------


@app.group("config", help="Inspect settings.")
def config_app() -> None:
    pass


@config_app.command("show", epilog=_examples("mngr config show -f json"))
@fmt_opt
def config_show(fmt: str) -> None:
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
    if fmt == "table":  # one setting a line, under its provider
        output.render_mapping({"default_provider": settings.default_provider})
        for row in rows:
            output.out(f"\n{output.safe_line(row['name'])} ({row['backend']}):\n")
            output.render_mapping({"sources": row["sources"], **row["settings"]}, "  ")
    else:
        output.emit_json(
            {"schema_version": 1, "default_provider": settings.default_provider, "providers": rows}
        )


@config_app.command("path", epilog=_examples("mngr config path"))
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
    from mngr.errors import ConfigError

    for layer in config.layers(State.config):
        if layer.required and layer.path is not None and not layer.path.exists():
            raise ConfigError(f"{layer.path}: settings file not found (named by {layer.label})")


def _project_files(paths_given: tuple[Path, ...]) -> list[Path]:
    from mngr import paths

    if paths_given:
        return list(paths_given)
    project = paths.project_dir()
    found = [project / name for name in (paths.PROJECT_FILE, paths.LOCAL_FILE)] if project else []
    found = [path for path in found if path.exists()]
    if not found:
        raise UsageError(
            f"no project settings here: no {paths.PROJECT_DIR}/{paths.PROJECT_FILE} or "
            f"{paths.PROJECT_DIR}/{paths.LOCAL_FILE} in {Path.cwd()} or above"
        )
    return found


def project_files_arg(f: Any) -> Any:
    return argument(
        "files",
        "Settings files (default: this project's .mngr/ files).",
        nargs=-1,
        type=click.Path(path_type=Path),
    )(f)


@config_app.command(
    "trust", epilog=_examples("mngr config trust", "mngr config trust .mngr/settings.toml")
)
@project_files_arg
def config_trust(files: tuple[Path, ...]) -> None:
    """Trust project settings files as they are now (path and content hash)."""
    from mngr import config, output, trust

    for path in _project_files(files):
        if not path.is_file():
            raise UsageError(f"{path}: not a settings file")
        config.read_toml(path, required=True)  # a file mngr cannot read is not trusted
        trust.trust(path)
        output.message(f"trusted {path.resolve()} (until it changes)")


@config_app.command("untrust", epilog=_examples("mngr config untrust"))
@project_files_arg
def config_untrust(files: tuple[Path, ...]) -> None:
    """Stop trusting project settings files."""
    from mngr import output, trust

    for path in _project_files(files):
        done = trust.untrust(path)
        output.message(f"{'no longer trusted' if done else 'was not trusted'}: {path.resolve()}")


# --- gc ---------------------------------------------------------------------------------


@app.command(
    "gc",
    epilog=_examples(
        "mngr gc --dry-run", "mngr gc -p local_docker --yes", "mngr gc --snapshots --older-than 7d"
    ),
)
@providers_opt
@option("--snapshots", is_flag=True, help="Also delete snapshots of destroyed hosts.")
@option("--older-than", default=None, help="Only what is older than this (30m, 2h, 7d).")
@yes_opt
@dry_run_opt
@fmt_opt
def gc(
    provider: tuple[str, ...],
    snapshots: bool,
    older_than: str | None,
    yes: bool,
    dry_run: bool,
    fmt: str,
) -> None:
    """Find what mngr made that no host owns any more; delete it with --yes.

    Never touches what has no mngr marker, nor anything younger than a create may take.
    """
    from mngr import output
    from mngr.errors import EXIT_PARTIAL
    from mngr.resources import parse_duration

    _check_format(fmt)
    age = parse_duration(older_than) if older_than else None
    service = _service()
    report, batch = service.prepare_gc(
        list(provider) or None, snapshots=snapshots, older_than_s=age
    )
    output.render_gc(report, fmt)
    if batch.jobs and not dry_run:
        _confirm(f"delete {len(batch.jobs)} orphan(s)", yes)
        outcomes = service.run(batch)
        for outcome, job in zip(outcomes, batch.jobs, strict=True):
            if outcome.error is None:
                output.message(f"deleted: {job.label}")
        _finish(outcomes, [job.label for job in batch.jobs], "delete")
    if report.errors:
        _exit(EXIT_PARTIAL)


# --- completion -------------------------------------------------------------------------


@app.command(
    "completion",
    epilog=_examples("mngr completion bash > ~/.local/share/bash-completion/completions/mngr"),
)
@argument("shell", "bash, zsh or fish.")
def completion(shell: str) -> None:
    """Print the completion script for a shell."""
    from mngr import completion as comp

    sys.stdout.write(comp.script(shell))


# --- serve ------------------------------------------------------------------------------


@app.command(
    "serve",
    epilog=_examples("mngr serve --token-file ~/.config/mngr/tokens --listen 127.0.0.1:8421"),
)
@option(
    "--token-file",
    type=click.Path(path_type=Path),
    required=True,
    help="Bearer tokens, one per line ('#' comments; an 'ro:' prefix = read-only).",
)
@option(
    "--listen",
    default="127.0.0.1:8421",
    help="HOST:PORT to listen on (port 0: any free port).",
)
@option(
    "--tls-cert", type=click.Path(path_type=Path), default=None, help="TLS certificate chain (PEM)."
)
@option("--tls-key", type=click.Path(path_type=Path), default=None, help="TLS private key (PEM).")
@option("--insecure-http", is_flag=True, help="Allow plain HTTP on a non-loopback address.")
@option("--provider", "-p", multiple=True, help="Serve only these providers (default: all).")
@option(
    "--request-timeout",
    type=float,
    default=30.0,
    help="Seconds a list waits for a provider; a slower one is an error row.",
)
@option(
    "--max-connections",
    type=int,
    default=1000,
    help="Open connections at most; more are answered with 503.",
)
@option(
    "--read-timeout",
    type=float,
    default=15.0,
    help="Seconds a client may take to send a request's headers or body.",
)
@option(
    "--allow-local-exec",
    is_flag=True,
    help="Let tokens run commands in hosts of local providers (as this server's user, here).",
)
def serve(
    token_file: Path,
    listen: str,
    tls_cert: Path | None,
    tls_key: Path | None,
    insecure_http: bool,
    provider: tuple[str, ...],
    request_timeout: float,
    max_connections: int,
    read_timeout: float,
    allow_local_exec: bool,
) -> None:
    """Serve the HTTP API over this machine's providers (what the `mngr` backend talks to)."""
    from mngr import config
    from mngr.errors import VendorMissingError

    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        from mngr.paths import install_hint

        raise VendorMissingError(
            f"mngr serve needs the server extra ({exc.name} is not installed): "
            f"{install_hint('server')}"
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
            providers=list(provider) or None,
            jobs=State.jobs,
            request_timeout_s=request_timeout,
            max_connections=max_connections,
            read_timeout_s=read_timeout,
            allow_local_exec=allow_local_exec,
        )
    except KeyboardInterrupt:
        pass  # Ctrl-C / SIGTERM: uvicorn has already shut down gracefully


def build(with_backend_flags: bool) -> click.Group:
    register_create(with_backend_flags)
    return app


def run(argv: list[str]) -> int:
    """Entry point after the fast paths: run the click app, map errors to exit codes."""
    from mngr.errors import EXIT_INTERRUPTED, EXIT_USAGE, MngrError

    # Backend flags import every backend; only `host create` (and its help) need them.
    root = build(with_backend_flags="create" in argv)
    try:
        with root.make_context("mngr", list(argv)) as ctx:
            root.invoke(ctx)
        return 0
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except MngrError as exc:
        _report(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        _report("interrupted")
        return EXIT_INTERRUPTED
    except click.exceptions.NoArgsIsHelpError as exc:
        exc.show()
        return EXIT_USAGE
    except click.Abort:
        _report("aborted")
        return 1
    except click.ClickException as exc:
        _report(_usage_text(exc))
        return EXIT_USAGE if isinstance(exc, click.UsageError) else exc.exit_code
    except Exception as exc:
        if os.environ.get("MNGR_DEBUG"):
            raise
        _report(f"internal error: {exc!r} (set MNGR_DEBUG=1 for a traceback)")
        return 1


def _report(text: str) -> None:
    from mngr import output  # here, not atop run(): it imports the pydantic records

    output.error(text)


def _usage_text(exc: click.ClickException) -> str:
    """The one-line text of a click usage error (bad option, missing argument...)."""
    text = exc.format_message().rstrip(".")  # in mngr's voice: "error: no such option '-l'"
    if text[:2].istitle():
        text = text[0].lower() + text[1:]
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click.NoSuchOption) and ctx is not None and ctx.command is host_exec:
        return f"{text}: put the command after '--': mngr host exec HOST -- COMMAND..."
    if ctx is not None:
        text += f" (see '{ctx.command_path} --help')"
    return text
