"""The Deployment that runs the model: one `runtime` container configured through MODELDEPLOY_* env
(see docs/architecture.md), hardened, probed on the v2 health endpoints."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

import modeldeploy_contract as contract

from .. import api, naming, surge
from .common import Settings, Target, object_meta
from .source import source_env, source_mount, source_volume

GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
MODELS_VOLUME = "models"
# After SIGTERM the runtime keeps serving this long, readiness off, while the endpoint leaves
# kube-proxy's rules (within the default 30 s grace period, with its in-flight drain).
DRAIN_DELAY_S = 5


def model_location(spec: api.ModelSource) -> tuple[str, dict[str, Any] | None]:
    """Where the runtime finds the model, and the volume to mount for it (PVC URIs only)."""
    uri = spec.uri
    if uri.startswith("pvc://"):
        claim, _, path = uri[len("pvc://") :].partition("/")
        volume = {"name": MODELS_VOLUME, "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        return f"{contract.MODELS_MOUNT}/{path}", volume
    if uri.startswith("file://"):
        return urlparse(uri).path, None
    return uri, None  # an absolute path in the image, or an http(s)/s3/gs URI the runtime downloads


GOLDEN_SET_VOLUME = "golden-set"


def golden_set_location(spec: api.ModelDeploymentSpec) -> tuple[str, dict[str, Any] | None]:
    """Where the runtime finds the golden set, and the volume to mount for it: none when it is
    not on a PVC, or on the model's own claim (mounted already)."""
    golden = spec.model.golden_set
    if golden is None:
        return "", None
    if golden.uri.startswith("pvc://"):
        claim, _, path = golden.uri[len("pvc://") :].partition("/")
        _, model_volume = model_location(spec.model)
        if model_volume is not None and model_volume["persistentVolumeClaim"]["claimName"] == claim:
            return f"{contract.MODELS_MOUNT}/{path}", None
        volume = {"name": GOLDEN_SET_VOLUME, "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        return f"{contract.GOLDEN_SET_MOUNT}/{path}", volume
    if golden.uri.startswith("file://"):
        return urlparse(golden.uri).path, None
    return golden.uri, None


def golden_set_env(spec: api.ModelDeploymentSpec) -> dict[str, str]:
    golden = spec.model.golden_set
    if golden is None:
        return {}
    path, _ = golden_set_location(spec)
    return {
        "MODELDEPLOY_GOLDEN_SET_PATH": path,
        "MODELDEPLOY_GOLDEN_SET_SHA256": golden.sha256 or "",
        "MODELDEPLOY_GOLDEN_SET_MAX_ABS_ERROR": "" if golden.max_abs_error is None else f"{golden.max_abs_error:g}",
        "MODELDEPLOY_GOLDEN_SET_MAX_REL_ERROR": "" if golden.max_rel_error is None else f"{golden.max_rel_error:g}",
        "MODELDEPLOY_GOLDEN_SET_MIN_TOP1_AGREEMENT": f"{golden.min_top1_agreement:g}",
    }


def require_gpu(spec: api.ModelDeploymentSpec) -> bool:
    return spec.runtime.require_gpu if spec.runtime.require_gpu is not None else spec.resources.gpu > 0


def runtime_env(target: Target) -> list[dict[str, Any]]:
    spec = target.spec
    runtime = spec.runtime
    path, _ = model_location(spec.model)
    values = {
        "MODELDEPLOY_MODEL_PATH": path,
        "MODELDEPLOY_MODEL_SHA256": spec.model.sha256 or "",
        "MODELDEPLOY_MODEL_NAME": target.model_name,
        "MODELDEPLOY_MODEL_VERSION": spec.model.version,
        "MODELDEPLOY_MODEL_FORMAT": spec.model.format.value,
        "MODELDEPLOY_BACKEND": spec.backend.value,
        "MODELDEPLOY_PRECISION": runtime.precision.value,
        "MODELDEPLOY_REQUIRE_GPU": "true" if require_gpu(spec) else "false",
        "MODELDEPLOY_MAX_BATCH_SIZE": str(runtime.batching.max_batch_size),
        "MODELDEPLOY_MAX_QUEUE_DELAY_US": str(runtime.batching.max_queue_delay_microseconds),
        "MODELDEPLOY_MAX_QUEUE_SIZE": str(runtime.batching.max_queue_size),
        "MODELDEPLOY_QUEUE_TIMEOUT_US": str(runtime.batching.queue_timeout_microseconds or ""),
        "MODELDEPLOY_LATENCY_BUDGET_MS": f"{runtime.latency_budget.p95_milliseconds:g}",
        "MODELDEPLOY_LATENCY_GATE": runtime.latency_budget.gate.value,
        "MODELDEPLOY_WARMUP_REQUESTS": str(runtime.latency_budget.warmup_requests),
        "MODELDEPLOY_THREADS": str(runtime.threads),
        "MODELDEPLOY_PORT": str(contract.HTTP_PORT),
        "MODELDEPLOY_METRICS_PORT": str(contract.METRICS_PORT),
        contract.GRPC_PORT_ENV: str(contract.GRPC_PORT) if runtime.grpc.enabled else "",
        "MODELDEPLOY_CACHE_DIR": contract.CACHE_MOUNT,
        "MODELDEPLOY_DRAIN_DELAY_S": str(DRAIN_DELAY_S),
        **golden_set_env(spec),
    }
    # An empty value is dropped by the API server; rendering it would look like drift forever.
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in values.items() if v]
    if spec.auth is not None:
        env.append(
            {
                "name": "MODELDEPLOY_AUTH_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": spec.auth.secret_name, "key": spec.auth.secret_key}},
            }
        )
    env += source_env(spec.model)
    # A user's `value: ""` means the same as no value; render it the way the API server stores it.
    return env + [{k: v for k, v in e.items() if not (k == "value" and v == "")} for e in runtime.env]


def container_resources(spec: api.ModelDeploymentSpec) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    requests = dict(spec.resources.requests)
    limits = dict(spec.resources.limits)
    if spec.resources.gpu > 0:
        limits[GPU_RESOURCE] = str(spec.resources.gpu)
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    return resources


def http_probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def render_container(target: Target, settings: Settings) -> dict[str, Any]:
    runtime = target.spec.runtime
    ports = [
        {"name": "http", "containerPort": contract.HTTP_PORT, "protocol": "TCP"},
        {"name": "metrics", "containerPort": contract.METRICS_PORT, "protocol": "TCP"},
    ]
    if runtime.grpc.enabled:
        ports.append({"name": "grpc", "containerPort": contract.GRPC_PORT, "protocol": "TCP"})
    container: dict[str, Any] = {
        "name": naming.CONTAINER_NAME,
        "image": runtime.image or settings.runtime_image,
        "args": list(contract.SERVE_ARGS),  # after the image's ENTRYPOINT
        "ports": ports,
        "env": runtime_env(target),
        "resources": container_resources(target.spec),
        "readinessProbe": http_probe(contract.READY_PATH, period=5, failures=3),
        "livenessProbe": http_probe(contract.LIVE_PATH, period=10, failures=3),
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": contract.UID,
            "runAsGroup": contract.GID,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "cache", "mountPath": contract.CACHE_MOUNT},
        ],
    }
    if runtime.image_pull_policy:
        container["imagePullPolicy"] = runtime.image_pull_policy
    _, model_volume = model_location(target.spec.model)
    if model_volume is not None:
        container["volumeMounts"].append({"name": MODELS_VOLUME, "mountPath": contract.MODELS_MOUNT, "readOnly": True})
    if (mount := source_mount(target.spec.model)) is not None:
        container["volumeMounts"].append(mount)
    _, golden_volume = golden_set_location(target.spec)
    if golden_volume is not None:
        container["volumeMounts"].append(
            {"name": GOLDEN_SET_VOLUME, "mountPath": contract.GOLDEN_SET_MOUNT, "readOnly": True}
        )
    return container


def render_pod_template(target: Target, settings: Settings) -> dict[str, Any]:
    spec = target.spec
    scheduling = spec.scheduling
    cache_volume: dict[str, Any] = (
        {"name": "cache", "persistentVolumeClaim": {"claimName": spec.runtime.cache.claim_name}}
        if spec.runtime.cache.claim_name
        else {"name": "cache", "emptyDir": {}}
    )
    volumes = [{"name": "tmp", "emptyDir": {}}, cache_volume]
    _, model_volume = model_location(spec.model)
    if model_volume is not None:
        volumes.append(model_volume)
    if (credentials := source_volume(spec.model)) is not None:
        volumes.append(credentials)
    _, golden_volume = golden_set_location(spec)
    if golden_volume is not None:
        volumes.append(golden_volume)
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,  # the runtime never talks to the API
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": contract.UID,
            "runAsGroup": contract.GID,
            "fsGroup": contract.GID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [render_container(target, settings)],
        "volumes": volumes,
    }
    node_selector = dict(scheduling.node_selector)
    if spec.resources.gpu_product:
        node_selector[GPU_PRODUCT_LABEL] = spec.resources.gpu_product
    if node_selector:
        pod["nodeSelector"] = node_selector
    tolerations = list(scheduling.tolerations)
    if spec.resources.gpu > 0 and not any(t.get("key") == GPU_RESOURCE for t in tolerations):
        tolerations.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    if tolerations:
        pod["tolerations"] = tolerations
    if scheduling.affinity:
        pod["affinity"] = scheduling.affinity
    if scheduling.priority_class_name:
        pod["priorityClassName"] = scheduling.priority_class_name
    if spec.service_account_name:  # the pod's cloud identity (IRSA, workload identity)
        pod["serviceAccountName"] = spec.service_account_name
    if spec.runtime.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": n} for n in spec.runtime.image_pull_secrets]
    return {
        "metadata": {
            "labels": naming.common_labels(target.name),
            "annotations": {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(contract.METRICS_PORT),
                "prometheus.io/path": "/metrics",
            },
        },
        "spec": pod,
    }


def render_deployment(
    target: Target,
    settings: Settings,
    pod_template: dict[str, Any] | None = None,
    plan: surge.SurgePlan | None = None,
) -> dict[str, Any]:
    """`pod_template` replaces the one rendered from the spec: that is how a rollback restores the
    last known good revision while the user's spec stays as written. `plan` is the update strategy
    the operator decided from the cluster (`surge.plan_surge`); without one, maxSurge auto is
    rendered as it is decided without knowing the cluster's nodes."""
    spec = target.spec
    rollout = spec.rollout
    template = pod_template if pod_template is not None else render_pod_template(target, settings)
    if plan is None:
        plan = surge.plan_surge(rollout, spec.replicas, template, None)
    meta = object_meta(target)
    meta["annotations"] = {surge.PLAN_ANNOTATION: plan.annotation(template)}
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": naming.selector_labels(target.name)},
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": plan.max_surge, "maxUnavailable": plan.max_unavailable},
        },
        "progressDeadlineSeconds": rollout.progress_deadline_seconds,
        "revisionHistoryLimit": 10,
        "template": template,
    }
    if rollout.paused:
        deployment_spec["paused"] = True
    if not spec.autoscaling.enabled:  # with an HPA, replicas belong to it
        deployment_spec["replicas"] = spec.replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": deployment_spec,
    }
