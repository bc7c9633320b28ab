"""deploy/k8s as a cluster would receive it: both overlays rendered with kustomize, every
manifest validated against the Kubernetes 1.29 and 1.33 schemas, and the settings each
process would load from its manifest checked against the Services that carry its traffic."""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kubernetes_validate
import pytest
from kubernetes_validate.utils import all_versions

from invsaga.runtime.config import DEFAULT_PORTS, ENV_VARS, METRICS_PORT_OFFSET, SERVICES, load_settings
from invsaga.runtime.security import hash_token
from tests.deploy.kube import (
    ALL_RENDERED,
    IMAGE_NAME,
    REPO,
    env_of,
    find,
    image_name,
    invsaga_containers,
    mount_for,
    one,
    pod_spec,
    port_named,
    workloads,
)

K8S_VERSIONS = ("1.29", "1.33")
PARTICIPANTS = tuple(name for name in SERVICES if name != "coordinator")
MODULES = {name: "coordinator" if name == "coordinator" else f"services.{name}" for name in SERVICES}
NAMESPACES = {"base": "invsaga", "dev": "invsaga-dev", "prod": "invsaga"}

# What each process needs from its manifest; every name must also be a key of ENV_VARS.
REQUIRED_ENV = frozenset(
    {"INVSAGA_CONFIG", "INVSAGA_DATABASE_URL", "INVSAGA_DATA_DIR", "INVSAGA_GRACE_PERIOD", "INVSAGA_PORT"}
)
COORDINATOR_REQUIRED_ENV = frozenset(f"INVSAGA_{name.upper()}_ADDR" for name in PARTICIPANTS)
MIGRATION_REQUIRED_ENV = frozenset({"INVSAGA_CONFIG", "INVSAGA_DATABASE_URL"})
# Asked of config.py's owner (grpc.max_connection_age_ms, so that new pods get traffic).
MAX_CONNECTION_AGE_ENV = "INVSAGA_MAX_CONNECTION_AGE"


# --- helpers ---------------------------------------------------------------------------------


_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(m|Ki|Mi|Gi|Ti|k|M|G)?$")
_FACTORS = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(value: str | int) -> float:
    match = _QUANTITY.match(str(value))
    assert match, f"not a quantity: {value!r}"
    return float(match.group(1)) * _FACTORS[match.group(2)]


def prestop_sleep_seconds(container: dict) -> int:
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2, f"preStop should be a plain sleep, got {command}"
    return int(command[1])


# --- the rendering itself --------------------------------------------------------------------


def test_the_validator_bundles_the_kubernetes_versions_we_claim():
    # validate() silently falls back to an older schema for an unknown version; refuse that.
    bundled = {".".join(v.split(".")[:2]) for v in all_versions()}
    assert set(K8S_VERSIONS) <= bundled


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", ALL_RENDERED)
def test_every_manifest_is_valid_kubernetes_strictly(rendered, overlay, version):
    docs = rendered[overlay]
    assert docs
    failures = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            failures.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("overlay", ALL_RENDERED)
def test_everything_lands_in_the_overlays_namespace(rendered, overlay):
    docs = rendered[overlay]
    namespace = NAMESPACES[overlay]
    assert [d["metadata"]["name"] for d in find(docs, "Namespace")] == [namespace]
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == namespace, f"{doc['kind']}/{doc['metadata']['name']}"


# --- one Deployment, Service(s), PDB and HPA per process -------------------------------------


@pytest.mark.parametrize("overlay", ALL_RENDERED)
def test_each_process_has_a_deployment_service_budget_and_autoscaler(rendered, overlay):
    docs = rendered[overlay]
    for name in SERVICES:
        deployment = one(docs, "Deployment", name)
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod_labels.items()
        (container,) = pod_spec(deployment)["containers"]
        assert container["command"] == ["python", "-m", MODULES[name]]
        assert port_named(container, "grpc") == DEFAULT_PORTS[name]
        assert port_named(container, "metrics") == DEFAULT_PORTS[name] + METRICS_PORT_OFFSET

        service = one(docs, "Service", name)
        assert service["spec"]["selector"] == selector
        assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {
            "grpc": DEFAULT_PORTS[name],
            "metrics": DEFAULT_PORTS[name] + METRICS_PORT_OFFSET,
        }
        if name in PARTICIPANTS:
            headless = one(docs, "Service", f"{name}-headless")
            assert headless["spec"]["clusterIP"] == "None"
            assert headless["spec"]["selector"] == selector

        pdb = one(docs, "PodDisruptionBudget", name)
        assert pdb["spec"]["selector"]["matchLabels"] == selector
        hpa = one(docs, "HorizontalPodAutoscaler", name)
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


@pytest.mark.parametrize("overlay", ALL_RENDERED)
def test_one_image_serves_every_process_and_the_migrations(rendered, overlay):
    images = {container["image"] for _, container in invsaga_containers(rendered[overlay])}
    assert len(images) == 1, images
    runs = {w["metadata"]["name"] for w, _ in invsaga_containers(rendered[overlay])}
    assert runs == {*SERVICES, "invsaga-migrate"}


# --- probes, resources, security -------------------------------------------------------------


@pytest.mark.parametrize("overlay", ALL_RENDERED)
def test_every_container_has_probes_and_grpc_probes_on_its_grpc_port(rendered, overlay):
    for workload in workloads(rendered[overlay]):
        if workload["kind"] == "Job":
            continue
        for container in pod_spec(workload)["containers"]:
            where = f"{workload['kind']}/{workload['metadata']['name']}"
            assert "readinessProbe" in container and "livenessProbe" in container, where
            if image_name(container["image"]) == IMAGE_NAME:
                grpc_port = port_named(container, "grpc")
                for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                    assert container[probe]["grpc"]["port"] == grpc_port, f"{where} {probe}"


@pytest.mark.parametrize("overlay", ALL_RENDERED)
def test_every_container_has_requests_within_limits(rendered, overlay):
    for workload in workloads(rendered[overlay]):
        for container in pod_spec(workload)["containers"]:
            where = f"{workload['kind']}/{workload['metadata']['name']}"
            resources = container.get("resources", {})
            for resource in ("cpu", "memory"):
                request = resources.get("requests", {}).get(resource)
                limit = resources.get("limits", {}).get(resource)
                assert request is not None and limit is not None, f"{where}: {resource} request and limit"
                assert quantity(request) <= quantity(limit), f"{where}: {resource} request above limit"


@pytest.mark.parametrize("overlay", ALL_RENDERED)
def test_every_container_runs_non_root_on_a_read_only_root(rendered, overlay):
    for workload in workloads(rendered[overlay]):
        pod = pod_spec(workload)
        pod_security = pod.get("securityContext", {})
        assert pod.get("automountServiceAccountToken") is False
        for container in pod["containers"]:
            where = f"{workload['kind']}/{workload['metadata']['name']}"
            security = {**pod_security, **container.get("securityContext", {})}
            assert security.get("runAsNonRoot") is True, where
            assert security.get("runAsUser", 0) != 0, where
            assert security.get("readOnlyRootFilesystem") is True, where
            assert security.get("allowPrivilegeEscalation") is False, where
            assert security.get("capabilities", {}).get("drop") == ["ALL"], where
            assert security.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
            for path in ("/tmp",):
                mount, volume = mount_for(workload, container, path)
                assert "emptyDir" in volume and not mount.get("readOnly"), f"{where}: {path} must be writable"


# --- environment: no drift in either direction -----------------------------------------------


def test_the_required_settings_are_ones_the_processes_read():
    missing = (REQUIRED_ENV | COORDINATOR_REQUIRED_ENV | MIGRATION_REQUIRED_ENV) - ENV_VARS.keys()
    assert not missing, f"the manifests rely on settings config.py no longer reads: {sorted(missing)}"


@pytest.mark.parametrize("overlay", ALL_RENDERED)
def test_manifests_set_only_settings_the_processes_read(rendered, overlay):
    for workload, container in invsaga_containers(rendered[overlay]):
        unknown = {n for n in env_of(rendered[overlay], container) if n not in ENV_VARS and not n.startswith("OTEL_")}
        assert not unknown, (
            f"{workload['metadata']['name']} sets {sorted(unknown)}, which no process reads "
            "(not in ENV_VARS of invsaga/runtime/config.py, not OTEL_*)"
        )


@pytest.mark.parametrize("overlay", ALL_RENDERED)
def test_manifests_set_every_setting_the_deployment_needs(rendered, overlay):
    docs = rendered[overlay]
    for workload, container in invsaga_containers(docs):
        name = workload["metadata"]["name"]
        required = MIGRATION_REQUIRED_ENV if workload["kind"] == "Job" else REQUIRED_ENV
        if name == "coordinator":
            required = required | COORDINATOR_REQUIRED_ENV
        missing = required - env_of(docs, container).keys()
        assert not missing, f"{name} lacks {sorted(missing)}"


@pytest.mark.parametrize("overlay", ALL_RENDERED)
def test_connection_age_is_set_once_the_processes_read_it(rendered, overlay):
    if MAX_CONNECTION_AGE_ENV not in ENV_VARS:
        pytest.skip(f"{MAX_CONNECTION_AGE_ENV} is not in ENV_VARS yet")
    for workload, container in invsaga_containers(rendered[overlay]):
        if workload["kind"] == "Deployment":
            assert MAX_CONNECTION_AGE_ENV in env_of(rendered[overlay], container), (
                f"{workload['metadata']['name']}: set {MAX_CONNECTION_AGE_ENV} in the invsaga-mesh "
                "ConfigMap of deploy/k8s/base/kustomization.yaml"
            )


# --- what each process would actually load ---------------------------------------------------


@pytest.mark.parametrize("overlay", ALL_RENDERED)
def test_each_process_loads_settings_that_match_its_manifest(rendered, overlay, tmp_path):
    docs = rendered[overlay]
    namespace = NAMESPACES[overlay]
    for name in SERVICES:
        deployment = one(docs, "Deployment", name)
        (container,) = pod_spec(deployment)["containers"]
        env = env_of(docs, container)

        # The config file: a ConfigMap volume carrying config/invsaga.yaml under that path.
        config_path = PurePosixPath(env["INVSAGA_CONFIG"])
        _, volume = mount_for(deployment, container, str(config_path))
        config_map = one(docs, "ConfigMap", volume["configMap"]["name"])
        local_config = tmp_path / f"{name}.yaml"
        local_config.write_text(config_map["data"][config_path.name], encoding="utf-8")
        settings = load_settings(name, env={**env, "INVSAGA_CONFIG": str(local_config)})

        assert settings.port == port_named(container, "grpc")
        assert settings.metrics_port == port_named(container, "metrics")
        assert settings.database_url.startswith("postgresql+psycopg://")
        data_mount, data_volume = mount_for(deployment, container, settings.data_dir)
        assert "emptyDir" in data_volume and not data_mount.get("readOnly")

        # Shutdown: endpoints drain during preStop, then the server gets its full grace period.
        pod = pod_spec(deployment)
        assert prestop_sleep_seconds(container) + settings.grace_period < pod["terminationGracePeriodSeconds"]

        if name != "coordinator":
            continue
        for target in SERVICES:
            address = settings.endpoint(target)
            match = re.fullmatch(r"dns:///([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local:(\d+)", address)
            assert match, f"{target}: {address!r} is not a dns:/// cluster address"
            service_name, service_namespace, port = match.group(1), match.group(2), int(match.group(3))
            assert service_namespace == namespace, address
            service = one(docs, "Service", service_name)
            target_deployment = one(docs, "Deployment", target)
            assert service["spec"]["selector"] == target_deployment["spec"]["selector"]["matchLabels"]
            assert port in [p["port"] for p in service["spec"]["ports"]]
            # Client-side round_robin needs every pod's address, not one virtual IP.
            if target in PARTICIPANTS:
                assert service["spec"].get("clusterIP") == "None", f"{target} must be dialled headless"


@pytest.mark.parametrize("overlay", ALL_RENDERED)
def test_the_mounted_config_is_the_repository_config(rendered, overlay):
    docs = rendered[overlay]
    expected = (REPO / "config" / "invsaga.yaml").read_text(encoding="utf-8")
    for workload, container in invsaga_containers(docs):
        config_path = PurePosixPath(env_of(docs, container)["INVSAGA_CONFIG"])
        _, volume = mount_for(workload, container, str(config_path))
        mounted = one(docs, "ConfigMap", volume["configMap"]["name"])["data"][config_path.name]
        assert mounted == expected, "deploy/k8s/base/invsaga.yaml differs from config/invsaga.yaml: copy it again"


@pytest.mark.parametrize("overlay", ALL_RENDERED)
def test_migrations_job_migrates_the_database_the_processes_use(rendered, overlay):
    docs = rendered[overlay]
    job = one(docs, "Job", "invsaga-migrate")
    (container,) = pod_spec(job)["containers"]
    assert container["command"] == ["invsaga", "migrate"]
    assert pod_spec(job)["restartPolicy"] in ("Never", "OnFailure")
    database_urls = {env_of(docs, c)["INVSAGA_DATABASE_URL"] for _, c in invsaga_containers(docs)}
    assert len(database_urls) == 1


# --- overlays --------------------------------------------------------------------------------


def test_dev_runs_its_own_postgres_and_points_the_processes_at_it(rendered):
    docs = rendered["dev"]
    statefulset = one(docs, "StatefulSet", "postgres")
    service = one(docs, "Service", "postgres")
    assert service["spec"]["selector"] == statefulset["spec"]["selector"]["matchLabels"]
    (container,) = pod_spec(statefulset)["containers"]
    credentials = env_of(docs, container)

    url = urlsplit(
        env_of(docs, pod_spec(one(docs, "Deployment", "coordinator"))["containers"][0])["INVSAGA_DATABASE_URL"]
    )
    assert url.hostname == "postgres"
    assert url.port == 5432 and 5432 in [p["port"] for p in service["spec"]["ports"]]
    assert url.username == credentials["POSTGRES_USER"]
    assert url.password == credentials["POSTGRES_PASSWORD"]
    assert url.path.lstrip("/") == credentials["POSTGRES_DB"]


def test_prod_keeps_two_replicas_of_every_process(rendered):
    docs = rendered["prod"]
    for name in SERVICES:
        assert one(docs, "Deployment", name)["spec"]["replicas"] >= 2, name
        assert one(docs, "HorizontalPodAutoscaler", name)["spec"]["minReplicas"] >= 2, name
        pdb = one(docs, "PodDisruptionBudget", name)["spec"]
        assert pdb.get("maxUnavailable") == 1 or pdb.get("minAvailable", 0) < 2, name


def test_prod_mounts_the_tls_files_its_database_url_names(rendered):
    docs = rendered["prod"]
    assert not find(docs, "StatefulSet"), "prod uses an external PostgreSQL"
    for workload, container in invsaga_containers(docs):
        url = urlsplit(env_of(docs, container)["INVSAGA_DATABASE_URL"])
        params = {k: v[0] for k, v in parse_qs(url.query).items()}
        assert params.get("sslmode") == "verify-full", workload["metadata"]["name"]
        for key in ("sslrootcert", "sslcert", "sslkey"):
            path = PurePosixPath(params[key])
            mount, volume = mount_for(workload, container, str(path))
            assert mount.get("readOnly") is True
            secret = one(docs, "Secret", volume["secret"]["secretName"])
            assert str(path.relative_to(mount["mountPath"])) in secret["data"], f"{key}: {path}"


# --- authentication (docs/security.md) -------------------------------------------------------

EXPECTED_AUTH = {"base": "", "dev": "off", "prod": "token"}


def _loaded_settings(docs: list[dict], name: str, tmp_path) -> Any:
    deployment = one(docs, "Deployment", name)
    (container,) = pod_spec(deployment)["containers"]
    env = env_of(docs, container)
    _, volume = mount_for(deployment, container, env["INVSAGA_CONFIG"])
    local_config = tmp_path / f"{name}.yaml"
    local_config.write_text(
        one(docs, "ConfigMap", volume["configMap"]["name"])["data"]["invsaga.yaml"], encoding="utf-8"
    )
    return load_settings(name, env={**env, "INVSAGA_CONFIG": str(local_config)})


@pytest.mark.parametrize("overlay", ALL_RENDERED)
def test_each_overlay_chooses_how_callers_are_checked(rendered, overlay, tmp_path):
    """base: nothing configured (every RPC refused); dev: off; prod: tokens, and required."""
    for name in SERVICES:
        settings = _loaded_settings(rendered[overlay], name, tmp_path)
        assert settings.auth_mode == EXPECTED_AUTH[overlay], name
        assert settings.require_auth == (overlay == "prod"), name


def test_prod_gives_each_process_its_own_service_token(rendered, tmp_path):
    """The coordinator's token is a coordinator's, each caller participant's a service named
    after it; processes that call no one get none, and nobody another's."""
    docs = rendered["prod"]
    callers = {
        "coordinator": ("coordinator", ""),
        **{p: ("service", p) for p in ("inventory", "allocation", "logistics")},
    }
    tokens = set()
    for name in SERVICES:
        settings = _loaded_settings(docs, name, tmp_path)
        grants = {digest: (role, who) for digest, role, who in settings.auth_tokens}
        if name not in callers:
            assert not settings.service_token, name
            continue
        assert grants.get(hash_token(settings.service_token)) == callers[name], name
        tokens.add(settings.service_token)
    assert len(tokens) == len(callers)
