"""What a new EC2 host needs so that a provider with only `region` set gives a host one can
ssh into, each piece made once per provider and shared by its hosts:

- an image: an alias (`al2023`, the default, `ubuntu-24.04`, `debian-12`) resolved through
  AWS's public SSM parameters for the instance type's architecture, with the family's ssh user;
- a key pair: an ed25519 key in the user's data folder (mode 0600; never in settings, argv or
  logs), its public half imported once (`import-key-pair`, tagged as mngr's);
- a security group in the subnet's VPC (the default VPC when none is set), open on port 22 to
  `ssh_cidrs` and nothing else;
- a known-hosts file per host, where the host key first seen at create is pinned.

A create never undoes the key pair or the group (the next host uses them); `gc` removes them
once no host of the provider is left (`AwsBackend.managed_orphans`). A file lock per provider
and re-reading after AWS's "duplicate" error make two concurrent first creates make one of
each.

`MNGR_AWS_TEST_SSH_ENDPOINT` (tests only: a loopback `address:port`) points every host's ssh at
a local sshd, as EC2 instances of a local test endpoint have no reachable address.
"""

from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import json
import os
import re
import shlex
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from mngr import paths
from mngr.errors import (
    ConfigError,
    ConflictError,
    InterruptedByUser,
    MngrError,
    NotFoundError,
    VendorOutputError,
    VendorTimeoutError,
)
from mngr.plan import Context, Step
from mngr.records import utc_now
from mngr.runner import CANCELLED, Command
from mngr.toolkit import vendor_json
from mngr.toolkit.argv import Argv
from mngr.toolkit.http import is_loopback
from mngr.toolkit.vendor_json import Lenient

if TYPE_CHECKING:
    from mngr_backends.aws import AwsBackend

    from mngr.records import Host

TAG_PROVIDER = "mngr:provider"
TAG_MANAGED = "mngr:managed"  # on a key pair or group mngr made: `key-pair`, `security-group`
TAG_MADE_AT = "mngr:created-at"  # when it was made: gc never removes what a create just made
TAG_SSH_USER = "mngr:ssh-user"  # on an instance launched from an image alias
TEST_SSH_ENDPOINT = "MNGR_AWS_TEST_SSH_ENDPOINT"
SSH_PORT = 22


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def filters(**by_name: Iterable[str] | str) -> str:
    """EC2 filters as JSON (safe for any tag value, unlike the CLI's shorthand)."""
    return compact(
        [
            {"Name": name, "Values": [values] if isinstance(values, str) else list(values)}
            for name, values in by_name.items()
        ]
    )


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


# --- images -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageFamily:
    parameter: str  # the SSM parameter, `{arch}` in the family's word for the architecture
    ssh_user: str
    arch_words: dict[str, str]


_DEBIAN_ARCH = {"x86_64": "amd64", "arm64": "arm64"}
IMAGES = {
    "al2023": ImageFamily(
        "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-{arch}",
        "ec2-user",
        {"x86_64": "x86_64", "arm64": "arm64"},
    ),
    "ubuntu-24.04": ImageFamily(
        "/aws/service/canonical/ubuntu/server/24.04/stable/current/{arch}/hvm/ebs-gp3/ami-id",
        "ubuntu",
        _DEBIAN_ARCH,
    ),
    "debian-12": ImageFamily("/aws/service/debian/release/12/latest/{arch}", "admin", _DEBIAN_ARCH),
}
DEFAULT_IMAGE = "al2023"
# Graviton families have a `g` after their generation (t4g, c7gn, m6gd, im4gn); a1 is the first.
_GRAVITON = re.compile(r"a1|[a-z-]+\d+[a-z-]*g[a-z-]*")
_AMI_ID = re.compile(r"ami-[0-9a-f]{8,17}")


def architecture(instance_type: str) -> str:
    family = instance_type.split(".", 1)[0]
    return "arm64" if _GRAVITON.fullmatch(family) else "x86_64"


@dataclass(frozen=True)
class ImageChoice:
    """An image alias for one architecture: the SSM parameter naming its current AMI."""

    alias: str
    arch: str
    parameter: str
    ssh_user: str


def image_choice(alias: str, instance_type: str) -> ImageChoice | None:
    """The choice an alias names, or None when `alias` is an AMI id (or anything else)."""
    family = IMAGES.get(alias)
    if family is None:
        return None
    arch = architecture(instance_type)
    parameter = family.parameter.format(arch=family.arch_words[arch])
    return ImageChoice(alias, arch, parameter, family.ssh_user)


class SsmParameter(Lenient):
    Name: str
    Value: str = ""


class GetParameters(Lenient):
    Parameters: list[SsmParameter] = Field(default_factory=list)


def parse_image_parameter(stdout: str, choice: ImageChoice, region: str) -> str:
    doc = vendor_json.parse(GetParameters, stdout, "aws ssm get-parameters")
    value = next((p.Value for p in doc.Parameters if p.Name == choice.parameter), None)
    if value is None:
        raise NotFoundError(
            f"AWS publishes no {choice.alias} image for {choice.arch} in region {region!r} "
            f"(SSM parameter {choice.parameter})"
        )
    if not _AMI_ID.fullmatch(value):
        raise VendorOutputError(f"SSM parameter {choice.parameter} is not an AMI id: {value!r}")
    return value


# --- files of mngr's (the managed key, pinned host keys) ----------------------------------


def provider_dir(provider: str) -> Path:
    return paths.data_home() / "aws" / provider


def known_hosts_file(provider: str, host_id: str) -> Path:
    """Where the host key of one host is pinned at create (removed at destroy)."""
    return provider_dir(provider) / "known_hosts" / host_id


def _private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


@contextmanager
def provider_lock(provider: str) -> Iterator[None]:
    """One set-up of a provider at a time on this machine (threads and processes)."""
    with open(_private_dir(provider_dir(provider)) / "setup.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class ManagedKey:
    """The provider's ed25519 key in the user's data folder. Its EC2 name carries the public
    key's digest, so mngr on another machine (with its own key) never uses a pair it cannot
    log in with."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.private = provider_dir(provider) / "id_ed25519"
        self.public = self.private.with_suffix(".pub")

    @property
    def exists(self) -> bool:
        return self.private.exists() and self.public.exists()

    def create(self, backend: AwsBackend) -> None:
        """Generate the key (under the provider lock); the private half is never read here."""
        _private_dir(self.private.parent)
        partial = self.private.with_name("id_ed25519.partial")
        for stale in (partial, partial.with_suffix(".partial.pub")):
            stale.unlink(missing_ok=True)
        argv = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"mngr:{self.provider}"]
        backend.runner.run(Command([*argv, "-f", str(partial)], 30))
        os.chmod(partial, 0o600)
        os.replace(partial.with_suffix(".partial.pub"), self.public)
        os.replace(partial, self.private)  # last: a private key present means a whole pair

    def name(self) -> str:
        blob = self.public.read_text(encoding="utf-8").split()[1]
        return f"mngr-{self.provider}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"

    def is_ours(self, key_name: str | None) -> bool:
        return (
            bool(key_name)
            and re.fullmatch(rf"mngr-{re.escape(self.provider)}-[0-9a-f]{{12}}", key_name or "")
            is not None
        )


# --- the vendor's JSON --------------------------------------------------------------------


class _Tagged(Lenient):
    Tags: list[dict[str, str]] = Field(default_factory=list)

    def tag(self, key: str) -> str | None:
        return next((t.get("Value") for t in self.Tags if t.get("Key") == key), None)


class KeyPair(_Tagged):
    KeyName: str
    KeyPairId: str = ""


class DescribeKeyPairs(Lenient):
    KeyPairs: list[KeyPair] = Field(default_factory=list)


class IpPermission(Lenient):
    IpProtocol: str = ""
    FromPort: int | None = None
    ToPort: int | None = None
    IpRanges: list[dict[str, Any]] = Field(default_factory=list)
    Ipv6Ranges: list[dict[str, Any]] = Field(default_factory=list)


class SecurityGroup(_Tagged):
    GroupId: str
    GroupName: str = ""
    VpcId: str | None = None
    IpPermissions: list[IpPermission] = Field(default_factory=list)

    def ssh_cidrs(self) -> set[str]:
        return {
            r.get("CidrIp") or r.get("CidrIpv6") or ""
            for p in self.IpPermissions
            if p.IpProtocol == "tcp" and p.FromPort == SSH_PORT and p.ToPort == SSH_PORT
            for r in [*p.IpRanges, *p.Ipv6Ranges]
        } - {""}


class DescribeSecurityGroups(Lenient):
    SecurityGroups: list[SecurityGroup] = Field(default_factory=list)


class CreateSecurityGroup(Lenient):
    GroupId: str


class DescribeVpcs(Lenient):
    Vpcs: list[dict[str, Any]] = Field(default_factory=list)


class DescribeSubnets(Lenient):
    Subnets: list[dict[str, Any]] = Field(default_factory=list)


def ssh_permissions(cidrs: Iterable[str]) -> str:
    """`--ip-permissions` for tcp/22 from each network (v4 and v6 kept apart, as EC2 wants)."""
    nets = [ipaddress.ip_network(c, strict=False) for c in sorted(cidrs)]
    described = "ssh to hosts of mngr"
    v4 = [{"CidrIp": str(n), "Description": described} for n in nets if n.version == 4]
    v6 = [{"CidrIpv6": str(n), "Description": described} for n in nets if n.version == 6]
    rule = {"IpProtocol": "tcp", "FromPort": SSH_PORT, "ToPort": SSH_PORT}
    return compact([{**rule, "IpRanges": v4, "Ipv6Ranges": v6}])


@dataclass(frozen=True)
class ManagedResource:
    """A key pair or security group mngr made for a provider (what `gc` may remove)."""

    kind: str  # "key pair" or "security group"
    id: str
    name: str
    created_at: str | None = None  # from its mngr:created-at tag; None: gc keeps it


# --- the set-up, through the backend's runner ---------------------------------------------


class AwsSetup:
    """The calls that find or make a provider's shared pieces, and wait for ssh."""

    def __init__(self, backend: AwsBackend) -> None:
        self.backend = backend
        self.spec = backend.spec
        self.config = backend.config
        self.provider = backend.provider
        self.key = ManagedKey(self.provider)
        self._images: dict[ImageChoice, str] = {}
        # What this process already found or made (read under the lock): one look-up, not one
        # per host, when `create a b c` sets up a provider.
        self._key_name: str | None = None
        self._groups: dict[str | None, str] = {}  # subnet (None: the default VPC) -> group

    def _tags(self, managed: str, resource_type: str) -> str:
        tags = {
            TAG_PROVIDER: self.provider,
            TAG_MANAGED: managed,
            TAG_MADE_AT: utc_now(),
            "Name": f"mngr-{self.provider}",
        }
        return compact([{"ResourceType": resource_type, "Tags": tag_list(tags)}])

    # images

    def parameter_argv(self, choice: ImageChoice) -> Argv:
        return self.spec.argv("get-parameters", "--names", choice.parameter, service="ssm")

    def image_note(self, choice: ImageChoice, ami: str) -> Step:
        """What --dry-run shows of the resolution (made when the plan was)."""
        call = shlex.join(self.parameter_argv(choice))
        return Step(f"image {choice.alias} for {choice.arch} is {ami}, as `{call}` said")

    def resolve_image(self, choice: ImageChoice) -> str:
        """The current AMI of an alias (asked once per backend: `create a b c` asks once)."""
        if choice not in self._images:
            out = self.backend.call(self.parameter_argv(choice))
            self._images[choice] = parse_image_parameter(out, choice, self.config.region)
        return self._images[choice]

    # the key pair

    def key_pair_step(self) -> Step:
        return Step(
            f"use key pair mngr-{self.provider}-<digest> of {self.key.private}, made and "
            f"imported if missing: {shlex.join(self.import_key_argv('<name>'))}",
            action=lambda ctx: ctx.update(key_name=self.ensure_key_pair()),
        )

    def key_pairs_argv(self, **wanted: str) -> Argv:
        return self.spec.argv("describe-key-pairs", "--filters", filters(**wanted))

    def import_key_argv(self, name: str) -> Argv:
        return self.spec.argv(
            "import-key-pair",
            *Argv()
            .add("--key-name", name)
            .add("--public-key-material", f"fileb://{self.key.public}")
            .add("--tag-specifications", self._tags("key-pair", "key-pair")),
        )

    def ensure_key_pair(self) -> str:
        """The name of the provider's key pair, made (key file and EC2 pair) if missing."""
        with provider_lock(self.provider):
            if self._key_name is not None and self.key.exists:
                return self._key_name
            if not self.key.exists:
                self.key.create(self.backend)
            name = self.key.name()
            out = self.backend.call(self.key_pairs_argv(**{"key-name": name}))
            if not vendor_json.parse(DescribeKeyPairs, out, "aws ec2 describe-key-pairs").KeyPairs:
                try:
                    self.backend.call(self.import_key_argv(name))
                except ConflictError:
                    pass  # imported meantime by mngr elsewhere: the same public key (its name)
            self._key_name = name
        return name

    # the security group

    def security_group_step(self, subnet_id: str | None) -> Step:
        where = f"the VPC of {subnet_id}" if subnet_id else "the default VPC"
        return Step(
            f"use security group mngr-{self.provider} in {where}, made if missing, with ssh "
            f"(tcp/22) open to {', '.join(self.config.ssh_cidrs)}",
            action=lambda ctx: ctx.update(security_group_id=self.ensure_security_group(subnet_id)),
        )

    def groups_argv(self, **wanted: str) -> Argv:
        return self.spec.argv("describe-security-groups", "--filters", filters(**wanted))

    def create_group_argv(self, vpc_id: str) -> Argv:
        return self.spec.argv(
            "create-security-group",
            *Argv()
            .add("--group-name", f"mngr-{self.provider}")
            .add("--description", f"mngr: ssh to the hosts of provider {self.provider}")
            .add("--vpc-id", vpc_id)
            .add("--tag-specifications", self._tags("security-group", "security-group")),
        )

    def _vpc(self, subnet_id: str | None) -> str:
        if subnet_id:
            out = self.backend.call(self.spec.argv("describe-subnets", "--subnet-ids", subnet_id))
            subnets = vendor_json.parse(DescribeSubnets, out, "aws ec2 describe-subnets").Subnets
            if subnets and subnets[0].get("VpcId"):
                return str(subnets[0]["VpcId"])
            raise NotFoundError(f"no subnet {subnet_id!r} in region {self.config.region!r}")
        argv = self.spec.argv("describe-vpcs", "--filters", filters(isDefault="true"))
        vpcs = vendor_json.parse(DescribeVpcs, self.backend.call(argv), "aws ec2 describe-vpcs")
        if not vpcs.Vpcs:
            raise ConfigError(
                f"region {self.config.region!r} has no default VPC: set 'subnet_id' (or "
                f"'security_group_ids') in the settings of provider {self.provider!r}"
            )
        return str(vpcs.Vpcs[0]["VpcId"])

    def _group(self, vpc_id: str) -> SecurityGroup | None:
        out = self.backend.call(self.groups_argv(**{"group-name": f"mngr-{self.provider}"}))
        doc = vendor_json.parse(DescribeSecurityGroups, out, "aws ec2 describe-security-groups")
        return next((g for g in doc.SecurityGroups if g.VpcId == vpc_id), None)

    def ensure_security_group(self, subnet_id: str | None) -> str:
        """The id of the provider's group in the subnet's VPC, made if missing, with port 22
        open to exactly `ssh_cidrs`."""
        with provider_lock(self.provider):
            if subnet_id in self._groups:
                return self._groups[subnet_id]
            vpc_id = self._vpc(subnet_id)
            group = self._group(vpc_id)
            if group is None:
                try:
                    out = self.backend.call(self.create_group_argv(vpc_id))
                    made = vendor_json.parse(CreateSecurityGroup, out, "create-security-group")
                    group = SecurityGroup(GroupId=made.GroupId, VpcId=vpc_id)
                except ConflictError:  # made meantime by mngr elsewhere: use that one
                    group = self._group(vpc_id)
                    if group is None:
                        raise
            wanted = {str(ipaddress.ip_network(c, strict=False)) for c in self.config.ssh_cidrs}
            have = group.ssh_cidrs()
            for verb, cidrs in (("authorize", wanted - have), ("revoke", have - wanted)):
                if cidrs:
                    argv = self.spec.argv(
                        f"{verb}-security-group-ingress",
                        *Argv().add("--group-id", group.GroupId),
                        *Argv().add("--ip-permissions", ssh_permissions(cidrs)),
                    )
                    try:
                        self.backend.call(argv)
                    except ConflictError:
                        pass  # the rule was added meantime
            self._groups[subnet_id] = group.GroupId
        return group.GroupId

    # ready means reachable

    def ssh_ready_step(self, name: str, host_id: str, host: Callable[[Context], Host]) -> Step:
        pinned = known_hosts_file(self.provider, host_id)
        return Step(
            f"wait until {name} accepts ssh (at most {self.config.wait_timeout_s:g}s), its "
            f"first host key pinned in {pinned}",
            action=lambda ctx: self.await_ssh(host(ctx), pinned),
            undo_if_failed=True,
            undo=self.forget_host_key_step(host_id),
        )

    def forget_host_key_step(self, host_id: str) -> Step:
        pinned = known_hosts_file(self.provider, host_id)
        return Step(f"remove {pinned}", action=lambda ctx: pinned.unlink(missing_ok=True))

    def await_ssh(self, host: Host, pin_into: Path) -> None:
        """Wait until the host's ssh port accepts a login with the host key first seen (pinned
        into `pin_into`); a host key other than that one is refused at once."""
        _private_dir(pin_into.parent)
        argv = self.spec.ssh_argv(host, ["true"], tty=False, pin_into=str(pin_into))
        timeout = self.config.wait_timeout_s
        deadline = time.monotonic() + timeout
        delays = iter(self.backend.poll_delays_s)
        delay = 0.0
        last = ""
        while True:
            done = self.backend.runner.run(Command(argv, 60), check=False)
            if done.returncode == 0:
                return
            if "IDENTIFICATION HAS CHANGED" in done.stderr or "verification failed" in done.stderr:
                raise MngrError(
                    f"host {host.name!r} offered an ssh host key other than the one pinned "
                    f"in {pin_into}; refusing to use it"
                )
            last = " ".join(done.stderr.split())[-200:] or f"ssh exited {done.returncode}"
            delay = next(delays, delay)
            if time.monotonic() + delay > deadline:
                raise VendorTimeoutError(
                    f"wait until {host.name} accepts ssh: gave up after {timeout:g}s "
                    f"(wait_timeout_s); last: {last}"
                )
            if CANCELLED.wait(delay):
                raise InterruptedByUser("interrupted")

    # what gc removes

    def orphans(self) -> list[ManagedResource]:
        mine = {"tag:" + TAG_PROVIDER: self.provider}
        keys = self.backend.call(self.key_pairs_argv(**mine, **{"tag:" + TAG_MANAGED: "key-pair"}))
        groups = self.backend.call(
            self.groups_argv(**mine, **{"tag:" + TAG_MANAGED: "security-group"})
        )
        key_pairs = vendor_json.parse(DescribeKeyPairs, keys, "aws ec2 describe-key-pairs")
        found = vendor_json.parse(DescribeSecurityGroups, groups, "describe-security-groups")
        return [
            *(
                ManagedResource("key pair", k.KeyPairId, k.KeyName, k.tag(TAG_MADE_AT))
                for k in key_pairs.KeyPairs
            ),
            *(
                ManagedResource("security group", g.GroupId, g.GroupName, g.tag(TAG_MADE_AT))
                for g in found.SecurityGroups
            ),
        ]

    def delete_argv(self, resource: ManagedResource) -> Argv:
        if resource.kind == "key pair":
            return self.spec.argv("delete-key-pair", "--key-name", resource.name)
        return self.spec.argv("delete-security-group", "--group-id", resource.id)


def ssh_endpoint(address: str) -> tuple[str, int]:
    """Where ssh goes for a host at `address`: port 22 there, unless a test points it at a
    loopback sshd through MNGR_AWS_TEST_SSH_ENDPOINT."""
    override = os.environ.get(TEST_SSH_ENDPOINT)
    if not override:
        return address, SSH_PORT
    host, _, port = override.rpartition(":")
    if not is_loopback(host) or not port.isdigit():
        raise ConfigError(f"{TEST_SSH_ENDPOINT} must be a loopback ADDRESS:PORT (tests only)")
    return host, int(port)
