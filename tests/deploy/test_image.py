"""The Dockerfile, read as text (no Docker engine runs in the tests): it must agree with
pyproject.toml, .dockerignore, the processes' settings and the Kubernetes manifests."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import PurePosixPath

import pytest

from invsaga.runtime.config import DEFAULT_PORTS, ENV_VARS, METRICS_PORT_OFFSET
from tests.deploy.kube import ALL_RENDERED, REPO, env_of, invsaga_containers, pod_spec


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    logical, current = [], ""
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        if current.strip():
            keyword, _, rest = current.strip().partition(" ")
            logical.append((keyword.upper(), rest.strip()))
        current = ""
    return logical


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def env_settings(stage: list[tuple[str, str]]) -> dict[str, str]:
    env = {}
    for keyword, rest in stage:
        if keyword == "ENV":
            for pair in shlex.split(rest):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def _glob_regex(glob: str) -> re.Pattern[str]:
    """Docker's pattern syntax: `*` and `?` stay within one path segment, `**` spans several."""
    out = []
    for token in re.split(r"(\*\*/|\*\*|\*|\?)", glob):
        out.append({"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(token, re.escape(token)))
    return re.compile("".join(out))


def ignored(path: str) -> bool:
    """.dockerignore semantics: the last pattern matching the path or a parent of it wins."""
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for pattern in patterns:
        regex = _glob_regex(pattern.lstrip("!").rstrip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            verdict = not pattern.startswith("!")
    return verdict


def test_the_image_is_built_in_stages_and_runs_as_a_fixed_non_root_user():
    steps = instructions()
    assert sum(1 for keyword, _ in steps if keyword == "FROM") >= 2
    users = [rest for keyword, rest in final_stage() if keyword == "USER"]
    assert users, "the runtime stage must switch to a non-root USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "a numeric uid lets runAsNonRoot verify it"


@pytest.mark.parametrize("overlay", ALL_RENDERED)
def test_the_manifests_run_the_images_user(rendered, overlay):
    uid = int([rest for keyword, rest in final_stage() if keyword == "USER"][-1].split(":")[0])
    for workload, container in invsaga_containers(rendered[overlay]):
        security = {**pod_spec(workload).get("securityContext", {}), **container.get("securityContext", {})}
        assert security.get("runAsUser") == uid, workload["metadata"]["name"]


def test_the_image_contains_every_package_pyproject_installs():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    packages = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = set()
    for keyword, rest in instructions():
        if keyword == "COPY" and not rest.startswith("--from"):
            copied.update(shlex.split(rest)[:-1])
    assert {"pyproject.toml", *packages} <= copied
    for source in copied | {"config/invsaga.yaml"}:
        if "*" not in source:
            assert not ignored(source), f".dockerignore leaves {source} out of the build context"
    for left_out in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "invsaga/__pycache__/x.pyc", "data/x.db"):
        assert ignored(left_out), left_out


def test_the_image_defaults_agree_with_the_settings_and_the_manifests(rendered):
    env = env_settings(final_stage())
    invsaga_names = {name for name in env if name.startswith("INVSAGA_")}
    assert invsaga_names <= ENV_VARS.keys()
    assert "/opt/invsaga/bin" in env["PATH"], "the manifests' `python -m ...` must find the venv"
    for _, container in invsaga_containers(rendered["prod"]):
        manifest_env = env_of(rendered["prod"], container)
        for name in invsaga_names & manifest_env.keys():
            assert env[name] == manifest_env[name], name


def test_the_image_exposes_every_grpc_and_metrics_port():
    exposed: set[int] = set()
    for keyword, rest in final_stage():
        if keyword == "EXPOSE":
            for item in rest.split():
                low, _, high = item.split("/")[0].partition("-")
                exposed.update(range(int(low), int(high or low) + 1))
    ports = set(DEFAULT_PORTS.values())
    assert ports | {p + METRICS_PORT_OFFSET for p in ports} <= exposed


def test_the_default_command_starts_a_process():
    commands = [rest for keyword, rest in final_stage() if keyword == "CMD"]
    assert commands and re.fullmatch(r'\["python", "-m", "coordinator"\]', commands[-1])
