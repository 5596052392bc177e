"""The pyinfra connector for mngr hosts: `pyinfra @mngr/web-1 deploy.py`, on a host of any
provider. Registered under pyinfra's `pyinfra.connectors` entry point; only pyinfra imports
this module (it imports pyinfra, which mngr's own start-up never does).

It reaches the host through mngr's use-case layer: the host is resolved once at connect, then
each command is `Service.exec_command(host, ["sh", "-c", COMMAND])` (the backend's transport:
`docker exec -i`, ssh with its shared connection, a process in the local host's folder, ...).
A file goes up as one command, `cat > TEMP && mv TEMP FILE` with the bytes on stdin, and
comes down as `cat FILE` (measured against push/pull: see bench/RESULTS.md).

`pyinfra @mngr deploy.py` targets every running host, grouped per provider and per tag as
`mngr host inventory` groups them. Host data `mngr_config` names an extra settings file
(what `mngr --config` takes); `mngr host provision` passes it on, with `mngr_report`: a file
where the connector writes each host's results.
"""

from __future__ import annotations

import json
import secrets
import shlex
from io import IOBase
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from gevent.subprocess import PIPE, Popen
from pyinfra.api import StringCommand
from pyinfra.api.exceptions import ConnectError, InventoryError
from pyinfra.api.output import echo
from pyinfra.api.state import BaseStateCallback
from pyinfra.api.util import get_file_io
from pyinfra.connectors.base import BaseConnector, DataMeta
from pyinfra.connectors.util import (
    CommandOutput,
    execute_command_with_sudo_retry,
    extract_control_arguments,
    make_unix_command_for_host,
    read_output_buffers,
    write_stdin,
)
from typing_extensions import TypedDict

from mngr.errors import MngrError

if TYPE_CHECKING:
    from pyinfra.api.host import Host as PyinfraHost
    from pyinfra.api.state import State

    from mngr.records import Host
    from mngr.service import Service

PREFIX = "@mngr"


class ConnectorData(TypedDict, total=False):
    mngr_host: str
    mngr_config: str
    mngr_report: str


class Report(BaseStateCallback):
    """Writes how each host fares, one JSON line per event, to the file `mngr host provision`
    reads (pyinfra's own `--json` prints nothing once every host has failed)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def write(self, host: PyinfraHost, **event: Any) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"host": host.name, **event}) + "\n")

    def host_connect_error(self, state: State, host: PyinfraHost, error: Any) -> None:
        self.write(host, error=f"could not connect: {error.args[0] if error.args else error}")

    def operation_host_error(self, state: State, host: PyinfraHost, op_hash: str, *_: Any) -> None:
        self.write(host, op=_op_name(state, op_hash), error="failed")

    def operation_end(self, state: State, op_hash: str) -> None:
        for host in state.inventory.iter_activated_hosts():
            if op_hash in state.ops[host]:
                meta = state.get_op_data_for_host(host, op_hash).operation_meta
                if meta.is_complete() and meta.did_succeed():
                    self.write(host, op=_op_name(state, op_hash), changed=meta.did_change())


def _op_name(state: State, op_hash: str) -> str:
    return ", ".join(sorted(state.get_op_meta(op_hash).names))


class MngrConnector(BaseConnector):
    """Runs pyinfra's commands on a mngr host through mngr's transport."""

    handles_execution = True
    data_cls = ConnectorData
    data_meta = {
        "mngr_host": DataMeta("The host: NAME, NAME.PROVIDER or its id"),
        "mngr_config": DataMeta("An extra mngr settings file (as `mngr --config`)"),
        "mngr_report": DataMeta("A file to append each host's results to (JSON lines)"),
    }
    data: ConnectorData

    def __init__(self, state: State, host: PyinfraHost) -> None:
        super().__init__(state, host)
        self.service: Service | None = None
        self.target: Host | None = None
        report = self.data.get("mngr_report")
        if report and not any(isinstance(h, Report) for h in state.callback_handlers):
            state.add_callback_handler(Report(report))

    @staticmethod
    def make_names_data(name: str | None = None) -> Any:
        if name:
            yield f"{PREFIX}/{name}", {"mngr_host": name}, [PREFIX]
            return
        try:
            inventory = _service(None).inventory()
        except MngrError as exc:
            raise InventoryError(f"mngr: {exc}") from None
        for entry in inventory.hosts:
            groups = [PREFIX, *inventory.groups_of(entry)]
            yield f"{PREFIX}/{entry.ref}", {"mngr_host": entry.ref}, groups

    def connect(self) -> None:
        try:
            self.service = _service(self.data.get("mngr_config"), self.state)
            self.target = self.service.running_host(self.data["mngr_host"])
        except MngrError as exc:
            raise ConnectError(f"mngr: {exc}") from None

    # --- commands ---------------------------------------------------------------------

    def _spawn(self, command: StringCommand, **arguments: Any) -> Popen:
        """Start COMMAND (wrapped for sudo/su/env/chdir as pyinfra asks) on the host."""
        assert self.service is not None and self.target is not None, "not connected"
        text = make_unix_command_for_host(self.state, self.host, command, **arguments)
        # pyinfra's command is shell text (`sh -c '...'`, maybe behind sudo): a shell reads it.
        cmd = self.service.exec_command(self.target, ["sh", "-c", text.get_raw_value()])
        return Popen(cmd.argv, stdin=PIPE, stdout=PIPE, stderr=PIPE, cwd=cmd.cwd, env=_env(cmd))

    def run_shell_command(
        self,
        command: StringCommand,
        print_output: bool = False,
        print_input: bool = False,
        **arguments: Any,
    ) -> tuple[bool, CommandOutput]:
        control = extract_control_arguments(arguments)
        timeout = control.get("_timeout")
        stdin = control.get("_stdin")
        success_codes = control.get("_success_exit_codes") or [0]

        def execute() -> tuple[int, CommandOutput]:
            if print_input:
                shown = make_unix_command_for_host(self.state, self.host, command, **arguments)
                echo(f"{self.host.print_prefix}>>> {shown}", err=True)
            process = self._spawn(command, **arguments)
            if stdin:
                write_stdin(stdin, process.stdin)
            process.stdin.close()
            try:
                output = read_output_buffers(
                    process.stdout,
                    process.stderr,
                    timeout=timeout,
                    print_output=print_output,
                    print_prefix=self.host.print_prefix,
                )
            except TimeoutError:
                process.kill()
                process.wait()
                raise
            process.wait()
            process.stdout.close()
            process.stderr.close()
            return process.returncode, output

        code, output = execute_command_with_sudo_retry(self.host, arguments, execute)
        return code in success_codes, output

    def _transfer(self, script: str, data: bytes, **arguments: Any) -> bytes:
        """Run a file-moving shell script with `data` on stdin; its stdout, or OSError."""
        for key in ("_get_pty", "_stdin", "_success_exit_codes", "_timeout"):
            arguments.pop(key, None)
        process = self._spawn(StringCommand(script), **arguments)
        out, err = process.communicate(data)
        if process.returncode != 0:
            raise OSError(err.decode(errors="replace").strip() or f"exit {process.returncode}")
        return out

    def put_file(
        self,
        filename_or_io: str | IOBase,
        remote_filename: str,
        remote_temp_filename: str | None = None,  # beside the file instead: one `mv` away
        print_output: bool = False,
        print_input: bool = False,
        **arguments: Any,
    ) -> bool:
        with get_file_io(filename_or_io) as file_io:
            data = file_io.read()
        if isinstance(data, str):
            data = data.encode()
        dest = shlex.quote(remote_filename)
        temp = shlex.quote(f"{remote_filename}.mngr-{secrets.token_hex(4)}")
        script = f"cat > {temp} && mv -f {temp} {dest} || {{ rm -f {temp}; exit 1; }}"
        if print_input:
            echo(f"{self.host.print_prefix}>>> upload {remote_filename}", err=True)
        self._transfer(script, data, **arguments)
        if print_output:
            echo(f"{self.host.print_prefix}file uploaded: {remote_filename}", err=True)
        return True

    def get_file(
        self,
        remote_filename: str,
        filename_or_io: str | IOBase,
        remote_temp_filename: str | None = None,  # not needed: the bytes come over stdout
        print_output: bool = False,
        print_input: bool = False,
        **arguments: Any,
    ) -> bool:
        if print_input:
            echo(f"{self.host.print_prefix}>>> download {remote_filename}", err=True)
        data = self._transfer(f"cat {shlex.quote(remote_filename)}", b"", **arguments)
        with get_file_io(filename_or_io, "wb") as file_io:
            file_io.write(data)
        if print_output:
            echo(f"{self.host.print_prefix}file downloaded: {remote_filename}", err=True)
        return True


def _env(cmd: Any) -> dict[str, str] | None:
    import os

    return {**os.environ, **cmd.env} if cmd.env else None


# The hosts of one pyinfra run (one State) share a use-case layer per settings file.
_SERVICES: WeakKeyDictionary[Any, dict[str | None, Service]] = WeakKeyDictionary()


def _service(config_file: str | None, state: State | None = None) -> Service:
    found = _SERVICES.setdefault(state, {}) if state is not None else {}
    if config_file not in found:
        from pathlib import Path

        from mngr import config
        from mngr.service import Service

        found[config_file] = Service(config.load(Path(config_file) if config_file else None))
    return found[config_file]
