"""Integration (moto): the undo of a failed or timed-out create-image deletes only the image
that call made. It once looked the image up by name and deleted an older snapshot of that name.
"""

from __future__ import annotations

import pytest
from mngr_backends.aws import AwsBackend, AwsConfig

from mngr.errors import VendorTimeoutError
from mngr.plan import execute
from mngr.runner import Command, Completed, Runner
from tests.aws.test_aws_moto import ec2

pytestmark = pytest.mark.aws


class CreateImageTimesOut(Runner):
    """create-image counts as timed out: before reaching the endpoint, or after it acted."""

    def __init__(self, *, acted: bool) -> None:
        super().__init__()
        self.acted = acted

    def run(self, command: Command, *, check: bool = True, cancellable: bool = True) -> Completed:
        if "create-image" not in command.argv:
            return super().run(command, check=check, cancellable=cancellable)
        if self.acted:
            super().run(command, check=check, cancellable=cancellable)
        raise VendorTimeoutError("aws ec2 create-image did not answer within 1s")


def image_ids(moto) -> set[str]:
    return {i["ImageId"] for i in ec2(moto, "describe-images", "--owners", "self")["Images"]}


@pytest.mark.parametrize(
    ("acted", "name"),
    [(False, "base"), (True, "next")],
    ids=["same-name-never-sent", "made-then-timed-out"],
)
def test_a_timed_out_snapshot_deletes_only_the_image_it_made(
    moto, moto_provider, aws_settings, mngr, acted: bool, name: str
) -> None:
    aws_settings(cloud=moto_provider())
    assert mngr("host", "create", "web", "-p", "cloud").exit_code == 0
    made = mngr("host", "snapshot", "create", "web", "-p", "cloud", "--name", "base")
    assert made.exit_code == 0, made.stderr
    older = image_ids(moto)
    assert len(older) == 1

    backend = AwsBackend(AwsConfig(name="cloud", backend="aws", **moto_provider()), Runner())
    [host] = backend.list_hosts()
    backend.runner = CreateImageTimesOut(acted=acted)
    with pytest.raises(VendorTimeoutError) as exc:
        execute(backend.snapshot_create_plan(host, name), backend)
    assert "could not undo" not in str(exc.value)
    assert image_ids(moto) == older  # the older "base" kept; the one this call made, deleted
