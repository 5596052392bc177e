"""The running hosts as an inventory for provisioning tools, built from `list`: a group per
provider (`provider_<name>`) and per tag (`tag_<key>_<value>`), in three shapes: a pyinfra
inventory file (hosts as `@mngr/NAME.PROVIDER`, reached by mngr's connector), Ansible's
dynamic-inventory JSON (what `ansible-inventory --list` prints; ssh endpoints as host vars
where hosts have one) and mngr's own JSON."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from mngr.records import SCHEMA_VERSION, Host, HostState, ProviderErrorRow

FORMATS = ("pyinfra", "ansible", "json")
PYINFRA_PREFIX = "@mngr"


def group_name(*parts: str) -> str:
    """A group name both tools take (a Python identifier, an Ansible group): `tag_team_infra`."""
    return re.sub(r"[^A-Za-z0-9_]", "_", "_".join(parts))


@dataclass
class Inventory:
    hosts: list[Host] = field(default_factory=list)  # running hosts only
    left_out: list[Host] = field(default_factory=list)  # not running: not reachable
    errors: list[ProviderErrorRow] = field(default_factory=list)

    @classmethod
    def of(cls, hosts: list[Host], errors: list[ProviderErrorRow]) -> Inventory:
        running = [h for h in hosts if h.state == HostState.RUNNING]
        return cls(running, [h for h in hosts if h.state != HostState.RUNNING], list(errors))

    @staticmethod
    def groups_of(host: Host) -> list[str]:
        tags = [group_name("tag", k, v) for k, v in sorted(host.tags.items())]
        return [group_name("provider", host.provider), *tags]

    @property
    def groups(self) -> dict[str, list[str]]:
        """Group -> host refs, groups sorted by name."""
        found: dict[str, list[str]] = {}
        for host in self.hosts:
            for group in self.groups_of(host):
                found.setdefault(group, []).append(host.ref)
        return dict(sorted(found.items()))

    # --- shapes -------------------------------------------------------------------------

    def pyinfra(self, config_file: str | None = None) -> str:
        """A pyinfra inventory file: each group a list of `@mngr/NAME.PROVIDER` targets (with
        host data naming the settings file when mngr was given `--config`)."""

        def target(ref: str) -> str:
            name = json.dumps(f"{PYINFRA_PREFIX}/{ref}")
            return (
                f"({name}, {{'mngr_config': {json.dumps(config_file)}}})" if config_file else name
            )

        lines = [
            "# The running mngr hosts (mngr host inventory --format pyinfra):",
            "#   pyinfra inventory.py deploy.py",
        ]
        for group, refs in self.groups.items():
            lines.append(f"{group} = [{', '.join(target(ref) for ref in refs)}]")
        return "\n".join(lines) + "\n"

    def ansible(self) -> dict[str, Any]:
        """`ansible-inventory --list` JSON: every group with its hosts, `all` with every group
        as a child, and the host vars under `_meta.hostvars`."""
        groups = self.groups
        result: dict[str, Any] = {
            "_meta": {"hostvars": {h.ref: ansible_vars(h) for h in self.hosts}},
            "all": {"children": ["ungrouped", *groups]},
            "ungrouped": {"hosts": []},
        }
        for group, refs in groups.items():
            result[group] = {"hosts": refs}
        return result

    def record(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "hosts": [
                {
                    "ref": h.ref,
                    "id": h.id,
                    "name": h.name,
                    "provider": h.provider,
                    "backend": h.backend,
                    "tags": h.tags,
                    "pyinfra": f"{PYINFRA_PREFIX}/{h.ref}",
                    "groups": self.groups_of(h),
                    "ssh_endpoint": (
                        h.ssh_endpoint.model_dump(mode="json") if h.ssh_endpoint else None
                    ),
                }
                for h in self.hosts
            ],
            "groups": self.groups,
            "left_out": [{"ref": h.ref, "state": str(h.state)} for h in self.left_out],
            "errors": [e.to_json() for e in self.errors],
        }


def ansible_vars(host: Host) -> dict[str, Any]:
    """mngr's facts of the host, and how Ansible's ssh connection reaches it when it has an
    ssh endpoint (hosts without one need `mngr host exec`)."""
    found: dict[str, Any] = {
        "mngr_id": host.id,
        "mngr_name": host.name,
        "mngr_provider": host.provider,
        "mngr_backend": host.backend,
        "mngr_tags": host.tags,
    }
    ssh = host.ssh_endpoint
    if ssh is not None:
        found["ansible_connection"] = "ssh"
        found["ansible_host"] = ssh.host
        found["ansible_port"] = ssh.port
        if ssh.user:
            found["ansible_user"] = ssh.user
        if ssh.identity_file:
            found["ansible_ssh_private_key_file"] = ssh.identity_file
        found["ansible_ssh_common_args"] = (
            f"-o UserKnownHostsFile={shlex.quote(ssh.known_hosts)} "
            f"-o StrictHostKeyChecking={shlex.quote(ssh.strict_host_key_checking)}"
        )
    return found
