"""Which resolved build: sections become a plain `docker build`, and how."""

from __future__ import annotations

from moonmind.workflows.orchestrator.adapters.native_build import (
    docker_build_argv,
    native_build_enabled,
)

V1 = ("docker-compose",)


def test_every_mapped_option_becomes_its_docker_build_flag() -> None:
    build = {
        "context": "/srv/stack/app",
        "dockerfile": "docker/App.dockerfile",
        "args": {"A": "1", "FROM_ENV": None},
        "labels": ["team=core"],
        "cache_from": ["app:cache", ""],
        "network": "host",
        "target": "final",
        "extra_hosts": {"db": "127.0.0.1"},
        "shm_size": "64m",
    }
    argv = docker_build_argv(V1, "stack_app", {"build": build, "platform": "linux/amd64"})
    assert argv == [
        "docker", "build",
        "--build-arg", "A=1", "--build-arg", "FROM_ENV",
        "--cache-from", "app:cache",
        "--file", "/srv/stack/app/docker/App.dockerfile",
        "--label", "team=core",
        "--network", "host", "--target", "final",
        "--tag", "stack_app", "--platform", "linux/amd64",
        "--add-host", "db:127.0.0.1",
        "/srv/stack/app",
    ]  # fmt: skip


def test_what_only_compose_can_build_keeps_compose() -> None:
    plain = {"build": {"context": "/srv/stack/app"}}
    assert docker_build_argv(V1, "img", plain) == [
        "docker",
        "build",
        "--tag",
        "img",
        "/srv/stack/app",
    ]
    assert docker_build_argv(("docker", "compose"), "img", plain) is None  # v2 builds itself
    assert docker_build_argv(V1, "img", {"image": "nginx"}) is None  # nothing to build
    assert docker_build_argv(V1, "img", {"build": {"context": "app"}}) is None  # unresolved
    url = {"build": {"context": "https://example.test/repo.git"}}
    assert docker_build_argv(V1, "img", url) is None
    ssh = {"build": {"context": "/srv/stack/app", "ssh": ["default"]}}
    assert docker_build_argv(V1, "img", ssh) is None  # an option it does not map


def test_compose_v1_native_builder_switch() -> None:
    assert native_build_enabled({})
    assert native_build_enabled({"COMPOSE_DOCKER_CLI_BUILD": "1"})
    assert not native_build_enabled({"COMPOSE_DOCKER_CLI_BUILD": "0"})
    assert not native_build_enabled({"COMPOSE_DOCKER_CLI_BUILD": "False"})
