"""Fake answers of the aws CLI for the `fp` tests: its real stderr texts (captured against
moto, plus the ones moto cannot produce, in the CLI's format) and minimal JSON documents."""

from __future__ import annotations

import json

from tests.aws.motoserver import FIXTURES

STDERR = json.loads((FIXTURES / "stderr.json").read_text(encoding="utf-8"))
# Texts the local endpoint cannot produce, in the format the CLI prints every service error.
STDERR.update(
    {
        "unauthorized-operation": {
            "returncode": 255,
            "stderr": "\nAn error occurred (UnauthorizedOperation) when calling the RunInstances "
            "operation: You are not authorized to perform this operation. Encoded "
            "authorization failure message: AbCdEf\n",
        },
        "expired-token": {
            "returncode": 255,
            "stderr": "\nAn error occurred (ExpiredToken) when calling the DescribeInstances "
            "operation: The security token included in the request is expired\n",
        },
        "request-limit": {
            "returncode": 255,
            "stderr": "\nAn error occurred (RequestLimitExceeded) when calling the "
            "DescribeInstances operation (reached max retries: 4): Request limit exceeded.\n",
        },
        "region-format": {
            "returncode": 255,
            "stderr": "\nProvided region_name 'us east' doesn't match a supported format.\n",
        },
    }
)
HOST_ID = "host-" + "b" * 32


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def instance(
    name: str, state: str, instance_id: str, host_id: str = HOST_ID, provider: str = "cloud"
) -> dict:
    return {
        "InstanceId": instance_id,
        "State": {"Name": state},
        "ImageId": "ami-1",
        "PublicIpAddress": "54.0.0.1",
        "Tags": [
            {"Key": "mngr:host-id", "Value": host_id},
            {"Key": "mngr:host-name", "Value": name},
            {"Key": "mngr:provider", "Value": provider},
            {"Key": "mngr:created-at", "Value": "2026-01-02T03:04:05Z"},
        ],
    }


def listing(*instances: dict) -> str:
    return json.dumps({"Reservations": [{"Instances": list(instances)}]})
