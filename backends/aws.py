"""AWS EC2 backend: a host is an EC2 instance, driven through `aws ec2 ... --output json`.

Everything mngr knows about a host lives in the instance's tags (no local state but the
host key pinned at create):

    mngr:host-id  mngr:host-name  mngr:provider  mngr:created-at  Name  mngr:tag:<key>
    mngr:ssh-user (when an image alias chose the image)
    mngr:idle-timeout (seconds; a host with one boots mngr's idle watcher from user data
    and is launched with instance-initiated shutdown behaviour `stop`)

A snapshot is an AMI made from the instance (`create-image`), tagged the same way; its id
is the AMI id. `AwsSpec` builds every argv and parses every JSON answer (pure, no I/O);
`AwsBackend` strings them into plans run through the injected runner.

A host's `address` (public): `instance_id`, `instance_type`, `region`, `availability_zone`,
`public_ip`, `private_ip`, `lifecycle` (`on-demand` or `spot`), `ssh` (`user@ip`), `ssh_user`
and `key_name`, each only when EC2 reports it. What a create needs besides (the image of an
alias, mngr's key pair and security group, the wait for ssh) is in `aws_setup`. Its `handle`
(private) is the instance id. A one-time spot instance states `unsupported["stop/start"]`: EC2
cannot stop it.
"""

from __future__ import annotations

import ipaddress
import random
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mngr_backends import aws_setup
from mngr_backends.aws_setup import compact as _compact
from mngr_backends.aws_setup import filters as _filters
from mngr_backends.aws_setup import tag_list as _tag_list
from pydantic import Field, field_validator

from mngr import idle, resources
from mngr.backend import (
    ArgvValue,
    Backend,
    Capability,
    CreateOptions,
    CreateRequest,
    Orphan,
    ProviderConfig,
)
from mngr.errors import (
    ConfigError,
    ConflictError,
    InterruptedByUser,
    MngrError,
    NotFoundError,
    UnauthorisedError,
    UnreachableError,
    UsageError,
    VendorCommandError,
    VendorOutputError,
)
from mngr.names import new_snapshot_id
from mngr.plan import Context, Plan, Poll, Ref, Step
from mngr.records import Host, HostState, Snapshot, utc_now
from mngr.runner import CANCELLED, Command, Completed, Runner
from mngr.toolkit import ssh, vendor_json
from mngr.toolkit.argv import Argv
from mngr.toolkit.rules import Rule, classify
from mngr.toolkit.vendor_json import Lenient

TAG_HOST_ID = "mngr:host-id"
TAG_HOST_NAME = "mngr:host-name"
TAG_PROVIDER = "mngr:provider"
TAG_CREATED_AT = "mngr:created-at"
TAG_SNAPSHOT_NAME = "mngr:snapshot-name"
# A fresh value per create-image call: its undo finds the image this call made, and no other.
TAG_CREATE_TOKEN = "mngr:create-token"
USER_TAG_PREFIX = "mngr:tag:"
TAG_IDLE_TIMEOUT = "mngr:idle-timeout"

# Instance states that hold a host name; `shutting-down` and `terminated` are on their way out.
LIVE_STATES = ("pending", "running", "stopping", "stopped")
STATES = {
    "pending": HostState.BUILDING,
    "running": HostState.RUNNING,
    "stopping": HostState.STOPPING,
    "stopped": HostState.STOPPED,
    "shutting-down": HostState.DESTROYED,
    "terminated": HostState.DESTROYED,
}
SPOT_CANNOT_STOP = "it is a one-time spot instance, which EC2 cannot stop; destroy it instead"
# The pager is turned off through the environment: v2 reads AWS_PAGER, while v1 (the CLI on
# the package index) has no pager and refuses v2's `--no-cli-pager` flag.
CLI_ENV = {"AWS_PAGER": ""}
REGION_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
IMDS_V2_ONLY = {"HttpTokens": "required", "HttpEndpoint": "enabled"}


class AwsConfig(ProviderConfig):
    needs_trust = frozenset(
        {"endpoint_url", "binary", "identity_file", "known_hosts", "accept_new_host_keys"}
    )

    region: str = Field(pattern=REGION_PATTERN)
    profile: ArgvValue | None = None
    endpoint_url: str | None = None  # any EC2-compatible endpoint
    instance_type: ArgvValue = "t3.micro"
    ami: ArgvValue | None = None  # an AMI id, or an image alias (default: al2023)
    key_name: ArgvValue | None = None  # default: the provider's key pair, made by mngr
    security_group_ids: list[ArgvValue] = Field(default_factory=list)  # default: mngr's group
    ssh_cidrs: list[str] = Field(default_factory=lambda: ["0.0.0.0/0"], min_length=1)
    subnet_id: ArgvValue | None = None
    iam_instance_profile: ArgvValue | None = None  # a name, or an ARN
    ssh_user: ArgvValue | None = None  # default: the image family's (ec2-user, ubuntu, admin)
    identity_file: ArgvValue | None = None
    known_hosts: str | None = None  # default: the key pinned at create, else ~/.ssh/known_hosts
    accept_new_host_keys: bool = False
    binary: str = "aws"
    page_size: int | None = Field(default=None, ge=5, le=1000)  # describe-instances page
    wait_timeout_s: float = Field(default=600.0, gt=0)  # for running / ssh / stopped / available
    wait_for_ssh: bool = True  # create returns once the host accepts ssh (false: once running)

    @field_validator("endpoint_url")
    @classmethod
    def _http_only(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("ssh_cidrs")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not a network such as 203.0.113.0/24") from None
        return value

    @field_validator("known_hosts")
    @classmethod
    def _known_hosts(cls, value: str | None) -> str | None:
        return ssh.ssh_file(value, "known_hosts")


class AwsCreateOptions(CreateOptions):
    instance_type: ArgvValue | None = Field(
        default=None, description="EC2 instance type (default: the provider's instance_type)."
    )
    ami: ArgvValue | None = Field(
        default=None,
        description="AMI id or image alias: al2023, ubuntu-24.04, debian-12 (default: --image, "
        "then the provider's ami, then al2023).",
    )
    spot: bool = Field(default=False, description="Launch a one-time spot instance.")
    key_name: ArgvValue | None = Field(default=None, description="EC2 key pair to install.")
    subnet: ArgvValue | None = Field(default=None, description="Subnet id to launch into.")


# --- the vendor's JSON ----------------------------------------------------------------------


class Ec2Tag(Lenient):
    Key: str
    Value: str = ""


class _Tagged(Lenient):
    Tags: list[Ec2Tag] = Field(default_factory=list)

    @property
    def tags(self) -> dict[str, str]:
        return {t.Key: t.Value for t in self.Tags}


class Ec2State(Lenient):
    Name: str = "unknown"


class Ec2Instance(_Tagged):
    InstanceId: str
    ImageId: str | None = None
    InstanceType: str | None = None
    KeyName: str | None = None
    State: Ec2State = Field(default_factory=Ec2State)
    StateReason: dict[str, Any] = Field(default_factory=dict)
    PublicIpAddress: str | None = None
    PrivateIpAddress: str | None = None
    LaunchTime: str | None = None
    InstanceLifecycle: str | None = None
    Placement: dict[str, Any] = Field(default_factory=dict)
    CpuOptions: dict[str, Any] = Field(default_factory=dict)


class Ec2Reservation(Lenient):
    Instances: list[Ec2Instance] = Field(default_factory=list)


class DescribeInstances(Lenient):
    Reservations: list[Ec2Reservation] = Field(default_factory=list)
    NextToken: str | None = None


class RunInstances(Lenient):
    Instances: list[Ec2Instance] = Field(default_factory=list)


class Ec2Image(_Tagged):
    ImageId: str
    Name: str | None = None
    State: str | None = None
    CreationDate: str | None = None
    RootDeviceName: str | None = None
    BlockDeviceMappings: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def ebs_snapshots(self) -> list[str]:
        return [d["Ebs"]["SnapshotId"] for d in self.BlockDeviceMappings if "Ebs" in d]


class DescribeImages(Lenient):
    Images: list[Ec2Image] = Field(default_factory=list)


class EbsSnapshot(_Tagged):
    SnapshotId: str
    StartTime: str | None = None
    VolumeSize: int | None = None  # GiB


class DescribeSnapshots(Lenient):
    Snapshots: list[EbsSnapshot] = Field(default_factory=list)


class CreateImage(Lenient):
    ImageId: str


class DescribeRegions(Lenient):
    Regions: list[dict[str, Any]] = Field(default_factory=list)


@dataclass(frozen=True)
class Launch:
    """What `run-instances` needs for one host."""

    host_id: str
    name: str
    created_at: str
    image: str
    instance_type: str
    tags: dict[str, str]
    key_name: str | None = None  # or a Ref filled at run time
    subnet_id: str | None = None
    spot: bool = False
    block_device_mappings: str | None = None  # JSON, or a Ref filled at run time
    security_group_ids: tuple[str, ...] = ()  # ids, or a Ref
    ssh_user: str | None = None  # the image family's, when an alias chose the image
    idle_timeout_s: int = 0


class AwsSpec:
    """Argv builders and JSON parsers for one provider instance. Pure: no I/O."""

    def __init__(self, config: AwsConfig, backend_name: str = "aws") -> None:
        self.config = config
        self.backend_name = backend_name

    @property
    def provider(self) -> str:
        return self.config.name

    def argv(self, verb: str, *args: str, service: str = "ec2") -> Argv:
        c = self.config
        return (
            Argv([c.binary, service, verb, *args])
            .add("--region", c.region)
            .add("--profile", c.profile)
            .add("--endpoint-url", c.endpoint_url)
            .add("--output", "json")
        )

    # --- instances --------------------------------------------------------------------

    def list_argv(self, starting_token: str | None = None) -> Argv:
        live = {"tag:" + TAG_PROVIDER: self.provider, "instance-state-name": LIVE_STATES}
        return self.argv(
            "describe-instances",
            *Argv()
            .add("--filters", _filters(**live))
            .add("--page-size", self.config.page_size)
            .add("--starting-token", starting_token),
        )

    def by_name_argv(self, name: str) -> Argv:
        """Every instance of this provider carrying `name`, in any state."""
        named = {"tag:" + TAG_PROVIDER: self.provider, "tag:" + TAG_HOST_NAME: name}
        return self.argv("describe-instances", "--filters", _filters(**named))

    def by_host_id_argv(self, host_id: str) -> Argv:
        by_id = {"tag:" + TAG_HOST_ID: host_id, "instance-state-name": LIVE_STATES}
        return self.argv("describe-instances", "--filters", _filters(**by_id))

    def instance_argv(self, instance_id: str) -> Argv:
        return self.argv("describe-instances", "--instance-ids", instance_id)

    def run_argv(self, launch: Launch) -> Argv:
        c = self.config
        tags = _tag_list(
            {
                TAG_HOST_ID: launch.host_id,
                TAG_HOST_NAME: launch.name,
                TAG_PROVIDER: self.provider,
                TAG_CREATED_AT: launch.created_at,
                "Name": launch.name,
                **({aws_setup.TAG_SSH_USER: launch.ssh_user} if launch.ssh_user else {}),
                **{USER_TAG_PREFIX + k: v for k, v in launch.tags.items()},
                **({TAG_IDLE_TIMEOUT: str(launch.idle_timeout_s)} if launch.idle_timeout_s else {}),
            }
        )
        profile = None
        if c.iam_instance_profile:
            key = "Arn" if c.iam_instance_profile.startswith("arn:") else "Name"
            profile = _compact({key: c.iam_instance_profile})
        kinds = ("instance", "volume", "network-interface")
        tagged = [{"ResourceType": kind, "Tags": tags} for kind in kinds]
        flags = (
            Argv()
            .add("--image-id", launch.image)
            .add("--instance-type", launch.instance_type)
            .add("--count", 1)
            # The host id is the idempotency token: a retried call never makes a second.
            .add("--client-token", launch.host_id)
            .add("--tag-specifications", _compact(tagged))
            .add("--key-name", launch.key_name)
            .add("--subnet-id", launch.subnet_id)
            .add("--iam-instance-profile", profile)
            .add("--block-device-mappings", launch.block_device_mappings)
            .add("--instance-market-options", launch.spot and _compact({"MarketType": "spot"}))
            .add("--metadata-options", _compact(IMDS_V2_ONLY))
            # Idle stop: the watcher powers the machine off, and EC2 then stops it.
            .add(
                "--user-data",
                idle.boot_script(launch.idle_timeout_s) if launch.idle_timeout_s else None,
            )
            .add(
                "--instance-initiated-shutdown-behavior", "stop" if launch.idle_timeout_s else None
            )
        )
        if launch.security_group_ids:  # one flag, then every id
            flags.words(["--security-group-ids", *launch.security_group_ids])
        return self.argv("run-instances", *flags)

    def create_tags_argv(self, resource_ids: list[str], tags: dict[str, str]) -> Argv:
        return self.argv(
            "create-tags", "--resources", *resource_ids, "--tags", _compact(_tag_list(tags))
        )

    def delete_tags_argv(self, resource_id: str, keys: list[str]) -> Argv:
        user = [{"Key": USER_TAG_PREFIX + k} for k in keys]
        return self.argv("delete-tags", "--resources", resource_id, "--tags", _compact(user))

    def terminate_argv(self, instance_id: str) -> Argv:
        return self.argv("terminate-instances", "--instance-ids", instance_id)

    def stop_argv(self, instance_id: str) -> Argv:
        return self.argv("stop-instances", "--instance-ids", instance_id)

    def start_argv(self, instance_id: str) -> Argv:
        return self.argv("start-instances", "--instance-ids", instance_id)

    def check_argv(self) -> Argv:
        return self.argv("describe-regions", "--region-names", self.config.region)

    # --- images (snapshots) -----------------------------------------------------------

    def image_name(self, snapshot_name: str) -> str:
        # AWS refuses a second AMI of one name, so a retried create-image never makes two.
        return f"mngr/{self.provider}/{snapshot_name}"

    def describe_image_argv(self, image_id: str) -> Argv:
        return self.argv("describe-images", "--image-ids", image_id)

    def image_by_token_argv(self, token: str) -> Argv:
        by_token = _filters(**{"tag:" + TAG_CREATE_TOKEN: token})
        return self.argv("describe-images", "--owners", "self", "--filters", by_token)

    def list_images_argv(self, host_id: str | None = None) -> Argv:
        wanted = {"tag:" + TAG_PROVIDER: self.provider}
        if host_id:
            wanted["tag:" + TAG_HOST_ID] = host_id
        return self.argv("describe-images", "--owners", "self", "--filters", _filters(**wanted))

    def create_image_argv(
        self, host: Host, snapshot_name: str, created_at: str, token: str
    ) -> Argv:
        tags = {
            TAG_PROVIDER: self.provider,
            TAG_HOST_ID: host.id,
            TAG_HOST_NAME: host.name,
            TAG_SNAPSHOT_NAME: snapshot_name,
            TAG_CREATED_AT: created_at,
            TAG_CREATE_TOKEN: token,
            "Name": snapshot_name,
            # A host made from this image logs in as this one did (ubuntu, admin, ...).
            **(
                {aws_setup.TAG_SSH_USER: host.address["ssh_user"]}
                if host.address.get("ssh_user")
                else {}
            ),
        }
        return self.argv(
            "create-image",
            *Argv()
            .add("--instance-id", _instance_id(host))
            .add("--name", self.image_name(snapshot_name))
            .add("--description", f"mngr snapshot {snapshot_name} of host {host.name}")
            .add(
                "--tag-specifications",
                _compact([{"ResourceType": "image", "Tags": _tag_list(tags)}]),
            ),
        )

    def deregister_argv(self, image_id: str) -> Argv:
        return self.argv("deregister-image", "--image-id", image_id)

    def own_snapshots_argv(self) -> Argv:
        return self.argv("describe-snapshots", "--owner-ids", "self")

    def delete_snapshot_argv(self, ebs_snapshot_id: str) -> Argv:
        return self.argv("delete-snapshot", "--snapshot-id", ebs_snapshot_id)

    # --- ssh --------------------------------------------------------------------------

    def ssh_endpoint(self, host: Host, *, pin_into: str | None = None) -> ssh.SshEndpoint:
        """ssh to the host with the key it was launched with; its host key checked against
        mngr's file for it (or `known_hosts` when set). `pin_into`: accept the host's first
        key into that file (the create's wait for ssh)."""
        c = self.config
        address = host.address.get("public_ip") or host.address.get("private_ip")
        if not address:
            raise MngrError(f"host {host.name!r} has no IP address to reach it over ssh")
        try:  # vendor output is data: an "address" such as -oProxyCommand=... never reaches ssh
            address = str(ipaddress.ip_address(address))
        except ValueError:
            raise VendorOutputError(f"host {host.name!r} has no valid IP address") from None
        address, port = aws_setup.ssh_endpoint(address)
        key = aws_setup.ManagedKey(self.provider)
        identity = str(key.private) if key.is_ours(host.address.get("key_name")) else None
        user = c.ssh_user or host.address.get("ssh_user") or "ec2-user"
        target = ssh.SshTarget(address, user, port, identity or c.identity_file)
        known_hosts, accept_new = c.known_hosts, c.accept_new_host_keys
        pinned = aws_setup.known_hosts_file(self.provider, host.id)
        if pin_into is not None:
            known_hosts, accept_new = pin_into, True
        elif known_hosts is None and pinned.exists():
            known_hosts = str(pinned)
        try:
            ssh.ssh_file(known_hosts, "mngr's known hosts file")
        except ValueError as exc:
            raise ConfigError(f"{exc} ({known_hosts}); set 'known_hosts'") from None
        settings = ssh.SshSettings(
            known_hosts=known_hosts, accept_new=accept_new, connect_timeout_s=30
        )
        return ssh.SshEndpoint(target, settings)

    def ssh_argv(
        self,
        host: Host,
        remote: list[str] | None,
        *,
        tty: bool,
        detach: bool = False,
        pin_into: str | None = None,
    ) -> list[str]:
        endpoint = self.ssh_endpoint(host, pin_into=pin_into)
        command = ssh.remote_command(remote, detach=detach) if remote else None
        return ssh.ssh_argv(endpoint.target, endpoint.settings, command, tty=tty)

    # --- parsers ----------------------------------------------------------------------

    def parse_instances(self, stdout: str) -> tuple[list[Ec2Instance], str | None]:
        doc = vendor_json.parse(DescribeInstances, stdout, "aws ec2 describe-instances")
        return [i for r in doc.Reservations for i in r.Instances], doc.NextToken

    def parse_launched(self, stdout: str) -> Ec2Instance:
        doc = vendor_json.parse(RunInstances, stdout, "aws ec2 run-instances")
        if len(doc.Instances) != 1:
            raise VendorOutputError(
                f"aws ec2 run-instances returned {len(doc.Instances)} instances, expected 1"
            )
        return doc.Instances[0]

    def parse_images(self, stdout: str) -> list[Ec2Image]:
        images = vendor_json.parse(DescribeImages, stdout, "aws ec2 describe-images").Images
        return [i for i in images if i.State != "deregistered"]

    def parse_snapshots(self, stdout: str) -> list[EbsSnapshot]:
        return vendor_json.parse(DescribeSnapshots, stdout, "aws ec2 describe-snapshots").Snapshots

    def parse_created_image(self, stdout: str) -> str:
        return vendor_json.parse(CreateImage, stdout, "aws ec2 create-image").ImageId

    def parse_region(self, stdout: str) -> dict[str, Any]:
        regions = vendor_json.parse(DescribeRegions, stdout, "aws ec2 describe-regions").Regions
        if not regions:
            raise NotFoundError(f"region {self.config.region!r} is not offered by this endpoint")
        return {"region": regions[0].get("RegionName"), "endpoint": regions[0].get("Endpoint")}

    def root_volume_mapping(self, stdout: str, image_id: str, disk_gb: int | None) -> str:
        """Block-device mapping of the image's root volume: encrypted, deleted with the host,
        resized to `disk_gb` when given."""
        images = self.parse_images(stdout)
        if not images:
            raise NotFoundError(f"no image {image_id!r} in region {self.config.region!r}")
        device = images[0].RootDeviceName or "/dev/xvda"
        root = next((d for d in images[0].BlockDeviceMappings if d.get("DeviceName") == device), {})
        # The image's own snapshot and size, named: some endpoints want them in an override.
        kept = {k: v for k, v in root.get("Ebs", {}).items() if k in ("SnapshotId", "VolumeSize")}
        ebs = {**kept, "DeleteOnTermination": True, "Encrypted": True}
        if disk_gb:
            ebs["VolumeSize"] = disk_gb
        return _compact([{"DeviceName": device, "Ebs": ebs}])

    def image_ssh_user(self, stdout: str) -> str | None:
        """The ssh user an image of ours records (a snapshot of a host that had one)."""
        images = self.parse_images(stdout)
        return images[0].tags.get(aws_setup.TAG_SSH_USER) if images else None

    def host_of(self, instance: Ec2Instance) -> Host | None:
        """The host an instance is, or None when it is not one of this provider's."""
        tags = instance.tags
        if TAG_HOST_ID not in tags or tags.get(TAG_PROVIDER) != self.provider:
            return None
        lifecycle = instance.InstanceLifecycle or "on-demand"
        ip = instance.PublicIpAddress or instance.PrivateIpAddress
        user = self.config.ssh_user or tags.get(aws_setup.TAG_SSH_USER) or "ec2-user"
        address = {
            "instance_id": instance.InstanceId,
            "instance_type": instance.InstanceType,
            "region": self.config.region,
            "availability_zone": instance.Placement.get("AvailabilityZone"),
            "public_ip": instance.PublicIpAddress,
            "private_ip": instance.PrivateIpAddress,
            "lifecycle": lifecycle,
            "ssh": f"{user}@{ip}" if ip else None,
            "ssh_user": user,
            "key_name": instance.KeyName,
        }
        cores, threads = (instance.CpuOptions.get(k) for k in ("CoreCount", "ThreadsPerCore"))
        idle_timeout = tags.get(TAG_IDLE_TIMEOUT, "")
        return Host(
            id=tags[TAG_HOST_ID],
            name=tags.get(TAG_HOST_NAME) or tags.get("Name") or instance.InstanceId,
            provider=self.provider,
            backend=self.backend_name,
            state=STATES.get(instance.State.Name, HostState.UNKNOWN),
            image=instance.ImageId,
            created_at=tags.get(TAG_CREATED_AT) or instance.LaunchTime,
            tags={
                k[len(USER_TAG_PREFIX) :]: v
                for k, v in tags.items()
                if k.startswith(USER_TAG_PREFIX)
            },
            resources={"cpus": cores * threads if cores and threads else None},
            idle_timeout_s=int(idle_timeout) if idle_timeout.isdigit() else None,
            address={k: v for k, v in address.items() if v is not None},
            unsupported={str(Capability.STOP_START): SPOT_CANNOT_STOP}
            if lifecycle == "spot"
            else {},
            handle=instance.InstanceId,
        )

    def snapshot_of(self, image: Ec2Image) -> Snapshot | None:
        tags = image.tags
        if tags.get(TAG_PROVIDER) != self.provider:
            return None
        return Snapshot(
            id=image.ImageId,
            name=tags.get(TAG_SNAPSHOT_NAME) or image.Name or image.ImageId,
            host=tags.get(TAG_HOST_NAME, ""),
            provider=self.provider,
            created_at=tags.get(TAG_CREATED_AT) or image.CreationDate,
            handle=image.ImageId,
        )


def _instance_id(host: Host) -> str:
    if not host.handle:
        raise MngrError(f"host {host.name!r} has no EC2 instance id")
    return host.handle


# --- errors -------------------------------------------------------------------------------


class ThrottledError(UnreachableError):
    """AWS refused the call for its request rate (retried with back-off)."""

    kind = "throttled"


_ENDPOINT = "check 'region' and 'endpoint_url'"
_REFUSED = "the credentials were refused"
_MAY_NOT = "the credentials may not do this"
RULES = [
    Rule(r"Unable to locate credentials", UnauthorisedError, "set 'profile' or AWS_PROFILE"),
    Rule(r"\(ExpiredToken", UnauthorisedError, "the session has expired; renew it"),
    Rule(r"\(RequestExpired\)", UnauthorisedError, "check the clock or renew the session"),
    Rule(r"\(UnauthorizedOperation\)", UnauthorisedError, _MAY_NOT),
    Rule(
        r"\((AuthFailure|InvalidClientTokenId|SignatureDoesNotMatch)\)", UnauthorisedError, _REFUSED
    ),
    Rule(r"\(AccessDenied", UnauthorisedError, _MAY_NOT),
    Rule(r"\((RequestLimitExceeded\)|Throttling)", ThrottledError),
    Rule(
        r"Could not connect to the endpoint URL|Connect timeout on endpoint URL",
        UnreachableError,
        _ENDPOINT,
    ),
    Rule(r"Read timeout on endpoint URL", UnreachableError),
    Rule(r"Provided region_name", UnreachableError, "check 'region'"),
    Rule(
        r"could not be found",
        ConfigError,
        "add it with `aws configure --profile NAME`, or change this provider's 'profile'",
    ),
    Rule(r"\(InvalidAMIID\.Malformed\)", UsageError),
    Rule(r"\.NotFound\)|\(InvalidAMIID\.Unavailable\)", NotFoundError),
    Rule(r"\(IncorrectInstanceState\)", ConflictError),
    Rule(r"\(InvalidAMIName\.Duplicate\)", ConflictError, "a snapshot of that name exists"),
    Rule(r"\.Duplicate\)", ConflictError),
    Rule(r"\(DependencyViolation\)", ConflictError, "still in use; try again once it is not"),
]


# --- the backend --------------------------------------------------------------------------


class AwsBackend(Backend):
    name = "aws"
    config_model = AwsConfig
    create_options_model = AwsCreateOptions
    takes = frozenset({resources.DISK})  # CPUs, memory and GPUs come with --instance-type
    unsupported = {
        Capability.RESTORE: (
            "EC2 replaces a root volume by create-replace-root-volume-task, which mngr does not "
            "drive yet (its test endpoint lacks it); create a host with --from-snapshot instead"
        ),
    }

    config: AwsConfig
    # Back-off before each retry of a throttled call (the CLI has already retried itself).
    retry_delays_s: tuple[float, ...] = (1.0, 2.0, 4.0)
    # Pauses between polls while waiting for a state; the last one repeats.
    poll_delays_s: tuple[float, ...] = (1.0, 2.0, 3.0, 5.0, 10.0)

    def __init__(self, config: ProviderConfig, runner: Runner) -> None:
        super().__init__(config, runner)
        self.spec = AwsSpec(self.config, self.name)
        self.setup = aws_setup.AwsSetup(self)

    @classmethod
    def status_note(cls, config: ProviderConfig) -> str | None:
        if isinstance(config, AwsConfig) and not config.security_group_ids:
            return f"with ssh open to {', '.join(config.ssh_cidrs)} (key-only login)"
        return None

    def command(self, argv: list[str]) -> Command:
        return Command(argv, self.config.timeout_s, env=dict(CLI_ENV))

    def call(self, argv: list[str]) -> str:
        return self.run(self.command(argv)).stdout

    def run(self, command: Command, *, cancellable: bool = True) -> Completed:
        delays = iter(self.retry_delays_s)
        while True:
            try:
                return super().run(command, cancellable=cancellable)
            except ThrottledError:
                delay = next(delays, None)
                if delay is None:
                    raise
                delay = random.uniform(delay / 2, delay)
                if not cancellable:
                    time.sleep(delay)
                elif CANCELLED.wait(delay):
                    raise InterruptedByUser("interrupted") from None

    def classify(self, error: VendorCommandError) -> MngrError:
        return classify(error, RULES)

    # --- hosts ------------------------------------------------------------------------

    def list_hosts(self) -> list[Host]:
        return [h for h in map(self.spec.host_of, self._live_instances()) if h is not None]

    def _live_instances(self) -> list[Ec2Instance]:
        """Every live instance tagged with this provider, all pages."""
        instances: list[Ec2Instance] = []
        token: str | None = None
        seen: set[str] = set()
        while True:
            page, token = self.spec.parse_instances(self.call(self.spec.list_argv(token)))
            instances += page
            if not token:
                return instances
            if token in seen:  # an endpoint paging in a circle would be listed for ever
                raise VendorOutputError(
                    "aws ec2 describe-instances returned a NextToken it had already given"
                )
            seen.add(token)

    def create_plan(self, request: CreateRequest) -> Plan:
        options = request.options
        if not isinstance(options, AwsCreateOptions):
            options = AwsCreateOptions()
        if request.idle_timeout_s and options.spot:
            raise UsageError(f"--idle-timeout: {SPOT_CANNOT_STOP}")
        instance_type = options.instance_type or self.config.instance_type
        image, ssh_user, steps = self._image_for(request, options, instance_type)
        name = request.name
        disk_gb = request.resources.disk_gib
        if disk_gb and disk_gb > 16384:
            raise UsageError("--disk: an EC2 root volume is at most 16 TiB")
        steps.append(
            Step(
                f"find the root device of {image}",
                command=self.command(self.spec.describe_image_argv(image)),
                parse=lambda out, ctx: ctx.update(
                    block_device_mappings=self.spec.root_volume_mapping(out, image, disk_gb),
                    image_ssh_user=self.spec.image_ssh_user(out),
                ),
            )
        )
        steps.append(
            Step(
                f"check that provider {self.provider!r} has no host named {name!r}",
                command=self.command(self.spec.by_name_argv(name)),
                parse=lambda out, ctx: self._refuse_taken(out, name),
            )
        )
        key_name = options.key_name or self.config.key_name
        if key_name is None:
            steps.append(self.setup.key_pair_step())
            key_name = Ref("key_name")
        subnet_id = options.subnet or self.config.subnet_id
        groups: tuple[str, ...] = tuple(self.config.security_group_ids)
        if not groups:
            steps.append(self.setup.security_group_step(subnet_id))
            groups = (Ref("security_group_id"),)
        launch = Launch(
            host_id=request.host_id,
            name=name,
            created_at=request.created_at,
            image=image,
            instance_type=instance_type,
            tags=request.tags,
            key_name=key_name,
            subnet_id=subnet_id,
            spot=options.spot,
            block_device_mappings=Ref("block_device_mappings"),
            security_group_ids=groups,
            ssh_user=ssh_user,
            idle_timeout_s=request.idle_timeout_s or 0,
        )
        steps += [
            Step(
                f"launch the instance of {name}",
                command=self.command(self.spec.run_argv(launch)),
                parse=lambda out, ctx: ctx.update(
                    instance_id=self.spec.parse_launched(out).InstanceId
                ),
                # Also after a failed or timed-out call: the instance may exist regardless.
                undo_if_failed=True,
                undo=Step(
                    f"terminate the instance of {name}",
                    expand=lambda ctx: self._terminate_launched(ctx, request.host_id),
                ),
            ),
            *([] if ssh_user or request.from_snapshot is None else [self._ssh_user_step(name)]),
            Step(
                f"wait until {name} is running and the only host of its name",
                command=self.command(self.spec.by_name_argv(name)),
                poll=self._poll(lambda out, ctx: self._launched(out, ctx, request)),
            ),
        ]
        if self.config.wait_for_ssh:
            steps.append(
                self.setup.ssh_ready_step(
                    name, request.host_id, lambda ctx: self._host(ctx["instance"])
                )
            )
        return Plan(steps, finish=lambda ctx: self._host(ctx["instance"]))

    def _ssh_user_step(self, name: str) -> Step:
        """A host made from a snapshot logs in as the snapshot's host did: its image's ssh
        user becomes the new instance's tag (run-instances was planned before the image was
        read)."""

        def tag(ctx: Context) -> list[Step]:
            user = ctx.get("image_ssh_user")
            if not user:
                return []
            argv = self.spec.create_tags_argv([ctx["instance_id"]], {aws_setup.TAG_SSH_USER: user})
            return [Step(f"tag {name} with ssh user {user}", command=self.command(argv))]

        return Step(f"tag {name} with its snapshot's ssh user", expand=tag)

    def destroy_plan(self, host: Host, *, force: bool = False) -> Plan:
        steps = [
            self._terminate_step(_instance_id(host), f"terminate {host.name}"),
            self.setup.forget_host_key_step(host.id),
        ]
        return Plan(steps)

    def stop_plan(self, host: Host, *, snapshot: bool = False) -> Plan:
        instance_id = _instance_id(host)
        steps = [
            Step(f"stop {host.name}", command=self.command(self.spec.stop_argv(instance_id))),
            self._await_state_step(host.name, instance_id, "stopped"),
        ]
        if snapshot:
            # Imaged after stopping: consistent without the reboot create-image would do.
            stamp = utc_now().replace("-", "").replace(":", "").lower()
            steps += self.snapshot_create_plan(host, f"{host.name}-stop-{stamp}").steps
        return Plan(steps)

    def start_plan(self, host: Host) -> Plan:
        instance_id = _instance_id(host)
        return Plan(
            [
                Step(f"start {host.name}", command=self.command(self.spec.start_argv(instance_id))),
                self._await_state_step(host.name, instance_id, "running"),
            ]
        )

    def tag_plan(self, host: Host, tags: dict[str, str], remove: list[str]) -> Plan:
        instance_id = _instance_id(host)
        steps = []
        if tags:
            user = {USER_TAG_PREFIX + k: v for k, v in tags.items()}
            argv = self.spec.create_tags_argv([instance_id], user)
            steps.append(Step(f"tag {host.name}", command=self.command(argv)))
        if remove:
            argv = self.spec.delete_tags_argv(instance_id, remove)
            steps.append(Step(f"remove tags of {host.name}", command=self.command(argv)))
        return Plan(steps)

    # --- snapshots --------------------------------------------------------------------

    def snapshot_create_plan(self, host: Host, name: str) -> Plan:
        created_at, token = utc_now(), new_snapshot_id()
        image_name = self.spec.image_name(name)

        def undo(ctx: Context) -> list[Step]:
            if "image_id" in ctx:
                return self._image_deletion_steps(ctx["image_id"])
            # create-image failed or timed out: find what this call made by its token, never
            # by its name (an image of that name may be an older snapshot, or another's).
            return self._for_each_found(
                f"the image this call made (tag {TAG_CREATE_TOKEN}={token})",
                self.spec.image_by_token_argv(token),
                lambda out: [image.ImageId for image in self.spec.parse_images(out)],
                self._image_deletion_steps,
            )

        return Plan(
            [
                Step(
                    f"create image {image_name} of {host.name}",
                    command=self.command(
                        self.spec.create_image_argv(host, name, created_at, token)
                    ),
                    parse=lambda out, ctx: ctx.update(image_id=self.spec.parse_created_image(out)),
                    undo_if_failed=True,
                    undo=Step(f"delete image {image_name}", expand=undo),
                ),
                Step(
                    f"wait until image {image_name} is available",
                    command=self.command(self.spec.describe_image_argv(Ref("image_id"))),
                    poll=self._poll(self._image_available),
                ),
                self._tag_ebs_snapshots_step(host, image_name),
            ],
            finish=lambda ctx: Snapshot(
                id=ctx["image_id"],
                name=name,
                host=host.name,
                provider=self.provider,
                created_at=created_at,
                handle=ctx["image_id"],
            ),
        )

    def list_snapshots(self, host: Host | None = None) -> list[Snapshot]:
        out = self.call(self.spec.list_images_argv(host.id if host else None))
        snaps = [s for s in map(self.spec.snapshot_of, self.spec.parse_images(out)) if s]
        return sorted(snaps, key=lambda s: (s.created_at or "", s.id))

    def snapshot_delete_plan(self, snapshot: Snapshot) -> Plan:
        return Plan(self._image_deletion_steps(snapshot.handle or snapshot.id))

    def _tag_ebs_snapshots_step(self, host: Host, image_name: str) -> Step:
        """Mark the EBS snapshots behind a new AMI as mngr's: gc tells them by this tag."""
        tags = {TAG_PROVIDER: self.provider, TAG_HOST_ID: host.id}

        def tag(ctx: Context) -> list[Step]:
            found = ctx.get("ebs_snapshots") or []
            argv = self.spec.create_tags_argv(found, tags)
            return [Step(f"tag {', '.join(found)}", command=self.command(argv))] if found else []

        return Step(f"tag the EBS snapshots of {image_name}", expand=tag)

    def _image_deletion_steps(self, image_id: str) -> list[Step]:
        """Deregister an AMI and delete the EBS snapshots behind it (which outlive it)."""
        key = f"ebs_snapshots:{image_id}"

        def record(out: str, ctx: Context) -> None:
            ctx[key] = [snap for i in self.spec.parse_images(out) for snap in i.ebs_snapshots]

        def delete_each(ctx: Context) -> list[Step]:
            return [
                Step(
                    f"delete EBS snapshot {ebs_id}",
                    command=self.command(self.spec.delete_snapshot_argv(ebs_id)),
                    missing_ok=True,
                )
                for ebs_id in ctx.get(key, [])
            ]

        each = shlex.join(self.spec.delete_snapshot_argv("<id>"))
        return [
            Step(
                f"find the EBS snapshots of {image_id}",
                command=self.command(self.spec.describe_image_argv(image_id)),
                missing_ok=True,
                parse=record,
            ),
            Step(
                f"deregister {image_id}",
                command=self.command(self.spec.deregister_argv(image_id)),
                missing_ok=True,
            ),
            Step(f"for each EBS snapshot of {image_id}: {each}", expand=delete_each),
        ]

    # --- garbage ----------------------------------------------------------------------

    @property
    def create_deadline_s(self) -> float:
        return 3 * self.config.timeout_s + self.config.wait_timeout_s  # look, launch, wait

    def find_orphans(self) -> list[Orphan]:
        """Three calls whatever the number of hosts (describe-instances pages as list does):
        this provider's instances, its AMIs, and the account's own EBS snapshots."""
        instances = self._live_instances()
        owners = {i.tags.get(TAG_HOST_ID) for i in instances}
        images = self.spec.parse_images(self.call(self.spec.list_images_argv()))
        ebs = self.spec.parse_snapshots(self.call(self.spec.own_snapshots_argv()))
        existing = {snap.SnapshotId for snap in ebs}
        used = {snap_id for image in images for snap_id in image.ebs_snapshots}
        orphans = []

        def add(id: str, kind: str, why: str, at: str | None, **more: Any) -> None:
            orphans.append(Orphan(id, kind, self.provider, why, created_at=at, **more))

        for instance in instances:
            tags = instance.tags
            if not (tags.get(TAG_HOST_ID) and tags.get(TAG_HOST_NAME)):
                why = "an instance without mngr's complete tags (not made by a create)"
            elif instance.State.Name == "pending":
                why = "an instance stuck pending since its create (the create was stopped)"
            else:
                continue
            add(instance.InstanceId, "instance", why, instance.LaunchTime, name=tags.get("Name"))
        for image in images:
            name = image.tags.get(TAG_SNAPSHOT_NAME) or image.Name
            gone = [snap for snap in image.ebs_snapshots if snap not in existing]
            if image.State == "available" and gone:
                why = f"an AMI whose EBS snapshots are gone ({', '.join(gone)})"
                add(image.ImageId, "ami", why, image.CreationDate, name=name)
            elif image.tags.get(TAG_HOST_ID) not in owners:
                host = image.tags.get(TAG_HOST_NAME)
                why = f"a snapshot of host {host!r}, which no longer exists"
                add(image.ImageId, "ami", why, image.CreationDate, name=name, snapshot=True)
        for snap in ebs:
            if snap.tags.get(TAG_PROVIDER) == self.provider and snap.SnapshotId not in used:
                why = "an EBS snapshot of a deregistered AMI (a delete was stopped)"
                size = snap.VolumeSize * 2**30 if snap.VolumeSize else None
                add(snap.SnapshotId, "ebs-snapshot", why, snap.StartTime, size_bytes=size)
        if not owners - {None}:  # no host left: the provider's shared key pair and group too
            for shared in self.setup.orphans():
                why = f"mngr's {shared.kind} for this provider, which has no host left"
                kind = shared.kind.replace(" ", "-")
                add(shared.id or shared.name, kind, why, shared.created_at, name=shared.name)
        return orphans

    def orphan_delete_plan(self, orphan: Orphan) -> Plan:
        if orphan.kind in ("key-pair", "security-group"):
            shared = aws_setup.ManagedResource(
                orphan.kind.replace("-", " "), orphan.id, orphan.name or orphan.id
            )
            return self.remove_managed_plan([shared])
        if orphan.kind == "instance":
            return Plan([self._terminate_step(orphan.id)])
        if orphan.kind == "ami":
            return Plan(self._image_deletion_steps(orphan.id))
        delete = self.command(self.spec.delete_snapshot_argv(orphan.id))
        return Plan([Step(f"delete EBS snapshot {orphan.id}", command=delete, missing_ok=True)])

    # --- exec -------------------------------------------------------------------------

    def exec_command(
        self, host: Host, argv: list[str], *, tty: bool = False, detach: bool = False
    ) -> Command:
        return Command(self.spec.ssh_argv(host, argv, tty=tty, detach=detach))

    def shell_command(self, host: Host, *, tty: bool = True) -> Command:
        return Command(self.spec.ssh_argv(host, None, tty=tty))

    def ssh_endpoint(self, host: Host) -> ssh.SshEndpoint:
        return self.spec.ssh_endpoint(host)

    def check(self) -> dict[str, Any]:
        return self.spec.parse_region(self.call(self.spec.check_argv()))

    # --- what gc removes ----------------------------------------------------------------

    def managed_orphans(self) -> list[aws_setup.ManagedResource]:
        """The key pairs and security groups mngr made for this provider, once no host of it
        is left (none while one is): `gc` removes them with `remove_managed_plan`."""
        if self.list_hosts():
            return []
        return self.setup.orphans()

    def remove_managed_plan(self, resources: list[aws_setup.ManagedResource]) -> Plan:
        return Plan(
            [
                Step(
                    f"delete {r.kind} {r.name} ({r.id})",
                    command=self.command(self.setup.delete_argv(r)),
                    missing_ok=True,
                )
                for r in resources
            ]
        )

    # --- helpers ----------------------------------------------------------------------

    def _host(self, instance: Ec2Instance) -> Host:
        host = self.spec.host_of(instance)
        if host is None:
            raise VendorOutputError(f"instance {instance.InstanceId} lost its mngr tags")
        return host

    def _image_for(
        self, request: CreateRequest, options: AwsCreateOptions, instance_type: str
    ) -> tuple[str, str | None, list[Step]]:
        """The AMI to boot, the ssh user of its family when an alias named it, and a note of
        how the alias was resolved (for --dry-run)."""
        named = options.ami or request.image
        if request.from_snapshot is not None:
            if named:
                raise UsageError("--from-snapshot already chooses the image; drop --ami/--image")
            return request.from_snapshot.handle or request.from_snapshot.id, None, []
        if options.ami and request.image and options.ami != request.image:
            raise UsageError("--ami and --image name different images; give one of them")
        image = named or self.config.ami or aws_setup.DEFAULT_IMAGE
        choice = aws_setup.image_choice(image, instance_type)
        if choice is None:
            return image, None, []
        ami = self.setup.resolve_image(choice)
        return ami, choice.ssh_user, [self.setup.image_note(choice, ami)]

    def _refuse_taken(self, stdout: str, name: str) -> None:
        instances, _ = self.spec.parse_instances(stdout)
        if any(i.State.Name in LIVE_STATES for i in instances):
            raise ConflictError(f"host {name!r} already exists in provider {self.provider!r}")

    def _poll(self, done: Callable[[str, Context], bool]) -> Poll:
        return Poll(done, self.config.wait_timeout_s, self.poll_delays_s, "wait_timeout_s")

    def _launched(self, stdout: str, ctx: Context, request: CreateRequest) -> bool:
        """Whether our instance runs. Of instances created concurrently under one name, the
        earliest (created-at, host id) keeps it; the others give up (and are undone)."""
        ours = (request.created_at, request.host_id)
        instances, _ = self.spec.parse_instances(stdout)
        for other in instances:
            key = (other.tags.get(TAG_CREATED_AT, ""), other.tags.get(TAG_HOST_ID, ""))
            live = other.State.Name in LIVE_STATES
            if other.InstanceId != ctx["instance_id"] and live and key < ours:
                raise ConflictError(
                    f"host {request.name!r} was created concurrently in provider "
                    f"{self.provider!r}; the other one keeps the name"
                )
        mine = next((i for i in instances if i.InstanceId == ctx["instance_id"]), None)
        if mine is None:  # not visible yet (EC2 is eventually consistent)
            return False
        _refuse_dead(mine)
        ctx["instance"] = mine
        return mine.State.Name == "running"

    def _await_state_step(self, name: str, instance_id: str, want: str) -> Step:
        def reached(stdout: str, ctx: Context) -> bool:
            instances, _ = self.spec.parse_instances(stdout)
            if instances:
                _refuse_dead(instances[0])
            return bool(instances) and instances[0].State.Name == want

        return Step(
            f"wait until {name} is {want}",
            command=self.command(self.spec.instance_argv(instance_id)),
            poll=self._poll(reached),
        )

    def _image_available(self, stdout: str, ctx: Context) -> bool:
        images = self.spec.parse_images(stdout)
        if images and images[0].State == "failed":
            raise MngrError(f"image {images[0].ImageId} failed to build")
        if images:
            ctx["ebs_snapshots"] = images[0].ebs_snapshots
        return bool(images) and images[0].State == "available"

    def _terminate_step(self, instance_id: str, description: str = "") -> Step:
        return Step(
            description or f"terminate {instance_id}",
            command=self.command(self.spec.terminate_argv(instance_id)),
            missing_ok=True,  # already gone is not an error
        )

    def _terminate_launched(self, ctx: Context, host_id: str) -> list[Step]:
        if "instance_id" in ctx:
            return [self._terminate_step(ctx["instance_id"])]
        # run-instances failed or timed out: find what it made, by its tag.
        return self._for_each_found(
            f"the instance of tag {TAG_HOST_ID}={host_id}",
            self.spec.by_host_id_argv(host_id),
            lambda out: [i.InstanceId for i in self.spec.parse_instances(out)[0]],
            lambda instance_id: [self._terminate_step(instance_id)],
        )

    def _for_each_found(
        self,
        what: str,
        find_argv: list[str],
        ids_of: Callable[[str], list[str]],
        steps_for: Callable[[str], list[Step]],
    ) -> list[Step]:
        """Find things by one call, then run `steps_for` each thing found."""
        key = f"found:{what}"
        return [
            Step(
                f"find {what}",
                command=self.command(find_argv),
                parse=lambda out, ctx: ctx.update({key: ids_of(out)}),
            ),
            Step(
                f"clean up each {what}",
                expand=lambda ctx: [step for found in ctx[key] for step in steps_for(found)],
            ),
        ]


def _refuse_dead(instance: Ec2Instance) -> None:
    """An instance we wait for that is being terminated will never get there."""
    if instance.State.Name in ("shutting-down", "terminated"):
        reason = instance.StateReason.get("Message") or "no reason given"
        raise MngrError(f"instance {instance.InstanceId} is {instance.State.Name}: {reason}")
