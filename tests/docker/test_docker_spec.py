"""Spec tests: a request becomes exactly this docker argv (pure, no process)."""

from __future__ import annotations

import pytest
from mngr_backends.docker import DockerBackend, DockerConfig, DockerCreateOptions, DockerSpec
from pydantic import ValidationError

from mngr.backend import CreateRequest
from mngr.errors import UsageError
from mngr.records import Host, Snapshot
from mngr.runner import Runner

HOST_ID = "host-" + "a" * 32


def config(**fields: object) -> DockerConfig:
    return DockerConfig.model_validate({"name": "dk", "backend": "docker", **fields})


def spec(**fields: object) -> DockerSpec:
    return DockerSpec(config(**fields))


def opts(**fields: object) -> DockerCreateOptions:
    return DockerCreateOptions.model_validate(fields)


def request(**fields: object) -> CreateRequest:
    base: dict[str, object] = {
        "name": "web",
        "host_id": HOST_ID,
        "created_at": "2025-01-01T10:00:00Z",
    }
    return CreateRequest(**{**base, **fields})  # type: ignore[arg-type]


def host(**fields: object) -> Host:
    base: dict[str, object] = {
        "id": HOST_ID,
        "name": "web",
        "provider": "dk",
        "backend": "docker",
        "state": "running",
        "handle": "c" * 64,
    }
    return Host.model_validate({**base, **fields})


def test_base_argv_names_the_binary_and_the_daemon() -> None:
    assert spec().base == ["docker"]
    assert spec(host="ssh://me@box:2222").base == ["docker", "--host", "ssh://me@box:2222"]
    assert spec(context="prod", binary="/opt/docker").base == ["/opt/docker", "--context", "prod"]


def test_run_argv_names_labels_and_keeps_the_container_alive() -> None:
    argv = spec().run_argv(request(tags={"team": "a,b=c d"}), "img:1", DockerCreateOptions())
    assert argv == [
        "docker", "run", "--detach", "--init",
        "--name", "web.dk", "--hostname", "web",
        "--label", "mngr.kind=host",
        "--label", "mngr.provider=dk",
        "--label", f"mngr.host-id={HOST_ID}",
        "--label", "mngr.host-name=web",
        "--label", "mngr.created-at=2025-01-01T10:00:00Z",
        "--label", 'mngr.tags={"team":"a,b=c d"}',
        "--label", "mngr.tag.team=a,b=c d",
        "--label", "mngr.cpus=", "--label", "mngr.memory=", "--label", "mngr.gpus=",
        "--label", "mngr.idle-timeout=",
        "--entrypoint", "sleep", "img:1", "infinity",
    ]  # fmt: skip


def test_run_argv_carries_resources_mounts_network_and_passthrough_in_order() -> None:
    from mngr import resources

    opts = DockerCreateOptions(
        volume=["/src:/src:ro", "cache:/cache"],
        start_arg=["--shm-size=1g", "--privileged"],
    )
    asked = resources.parse(cpus="1.5", memory="2g", gpu="all")
    argv = spec(network="lab", start_args=["--pull=never"]).run_argv(
        request(resources=asked), "img", opts
    )
    assert argv[argv.index("mngr.cpus=1.5") - 1 : argv.index("mngr.gpus=all") + 1] == [
        "--label", "mngr.cpus=1.5", "--label", "mngr.memory=2147483648b",
        "--label", "mngr.gpus=all",
    ]  # fmt: skip
    tail = argv[argv.index("mngr.idle-timeout=") + 1 :]
    assert tail == [
        "--network", "lab", "--cpus", "1.5", "--memory", "2147483648b", "--gpus", "all",
        "--volume", "/src:/src:ro", "--volume", "cache:/cache",
        "--pull=never", "--shm-size=1g", "--privileged",
        "--entrypoint", "sleep", "img", "infinity",
    ]  # fmt: skip


def test_env_values_travel_on_stdin_never_in_argv() -> None:
    opts = DockerCreateOptions(env=["TOKEN=s3cr3t value", "EMPTY="])
    argv = spec().run_argv(request(), "img", opts)
    assert "s3cr3t value" not in " ".join(argv)
    assert argv[argv.index("--env-file") + 1] == "/dev/stdin"
    assert DockerSpec.env_file(opts) == "TOKEN=s3cr3t value\nEMPTY=\n"
    plan = DockerBackend(config(), Runner()).create_plan(request(options=opts))
    assert plan.steps[-1].command is not None
    assert plan.steps[-1].command.stdin == "TOKEN=s3cr3t value\nEMPTY=\n"
    assert all("s3cr3t" not in line for line in plan.render())


def test_build_argv_labels_the_image_and_splits_build_args_from_flags() -> None:
    opts = DockerCreateOptions(build="ctx", build_arg=["VERSION=1.2", "--no-cache"])
    assert spec().build_argv(request(), opts) == [
        "docker", "build", "--force-rm", "--tag", f"mngr-build:{HOST_ID}",
        "--label", "mngr.kind=build", "--label", "mngr.provider=dk",
        "--label", f"mngr.host-id={HOST_ID}", "--label", "mngr.host-name=web",
        "--build-arg", "VERSION=1.2", "--no-cache", "ctx",
    ]  # fmt: skip


def test_a_dockerfile_alone_builds_in_its_own_folder() -> None:
    argv = spec().build_argv(request(), DockerCreateOptions(dockerfile="deploy/Dockerfile.dev"))
    assert argv[-3:] == ["--file", "deploy/Dockerfile.dev", "deploy"]


def test_list_is_one_ps_filtered_by_provider_and_kind() -> None:
    argv = spec(host="tcp://10.0.0.5:2376").ps_argv()
    assert argv[:-1] == [
        "docker", "--host", "tcp://10.0.0.5:2376", "ps", "--all", "--no-trunc",
        "--filter", "label=mngr.provider=dk", "--filter", "label=mngr.kind=host", "--format",
    ]  # fmt: skip
    # Each label is read by its own key: docker joins `.Labels` with commas, ambiguously.
    assert '"mngr.tags":{{json (.Label "mngr.tags")}}' in argv[-1]
    assert ".Labels" not in argv[-1]


def test_lifecycle_argv() -> None:
    s = spec()
    assert s.rm_argv("c1", force=False) == ["docker", "rm", "--volumes", "c1"]
    assert s.rm_argv("c1", force=True) == ["docker", "rm", "--force", "--volumes", "c1"]
    assert s.stop_argv("c1") == ["docker", "stop", "c1"]
    assert s.start_argv("c1") == ["docker", "start", "c1"]
    assert s.rmi_argv("mngr-snapshot:snap-1") == ["docker", "rmi", "mngr-snapshot:snap-1"]
    assert s.version_argv() == ["docker", "version", "--format", "{{json .}}"]


def test_snapshot_argv_commit_labels_and_listing() -> None:
    s = spec()
    assert s.commit_argv("c1", host(), "snap-1", "base", "2025-02-02T00:00:00Z") == [
        "docker", "commit", "--change",
        'LABEL mngr.kind="snapshot" mngr.provider="dk" mngr.snapshot-id="snap-1" '
        f'mngr.snapshot-name="base" mngr.host-id="{HOST_ID}" mngr.host-name="web" '
        'mngr.created-at="2025-02-02T00:00:00Z"',
        "c1", "mngr-snapshot:snap-1",
    ]  # fmt: skip
    assert s.images_argv(HOST_ID) == [
        "docker", "image", "ls", "--quiet", "--no-trunc",
        "--filter", "label=mngr.provider=dk", "--filter", "label=mngr.kind=snapshot",
        "--filter", f"label=mngr.host-id={HOST_ID}",
    ]  # fmt: skip


def test_exec_is_interactive_and_tty_only_on_a_terminal() -> None:
    s = spec()
    assert s.exec_argv("c1", ["ls", "-l"], tty=False, detach=False) == [
        "docker", "exec", "--interactive", "c1", "ls", "-l",
    ]  # fmt: skip
    assert s.exec_argv("c1", ["top"], tty=True, detach=False)[2:4] == ["--interactive", "--tty"]
    assert s.exec_argv("c1", ["srv"], tty=True, detach=True)[2:] == ["--detach", "c1", "srv"]
    assert s.shell_argv("c1", tty=True)[2:7] == ["--interactive", "--tty", "c1", "sh", "-c"]


def test_create_plan_runs_a_build_then_the_built_image(tmp_path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    plan = DockerBackend(config(), Runner()).create_plan(
        request(options=DockerCreateOptions(build=str(tmp_path)))
    )
    lines = plan.render()
    assert lines[0].startswith("docker build --force-rm --tag mngr-build:host-")
    assert lines[1].endswith(f"--entrypoint sleep mngr-build:{HOST_ID} infinity")


def test_create_plan_starts_from_a_snapshot_or_the_default_image() -> None:
    backend = DockerBackend(config(image="debian:12"), Runner())
    snap = Snapshot(id="snap-1", name="s", host="old", provider="dk", handle="mngr-snapshot:snap-1")
    assert (
        backend.create_plan(request(from_snapshot=snap))
        .render()[0]
        .endswith("mngr-snapshot:snap-1 infinity")
    )
    assert backend.create_plan(request()).render()[0].endswith("debian:12 infinity")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"image": "x", "options": DockerCreateOptions(build=".")}, "exclude one another"),
        ({"options": DockerCreateOptions(build_arg=["A=1"])}, "needs --build"),
        ({"options": DockerCreateOptions(build="/no/such/dir")}, "is not a directory"),
        ({"options": DockerCreateOptions(dockerfile="/no/Dockerfile")}, "is not a file"),
    ],
)
def test_create_refuses_contradictory_image_sources(fields: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        DockerBackend(config(), Runner()).create_plan(request(**fields))


def test_destroy_removes_the_container_and_the_image_built_for_it() -> None:
    backend = DockerBackend(config(), Runner())
    assert backend.destroy_plan(host()).render() == [  # running: stopped gracefully first
        "docker stop " + "c" * 64,
        "docker rm --volumes " + "c" * 64,
    ]
    built = host(image=f"mngr-build:{HOST_ID}")
    assert backend.destroy_plan(built, force=True).render() == [
        "docker rm --force --volumes " + "c" * 64,
        f"docker rmi mngr-build:{HOST_ID}",
    ]
    assert all(step.missing_ok for step in backend.destroy_plan(built).steps)


def test_stop_with_snapshot_commits_first() -> None:
    lines = DockerBackend(config(), Runner()).stop_plan(host(), snapshot=True).render()
    assert lines[0].startswith("""docker commit --change 'LABEL mngr.kind="snapshot" """)
    assert lines[1] == "docker stop " + "c" * 64


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"host": "http://x"}, "host must start with one of"),
        ({"host": "unix:///s", "context": "c"}, "either 'host' or 'context'"),
        ({"hots": "unix:///s"}, "Extra inputs are not permitted"),
    ],
)
def test_config_refuses_bad_settings(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        config(**fields)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"env": ["NOVALUE"]}, "KEY=VALUE"),
        ({"env": ["1BAD=x"]}, "KEY=VALUE"),
        ({"env": ["A=two\nlines"]}, "one line"),
    ],
)
def test_create_options_refuse_bad_values(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        DockerCreateOptions.model_validate(fields)


def test_memory_is_the_core_size_in_bytes_and_a_gpu_type_is_refused() -> None:
    from mngr import resources
    from mngr.errors import UsageError

    for size, docker_size in (("512m", "536870912b"), ("2GB", "2147483648b")):
        argv = spec().run_argv(request(resources=resources.parse(memory=size)), "img", opts())
        assert argv[argv.index("--memory") + 1] == docker_size
    with pytest.raises(UsageError, match="docker takes a count or 'all'"):
        spec().run_argv(request(resources=resources.parse(gpu="H100:2")), "img", opts())


def test_options_that_touch_the_docker_host_are_not_served_remotely() -> None:
    from mngr_backends.docker import DockerCreateOptions

    def served(field: str) -> bool:
        extra = DockerCreateOptions.model_fields[field].json_schema_extra
        return not (isinstance(extra, dict) and extra.get("serve") is False)

    assert not any(served(f) for f in ("volume", "build", "dockerfile", "build_arg", "start_arg"))
    assert served("env")


def test_a_paused_container_is_started_by_unpause() -> None:
    from mngr_backends.docker import DockerConfig, DockerSpec

    spec = DockerSpec(DockerConfig(name="d", backend="docker"))
    assert spec.start_argv("web.d")[-2:] == ["start", "web.d"]
    assert spec.start_argv("web.d", paused=True)[-2:] == ["unpause", "web.d"]
