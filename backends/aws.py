"""AWS EC2 backend: a host is an EC2 instance, driven through `aws ec2 ... --output json`.

Everything mngr knows about a host lives in the instance's tags (no local state):

    mngr:host-id  mngr:host-name  mngr:provider  mngr:created-at  Name  mngr:tag:<key>

A snapshot is an AMI made from the instance (`create-image`), tagged the same way; its id
is the AMI id. `AwsSpec` builds every argv and parses every JSON answer (pure, no I/O);
`AwsBackend` strings them into plans run through the injected runner.
"""

from __future__ import annotations

import ipaddress
import json
import random
import shlex
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mngr import resources
from mngr.backend import ArgvValue, Backend, CreateOptions, CreateRequest, ProviderConfig
from mngr.errors import (
    ConfigError,
    ConflictError,
    InterruptedByUser,
    MngrError,
    NotFoundError,
    UnauthorisedError,
    UnreachableError,
    UnsupportedError,
    UsageError,
    VendorCommandError,
    VendorOutputError,
    VendorTimeoutError,
)
from mngr.names import new_snapshot_id
from mngr.plan import Context, Plan, Ref, Step
from mngr.records import Host, HostState, Snapshot, utc_now
from mngr.runner import CANCELLED, Command, Completed, Runner

TAG_HOST_ID = "mngr:host-id"
TAG_HOST_NAME = "mngr:host-name"
TAG_PROVIDER = "mngr:provider"
TAG_CREATED_AT = "mngr:created-at"
TAG_SNAPSHOT_NAME = "mngr:snapshot-name"
# A fresh value per create-image call: its undo finds the image this call made, and no other.
TAG_CREATE_TOKEN = "mngr:create-token"
USER_TAG_PREFIX = "mngr:tag:"

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
# The pager is turned off through the environment: v2 reads AWS_PAGER, while v1 (the CLI on
# the package index) has no pager and refuses v2's `--no-cli-pager` flag.
CLI_ENV = {"AWS_PAGER": ""}
REGION_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"


class AwsConfig(ProviderConfig):
    needs_trust = frozenset({"endpoint_url", "binary", "identity_file", "accept_new_host_keys"})

    region: str = Field(pattern=REGION_PATTERN)
    profile: ArgvValue | None = None
    endpoint_url: str | None = None  # any EC2-compatible endpoint
    instance_type: ArgvValue = "t3.micro"
    ami: ArgvValue | None = None
    key_name: ArgvValue | None = None
    security_group_ids: list[ArgvValue] = Field(default_factory=list)
    subnet_id: ArgvValue | None = None
    iam_instance_profile: ArgvValue | None = None  # a name, or an ARN
    ssh_user: ArgvValue = "ec2-user"
    identity_file: ArgvValue | None = None
    accept_new_host_keys: bool = False
    binary: str = "aws"
    page_size: int | None = Field(default=None, ge=5, le=1000)  # describe-instances page
    wait_timeout_s: float = Field(default=600.0, gt=0)  # for running / stopped / available

    @field_validator("endpoint_url")
    @classmethod
    def _http_only(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value


class AwsCreateOptions(CreateOptions):
    instance_type: ArgvValue | None = Field(
        default=None, description="EC2 instance type (default: the provider's instance_type)."
    )
    ami: ArgvValue | None = Field(
        default=None, description="AMI to boot (default: --image, then the provider's ami)."
    )
    spot: bool = Field(default=False, description="Launch a one-time spot instance.")
    key_name: ArgvValue | None = Field(default=None, description="EC2 key pair to install.")
    subnet: ArgvValue | None = Field(default=None, description="Subnet id to launch into.")


# --- the vendor's JSON (lenient: unknown fields ignored, everything optional) -------------


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Ec2Tag(_Lenient):
    Key: str
    Value: str = ""


class _Tagged(_Lenient):
    Tags: list[Ec2Tag] = Field(default_factory=list)

    @property
    def tags(self) -> dict[str, str]:
        return {t.Key: t.Value for t in self.Tags}


class Ec2State(_Lenient):
    Name: str = "unknown"


class Ec2Instance(_Tagged):
    InstanceId: str
    ImageId: str | None = None
    InstanceType: str | None = None
    State: Ec2State = Field(default_factory=Ec2State)
    StateReason: dict[str, Any] = Field(default_factory=dict)
    PublicIpAddress: str | None = None
    PrivateIpAddress: str | None = None
    LaunchTime: str | None = None
    InstanceLifecycle: str | None = None
    Placement: dict[str, Any] = Field(default_factory=dict)
    CpuOptions: dict[str, Any] = Field(default_factory=dict)


class Ec2Reservation(_Lenient):
    Instances: list[Ec2Instance] = Field(default_factory=list)


class DescribeInstances(_Lenient):
    Reservations: list[Ec2Reservation] = Field(default_factory=list)
    NextToken: str | None = None


class RunInstances(_Lenient):
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


class DescribeImages(_Lenient):
    Images: list[Ec2Image] = Field(default_factory=list)


class CreateImage(_Lenient):
    ImageId: str


class DescribeRegions(_Lenient):
    Regions: list[dict[str, Any]] = Field(default_factory=list)


M = TypeVar("M", bound=BaseModel)


def _flags(*pairs: tuple[str, str | None]) -> list[str]:
    """`--flag value` for every pair whose value is given."""
    return [word for flag, value in pairs if value is not None for word in (flag, value)]


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _filters(**by_name: Iterable[str] | str) -> str:
    """EC2 filters as JSON (safe for any tag value, unlike the CLI's shorthand)."""
    return _compact(
        [
            {"Name": name, "Values": [values] if isinstance(values, str) else list(values)}
            for name, values in by_name.items()
        ]
    )


def _tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


@dataclass(frozen=True)
class Launch:
    """What `run-instances` needs for one host."""

    host_id: str
    name: str
    created_at: str
    image: str
    instance_type: str
    tags: dict[str, str]
    key_name: str | None = None
    subnet_id: str | None = None
    spot: bool = False
    block_device_mappings: str | None = None  # JSON, or a Ref filled at run time


class AwsSpec:
    """Argv builders and JSON parsers for one provider instance. Pure: no I/O."""

    def __init__(self, config: AwsConfig, backend_name: str = "aws") -> None:
        self.config = config
        self.backend_name = backend_name

    @property
    def provider(self) -> str:
        return self.config.name

    def argv(self, verb: str, *args: str) -> list[str]:
        c = self.config
        return [
            *(c.binary, "ec2", verb, *args),
            *_flags(("--region", c.region), ("--profile", c.profile)),
            *_flags(("--endpoint-url", c.endpoint_url), ("--output", "json")),
        ]

    # --- instances --------------------------------------------------------------------

    def list_argv(self, starting_token: str | None = None) -> list[str]:
        page = str(self.config.page_size) if self.config.page_size else None
        return self.argv(
            "describe-instances",
            "--filters",
            _filters(**{"tag:" + TAG_PROVIDER: self.provider, "instance-state-name": LIVE_STATES}),
            *_flags(("--page-size", page), ("--starting-token", starting_token)),
        )

    def by_name_argv(self, name: str) -> list[str]:
        """Every instance of this provider carrying `name`, in any state."""
        return self.argv(
            "describe-instances",
            "--filters",
            _filters(**{"tag:" + TAG_PROVIDER: self.provider, "tag:" + TAG_HOST_NAME: name}),
        )

    def by_host_id_argv(self, host_id: str) -> list[str]:
        return self.argv(
            "describe-instances",
            "--filters",
            _filters(**{"tag:" + TAG_HOST_ID: host_id, "instance-state-name": LIVE_STATES}),
        )

    def instance_argv(self, instance_id: str) -> list[str]:
        return self.argv("describe-instances", "--instance-ids", instance_id)

    def run_argv(self, launch: Launch) -> list[str]:
        c = self.config
        tags = _tag_list(
            {
                TAG_HOST_ID: launch.host_id,
                TAG_HOST_NAME: launch.name,
                TAG_PROVIDER: self.provider,
                TAG_CREATED_AT: launch.created_at,
                "Name": launch.name,
                **{USER_TAG_PREFIX + k: v for k, v in launch.tags.items()},
            }
        )
        profile = None
        if c.iam_instance_profile:
            key = "Arn" if c.iam_instance_profile.startswith("arn:") else "Name"
            profile = _compact({key: c.iam_instance_profile})
        tagged = [{"ResourceType": kind, "Tags": tags} for kind in ("instance", "volume")]
        return self.argv(
            "run-instances",
            *_flags(
                ("--image-id", launch.image),
                ("--instance-type", launch.instance_type),
                ("--count", "1"),
                # The host id is the idempotency token: a retried call never makes a second.
                ("--client-token", launch.host_id),
                ("--tag-specifications", _compact(tagged)),
                ("--key-name", launch.key_name),
                ("--subnet-id", launch.subnet_id),
                ("--iam-instance-profile", profile),
                ("--block-device-mappings", launch.block_device_mappings),
                (
                    "--instance-market-options",
                    _compact({"MarketType": "spot"}) if launch.spot else None,
                ),
            ),
            *(["--security-group-ids", *c.security_group_ids] if c.security_group_ids else []),
        )

    def terminate_argv(self, instance_id: str) -> list[str]:
        return self.argv("terminate-instances", "--instance-ids", instance_id)

    def stop_argv(self, instance_id: str) -> list[str]:
        return self.argv("stop-instances", "--instance-ids", instance_id)

    def start_argv(self, instance_id: str) -> list[str]:
        return self.argv("start-instances", "--instance-ids", instance_id)

    def check_argv(self) -> list[str]:
        return self.argv("describe-regions", "--region-names", self.config.region)

    # --- images (snapshots) -----------------------------------------------------------

    def image_name(self, snapshot_name: str) -> str:
        # AWS refuses a second AMI of one name, so a retried create-image never makes two.
        return f"mngr/{self.provider}/{snapshot_name}"

    def describe_image_argv(self, image_id: str) -> list[str]:
        return self.argv("describe-images", "--image-ids", image_id)

    def image_by_token_argv(self, token: str) -> list[str]:
        by_token = _filters(**{"tag:" + TAG_CREATE_TOKEN: token})
        return self.argv("describe-images", "--owners", "self", "--filters", by_token)

    def list_images_argv(self, host_id: str | None = None) -> list[str]:
        wanted = {"tag:" + TAG_PROVIDER: self.provider}
        if host_id:
            wanted["tag:" + TAG_HOST_ID] = host_id
        return self.argv("describe-images", "--owners", "self", "--filters", _filters(**wanted))

    def create_image_argv(
        self, host: Host, snapshot_name: str, created_at: str, token: str
    ) -> list[str]:
        tags = {
            TAG_PROVIDER: self.provider,
            TAG_HOST_ID: host.id,
            TAG_HOST_NAME: host.name,
            TAG_SNAPSHOT_NAME: snapshot_name,
            TAG_CREATED_AT: created_at,
            TAG_CREATE_TOKEN: token,
            "Name": snapshot_name,
        }
        return self.argv(
            "create-image",
            *_flags(
                ("--instance-id", _instance_id(host)),
                ("--name", self.image_name(snapshot_name)),
                ("--description", f"mngr snapshot {snapshot_name} of host {host.name}"),
                (
                    "--tag-specifications",
                    _compact([{"ResourceType": "image", "Tags": _tag_list(tags)}]),
                ),
            ),
        )

    def deregister_argv(self, image_id: str) -> list[str]:
        return self.argv("deregister-image", "--image-id", image_id)

    def delete_snapshot_argv(self, ebs_snapshot_id: str) -> list[str]:
        return self.argv("delete-snapshot", "--snapshot-id", ebs_snapshot_id)

    # --- ssh --------------------------------------------------------------------------

    def ssh_argv(
        self, host: Host, remote: list[str] | None, *, tty: bool, detach: bool = False
    ) -> list[str]:
        c = self.config
        address = host.address.get("public_ip") or host.address.get("private_ip")
        if not address:
            raise MngrError(f"host {host.name!r} has no IP address to reach it over ssh")
        try:  # vendor output is data: an "address" such as -oProxyCommand=... never reaches ssh
            address = str(ipaddress.ip_address(address))
        except ValueError:
            raise VendorOutputError(f"host {host.name!r} has no valid IP address") from None
        checking = "accept-new" if c.accept_new_host_keys else "yes"
        argv = ["ssh", "-o", f"StrictHostKeyChecking={checking}", "-o", "ConnectTimeout=30"]
        if c.identity_file:
            argv += ["-i", c.identity_file, "-o", "IdentitiesOnly=yes"]
        argv += ["-l", c.ssh_user, "-t" if tty else "-T", address]
        if remote:
            # ssh hands the remote shell one string: quote each word so it arrives intact.
            command = shlex.join(remote)
            if detach:
                command = f"nohup {command} >/dev/null 2>&1 </dev/null &"
            argv += ["--", command]
        return argv

    # --- parsers ----------------------------------------------------------------------

    def parse_instances(self, stdout: str) -> tuple[list[Ec2Instance], str | None]:
        doc = _load(DescribeInstances, stdout, "describe-instances")
        instances = [i for r in doc.Reservations for i in r.Instances]
        return instances, doc.NextToken

    def parse_launched(self, stdout: str) -> Ec2Instance:
        doc = _load(RunInstances, stdout, "run-instances")
        if len(doc.Instances) != 1:
            raise VendorOutputError(
                f"aws ec2 run-instances returned {len(doc.Instances)} instances, expected 1"
            )
        return doc.Instances[0]

    def parse_images(self, stdout: str) -> list[Ec2Image]:
        images = _load(DescribeImages, stdout, "describe-images").Images
        return [i for i in images if i.State != "deregistered"]

    def parse_created_image(self, stdout: str) -> str:
        return _load(CreateImage, stdout, "create-image").ImageId

    def parse_region(self, stdout: str) -> dict[str, Any]:
        regions = _load(DescribeRegions, stdout, "describe-regions").Regions
        if not regions:
            raise NotFoundError(f"region {self.config.region!r} is not offered by this endpoint")
        r = regions[0]
        return {"region": r.get("RegionName"), "endpoint": r.get("Endpoint")}

    def root_volume_mapping(self, stdout: str, image_id: str, disk_gb: int) -> str:
        """Block-device mapping that resizes the image's root volume (deleted with the host)."""
        images = self.parse_images(stdout)
        if not images:
            raise NotFoundError(f"no image {image_id!r} in region {self.config.region!r}")
        device = images[0].RootDeviceName or "/dev/xvda"
        ebs = {"VolumeSize": disk_gb, "DeleteOnTermination": True}
        return _compact([{"DeviceName": device, "Ebs": ebs}])

    def host_of(self, instance: Ec2Instance) -> Host | None:
        """The host an instance is, or None when it is not one of this provider's."""
        tags = instance.tags
        if TAG_HOST_ID not in tags or tags.get(TAG_PROVIDER) != self.provider:
            return None
        address: dict[str, Any] = {
            "instance_id": instance.InstanceId,
            "instance_type": instance.InstanceType,
            "region": self.config.region,
            "availability_zone": instance.Placement.get("AvailabilityZone"),
            "public_ip": instance.PublicIpAddress,
            "private_ip": instance.PrivateIpAddress,
            "lifecycle": instance.InstanceLifecycle or "on-demand",
        }
        ip = instance.PublicIpAddress or instance.PrivateIpAddress
        if ip:
            address["ssh"] = f"{self.config.ssh_user}@{ip}"
        cores, threads = (instance.CpuOptions.get(k) for k in ("CoreCount", "ThreadsPerCore"))
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
            address={k: v for k, v in address.items() if v is not None},
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


def _load(model: type[M], stdout: str, command: str) -> M:
    """Parse a vendor answer; a failure says which command printed what."""
    if not stdout.strip():  # never an answer of `--output json`: not "no instances"
        raise VendorOutputError(f"aws ec2 {command} printed nothing where JSON was expected")
    try:
        return model.model_validate_json(stdout)
    except ValidationError as exc:
        snippet = stdout.strip().replace("\n", " ")[:200]
        raise VendorOutputError(
            f"aws ec2 {command} printed output mngr cannot read "
            f"({exc.errors()[0]['msg']}): {snippet!r}"
        ) from None


def _instance_id(host: Host) -> str:
    instance_id = host.handle or host.address.get("instance_id")
    if not instance_id:
        raise MngrError(f"host {host.name!r} has no EC2 instance id")
    return instance_id


# --- errors -------------------------------------------------------------------------------


class ThrottledError(UnreachableError):
    """AWS refused the call for its request rate (retried with back-off)."""

    kind = "throttled"


# (text in the aws CLI's stderr, error it becomes, hint added to the vendor's message)
ERROR_RULES: list[tuple[str, type[MngrError], str]] = [
    ("Unable to locate credentials", UnauthorisedError, "set 'profile' or AWS_PROFILE"),
    ("(ExpiredToken", UnauthorisedError, "the session has expired; renew it"),
    ("(RequestExpired)", UnauthorisedError, "check the clock or renew the session"),
    ("(UnauthorizedOperation)", UnauthorisedError, "the credentials may not do this"),
    ("(AuthFailure)", UnauthorisedError, "the credentials were refused"),
    ("(InvalidClientTokenId)", UnauthorisedError, "the credentials were refused"),
    ("(SignatureDoesNotMatch)", UnauthorisedError, "the credentials were refused"),
    ("(AccessDenied", UnauthorisedError, "the credentials may not do this"),
    ("(RequestLimitExceeded)", ThrottledError, ""),
    ("(Throttling", ThrottledError, ""),
    (
        "Could not connect to the endpoint URL",
        UnreachableError,
        "check 'region' and 'endpoint_url'",
    ),
    ("Connect timeout on endpoint URL", UnreachableError, "check 'region' and 'endpoint_url'"),
    ("Read timeout on endpoint URL", UnreachableError, ""),
    ("Provided region_name", UnreachableError, "check 'region'"),
    (
        "could not be found",
        ConfigError,
        "add it with `aws configure --profile NAME`, or change this provider's 'profile'",
    ),
    ("(InvalidAMIID.Malformed)", UsageError, ""),
    (".NotFound)", NotFoundError, ""),
    ("(InvalidAMIID.Unavailable)", NotFoundError, ""),
    ("(IncorrectInstanceState)", ConflictError, ""),
    ("(InvalidAMIName.Duplicate)", ConflictError, "a snapshot of that name exists"),
]


# --- the backend --------------------------------------------------------------------------


class AwsBackend(Backend):
    name = "aws"
    config_model = AwsConfig
    create_options_model = AwsCreateOptions
    takes = frozenset({resources.DISK})  # CPUs, memory and GPUs come with --instance-type
    unsupported = {}

    config: AwsConfig
    # Back-off before each retry of a throttled call (the CLI has already retried itself).
    retry_delays_s: tuple[float, ...] = (1.0, 2.0, 4.0)
    # Pauses between polls while waiting for a state; the last one repeats.
    poll_delays_s: tuple[float, ...] = (1.0, 2.0, 3.0, 5.0, 10.0)

    def __init__(self, config: ProviderConfig, runner: Runner) -> None:
        super().__init__(config, runner)
        self.spec = AwsSpec(self.config, self.name)

    def command(self, argv: list[str]) -> Command:
        return Command(argv, self.config.timeout_s, env=dict(CLI_ENV))

    def call(self, argv: list[str], *, cancellable: bool = True) -> str:
        return self.run(self.command(argv), cancellable=cancellable).stdout

    # --- running vendor commands ------------------------------------------------------

    def run(self, command: Command, *, cancellable: bool = True) -> Completed:
        delays = iter(self.retry_delays_s)
        while True:
            try:
                return super().run(command, cancellable=cancellable)
            except ThrottledError:
                delay = next(delays, None)
                if delay is None:
                    raise
                _pause(random.uniform(delay / 2, delay), cancellable)

    def classify(self, error: VendorCommandError) -> MngrError:
        for text, kind, hint in ERROR_RULES:
            if text in error.stderr:
                return kind(f"{error.message} ({hint})" if hint else error.message)
        return error

    # --- hosts ------------------------------------------------------------------------

    def list_hosts(self) -> list[Host]:
        hosts: list[Host] = []
        token: str | None = None
        seen: set[str] = set()
        while True:
            instances, token = self.spec.parse_instances(self.call(self.spec.list_argv(token)))
            hosts += [h for h in map(self.spec.host_of, instances) if h is not None]
            if not token:
                return hosts
            if token in seen:  # an endpoint paging in a circle would be listed for ever
                raise VendorOutputError(
                    "aws ec2 describe-instances returned a NextToken it had already given"
                )
            seen.add(token)

    def create_plan(self, request: CreateRequest) -> Plan:
        options = request.options
        if not isinstance(options, AwsCreateOptions):
            options = AwsCreateOptions()
        image = self._image_for(request, options)
        name = request.name
        steps: list[Step] = []
        mappings: str | None = None
        if request.resources.disk_gib:
            disk_gb = request.resources.disk_gib
            if disk_gb > 16384:
                raise UsageError("--disk: an EC2 root volume is at most 16 TiB")
            steps.append(
                Step(
                    f"find the root device of {image}",
                    command=self.command(self.spec.describe_image_argv(image)),
                    parse=lambda out, ctx: ctx.update(
                        block_device_mappings=self.spec.root_volume_mapping(out, image, disk_gb)
                    ),
                )
            )
            mappings = Ref("block_device_mappings")
        launch = Launch(
            host_id=request.host_id,
            name=name,
            created_at=request.created_at,
            image=image,
            instance_type=options.instance_type or self.config.instance_type,
            tags=request.tags,
            key_name=options.key_name or self.config.key_name,
            subnet_id=options.subnet or self.config.subnet_id,
            spot=options.spot,
            block_device_mappings=mappings,
        )
        steps += [
            Step(
                f"check that provider {self.provider!r} has no host named {name!r}",
                command=self.command(self.spec.by_name_argv(name)),
                parse=lambda out, ctx: self._refuse_taken(out, name),
            ),
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
                    action=lambda ctx: self._terminate_launched(ctx, request.host_id),
                ),
            ),
            Step(
                f"wait until {name} is running and the only host of its name: poll "
                f"{shlex.join(self.spec.by_name_argv(name))} (at most "
                f"{self.config.wait_timeout_s:g}s)",
                action=lambda ctx: self._await_launch(ctx, request),
            ),
        ]
        return Plan(steps, finish=lambda ctx: self._host(ctx["instance"]))

    def destroy_plan(self, host: Host, *, force: bool = False, purge: bool = False) -> Plan:
        instance_id = _instance_id(host)
        steps = [
            Step(
                f"terminate {host.name} ({instance_id})",
                command=self.command(self.spec.terminate_argv(instance_id)),
                missing_ok=True,  # already gone is not an error
            )
        ]
        if purge:
            for snap in self.list_snapshots(host):
                steps += self._image_deletion_steps(snap.handle or snap.id)
        return Plan(steps)

    def stop_plan(self, host: Host, *, snapshot: bool = False) -> Plan:
        instance_id = _instance_id(host)
        if host.address.get("lifecycle") == "spot":
            raise UnsupportedError(
                f"host {host.name!r} is a one-time spot instance, which EC2 cannot stop; "
                "destroy it instead"
            )
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

    # --- snapshots --------------------------------------------------------------------

    def snapshot_create_plan(self, host: Host, name: str) -> Plan:
        created_at, token = utc_now(), new_snapshot_id()
        image_name = self.spec.image_name(name)

        def undo(ctx: Context) -> None:
            # create-image failed or timed out: find what this call made by its token, never
            # by its name (an image of that name may be an older snapshot, or another's).
            ids = [ctx["image_id"]] if "image_id" in ctx else []
            if not ids:
                found = self.call(self.spec.image_by_token_argv(token), cancellable=False)
                ids = [image.ImageId for image in self.spec.parse_images(found)]
            for image_id in ids:
                self._run_now(self._image_deletion_steps(image_id), ctx)

        return Plan(
            [
                Step(
                    f"create image {image_name} of {host.name}",
                    command=self.command(
                        self.spec.create_image_argv(host, name, created_at, token)
                    ),
                    parse=lambda out, ctx: ctx.update(image_id=self.spec.parse_created_image(out)),
                    undo_if_failed=True,
                    undo=Step(f"delete image {image_name}", action=undo),
                ),
                Step(
                    f"wait until image {image_name} is available (at most "
                    f"{self.config.wait_timeout_s:g}s)",
                    action=lambda ctx: self._await_image(ctx["image_id"]),
                ),
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

    def _image_deletion_steps(self, image_id: str) -> list[Step]:
        """Deregister an AMI and delete the EBS snapshots behind it (which outlive it)."""
        key = f"ebs_snapshots:{image_id}"

        def record(out: str, ctx: Context) -> None:
            ctx[key] = [snap for i in self.spec.parse_images(out) for snap in i.ebs_snapshots]

        def delete_ebs(ctx: Context) -> None:
            for ebs_id in ctx.get(key, []):
                self._delete(self.spec.delete_snapshot_argv(ebs_id))

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
            Step(f"for each EBS snapshot of {image_id}: {each}", action=delete_ebs),
        ]

    # --- exec -------------------------------------------------------------------------

    def exec_command(
        self, host: Host, argv: list[str], *, tty: bool = False, detach: bool = False
    ) -> Command:
        self._require_running(host)
        if not argv:
            raise UsageError("no command given (use: mngr host exec NAME -- CMD...)")
        return Command(self.spec.ssh_argv(host, argv, tty=tty, detach=detach))

    def shell_command(self, host: Host, *, tty: bool = True) -> Command:
        self._require_running(host)
        return Command(self.spec.ssh_argv(host, None, tty=tty))

    def check(self) -> dict[str, Any]:
        return self.spec.parse_region(self.call(self.spec.check_argv()))

    # --- helpers ----------------------------------------------------------------------

    def _host(self, instance: Ec2Instance) -> Host:
        host = self.spec.host_of(instance)
        if host is None:
            raise VendorOutputError(f"instance {instance.InstanceId} lost its mngr tags")
        return host

    def _image_for(self, request: CreateRequest, options: AwsCreateOptions) -> str:
        named = options.ami or request.image
        if request.from_snapshot is not None:
            if named:
                raise UsageError("--from-snapshot already chooses the image; drop --ami/--image")
            return request.from_snapshot.handle or request.from_snapshot.id
        if options.ami and request.image and options.ami != request.image:
            raise UsageError("--ami and --image name different images; give one of them")
        image = named or self.config.ami
        if not image:
            raise ConfigError(
                f"provider {self.provider!r} has no AMI: pass --ami (or --image), or set "
                "'ami' in its settings"
            )
        return image

    def _refuse_taken(self, stdout: str, name: str) -> None:
        instances, _ = self.spec.parse_instances(stdout)
        if any(i.State.Name in LIVE_STATES for i in instances):
            raise ConflictError(f"host {name!r} already exists in provider {self.provider!r}")

    def _await_launch(self, ctx: Context, request: CreateRequest) -> None:
        """Poll until our instance runs. Of instances created concurrently under one name,
        the earliest (created-at, host id) keeps it; the others give up (and are undone)."""
        ours = (request.created_at, request.host_id)
        instance_id = ctx["instance_id"]

        def ready() -> bool:
            instances, _ = self.spec.parse_instances(
                self.call(self.spec.by_name_argv(request.name))
            )
            for other in instances:
                tags = other.tags
                key = (tags.get(TAG_CREATED_AT, ""), tags.get(TAG_HOST_ID, ""))
                if other.InstanceId != instance_id and other.State.Name in LIVE_STATES:
                    if key < ours:
                        raise ConflictError(
                            f"host {request.name!r} was created concurrently in provider "
                            f"{self.provider!r}; the other one keeps the name"
                        )
            mine = next((i for i in instances if i.InstanceId == instance_id), None)
            if mine is None:  # not visible yet (EC2 is eventually consistent)
                return False
            _refuse_dead(mine)
            ctx["instance"] = mine
            return mine.State.Name == "running"

        self._poll(ready, f"instance {instance_id} ({request.name}) to run")

    def _await_state_step(self, name: str, instance_id: str, want: str) -> Step:
        def reached(ctx: Context) -> bool:
            instances, _ = self.spec.parse_instances(
                self.call(self.spec.instance_argv(instance_id))
            )
            if not instances:
                return False
            _refuse_dead(instances[0])
            return instances[0].State.Name == want

        return Step(
            f"wait until {name} is {want}: poll "
            f"{shlex.join(self.spec.instance_argv(instance_id))} (at most "
            f"{self.config.wait_timeout_s:g}s)",
            action=lambda ctx: self._poll(lambda: reached(ctx), f"{name} to be {want}"),
        )

    def _await_image(self, image_id: str) -> None:
        def available() -> bool:
            images = self.spec.parse_images(self.call(self.spec.describe_image_argv(image_id)))
            if images and images[0].State == "failed":
                raise MngrError(f"image {image_id} failed to build")
            return bool(images) and images[0].State == "available"

        self._poll(available, f"image {image_id} to be available")

    def _poll(self, done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.config.wait_timeout_s
        delays = iter(self.poll_delays_s)
        delay = 0.0
        while not done():
            delay = next(delays, delay)
            if time.monotonic() + delay > deadline:
                raise VendorTimeoutError(
                    f"gave up waiting for {what} after {self.config.wait_timeout_s:g}s "
                    "(wait_timeout_s)"
                )
            _pause(delay, cancellable=True)

    def _terminate_launched(self, ctx: Context, host_id: str) -> None:
        ids = [ctx["instance_id"]] if "instance_id" in ctx else []
        if not ids:  # run-instances failed or timed out: find what it made, by its tag
            out = self.call(self.spec.by_host_id_argv(host_id), cancellable=False)
            ids = [i.InstanceId for i in self.spec.parse_instances(out)[0]]
        for instance_id in ids:
            self._delete(self.spec.terminate_argv(instance_id))

    def _run_now(self, steps: list[Step], ctx: Context) -> None:
        """Run steps inside an undo: to the end, whatever the user interrupts."""
        for step in steps:
            if step.command is not None:
                try:
                    out = self.run(step.command, cancellable=False)
                except NotFoundError:
                    if step.missing_ok:
                        continue
                    raise
                if step.parse is not None:
                    step.parse(out.stdout, ctx)
            elif step.action is not None:
                step.action(ctx)

    def _delete(self, argv: list[str]) -> None:
        """A cleanup call: never cut short, and what is already gone counts as deleted."""
        try:
            self.run(self.command(argv), cancellable=False)
        except NotFoundError:
            pass

    def _require_running(self, host: Host) -> None:
        if host.state != HostState.RUNNING:
            raise MngrError(
                f"host {host.name!r} is {host.state}; start it with 'mngr host start {host.name}'"
            )


def _refuse_dead(instance: Ec2Instance) -> None:
    """An instance we wait for that is being terminated will never get there."""
    if instance.State.Name in ("shutting-down", "terminated"):
        reason = instance.StateReason.get("Message") or "no reason given"
        raise MngrError(f"instance {instance.InstanceId} is {instance.State.Name}: {reason}")


def _pause(seconds: float, cancellable: bool) -> None:
    if not cancellable:
        time.sleep(seconds)
    elif CANCELLED.wait(seconds):
        raise InterruptedByUser("interrupted")
