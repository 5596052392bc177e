"""A backend over the stand-in vendor CLI (tests/support/fakevendor.py): drives the real
runner, engine and plans exactly as a vendor backend does."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mngr.backend import Backend, Capability, CreateOptions, CreateRequest, ProviderConfig
from mngr.errors import (
    ConflictError,
    MngrError,
    UnauthorisedError,
    VendorCommandError,
    VendorOutputError,
)
from mngr.plan import Plan, Step
from mngr.records import Host, HostState
from mngr.runner import Command

SCRIPT = Path(__file__).with_name("fakevendor.py")


class FakeConfig(ProviderConfig):
    binary: str = str(SCRIPT)
    state_dir: str
    fault: str = ""  # "<verb>:<fault>", see fakevendor.py


class FakeOptions(CreateOptions):
    widgets: str | None = None


class FakeBackend(Backend):
    name = "fakecli"
    config_model = FakeConfig
    create_options_model = FakeOptions
    unsupported = {
        Capability.SNAPSHOT: "the fake vendor keeps no filesystem",
        Capability.STOP_START: "the fake vendor cannot stop hosts",
        Capability.EXEC: "the fake vendor has no shell",
        Capability.TAGS: "the fake vendor cannot change tags",
        Capability.RESTORE: "the fake vendor keeps no filesystem",
        Capability.GC: "the fake vendor leaves nothing behind",
    }
    config: FakeConfig

    def _cmd(self, *args: str) -> Command:
        binary = self.config.binary
        argv = [sys.executable, binary, *args] if binary.endswith(".py") else [binary, *args]
        env = {"FAKEVENDOR_DIR": self.config.state_dir, "FAKEVENDOR_FAULT": self.config.fault}
        return Command(argv, timeout_s=self.config.timeout_s, env=env)

    def classify(self, error: VendorCommandError) -> MngrError:
        if "Conflict" in error.stderr:
            return ConflictError(f"host exists: {error.stderr.strip()}")
        if "AccessDenied" in error.stderr:
            return UnauthorisedError(f"not authorised: {error.stderr.strip()}")
        return error

    def list_hosts(self) -> list[Host]:
        out = self.run(self._cmd("list")).stdout
        try:
            rows = json.loads(out)
            return [
                Host(
                    id=r["id"],
                    name=r["name"],
                    provider=self.provider,
                    backend=self.name,
                    state=HostState(r["state"]),
                )
                for r in rows
            ]
        except (ValueError, KeyError, TypeError) as exc:
            raise VendorOutputError(f"fakevendor list printed unreadable output: {exc}") from None

    def create_plan(self, request: CreateRequest) -> Plan:
        return Plan(
            [
                Step(
                    "create",
                    command=self._cmd("create", request.name, request.host_id),
                    undo=Step("delete", command=self._cmd("delete", request.name)),
                ),
                Step("tag", command=self._cmd("tag", request.name)),
            ],
            finish=lambda ctx: Host(
                id=request.host_id,
                name=request.name,
                provider=self.provider,
                backend=self.name,
                state=HostState.RUNNING,
            ),
        )

    def destroy_plan(self, host: Host, *, force: bool = False, purge: bool = False) -> Plan:
        return Plan([Step("delete", command=self._cmd("delete", host.name))])

    def check(self) -> dict[str, object]:
        return json.loads(self.run(self._cmd("whoami")).stdout)
