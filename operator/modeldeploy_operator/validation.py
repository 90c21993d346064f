"""What the schema cannot say: checks only the operator can make. Each problem names the field and
the fix. A resource with problems gets no children (and keeps any it already had untouched)."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from modeldeploy_contract.engines import SERVES
from modeldeploy_contract.openvino_ir import is_ir

from . import api, k8s_checks
from .render.common import Target
from .render.deployment import runtime_env
from .render.source import scheme

GPU_PRODUCT = re.compile(r"^NVIDIA-[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Problem:
    field: str
    message: str  # says what is wrong and how to fix it
    reason: str = ""  # the Degraded reason, when more precise than the default for its field

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def _problems(found: k8s_checks.Found) -> list[Problem]:
    return [Problem(field, message) for field, message in found]


def _int_or_percent(field: str, value: int | str | None) -> list[Problem]:
    return _problems(k8s_checks.int_or_percent(field, value))


def operator_env_names(spec: api.ModelDeploymentSpec) -> set[str]:
    """The MODELDEPLOY_* variables the operator sets itself: the runtime reads each once, so a
    second one in spec.runtime.env would be a duplicate the API server refuses."""
    own = spec.model_copy(update={"runtime": spec.runtime.model_copy(update={"env": []})})
    return {e["name"] for e in runtime_env(Target("x", "x", "x", own))} | {
        "MODELDEPLOY_MODEL_SHA256",
        "MODELDEPLOY_AUTH_TOKEN",
    }


Spec = api.ModelDeploymentSpec


def _model_uri(spec: Spec) -> list[Problem]:
    model, problems = spec.model, []
    if model.uri.startswith(("http://", "https://")) and not urlparse(model.uri).hostname:
        problems.append(
            Problem("spec.model.uri", f"{model.uri!r} names no host: write it as https://HOST/path/to/model")
        )
    if model.uri.startswith(("http://", "https://")) and not model.sha256:
        problems.append(
            Problem(
                "spec.model.sha256",
                "is required for an http(s) model URI: set it to the file's "
                "sha256 (`sha256sum model.onnx`) so a changed or truncated download is refused",
            )
        )
    return problems


def _golden_set(spec: Spec) -> list[Problem]:
    model, golden, problems = spec.model, spec.model.golden_set, []
    if golden is None:
        return problems
    if golden.uri.startswith(("http://", "https://")):
        if not urlparse(golden.uri).hostname:
            problems.append(
                Problem("spec.model.goldenSet.uri", f"{golden.uri!r} names no host: write it as https://HOST/path")
            )
        if not golden.sha256:
            problems.append(
                Problem(
                    "spec.model.goldenSet.sha256",
                    "is required for an http(s) golden set URI: set it to the file's sha256 (`sha256sum golden.npz`)",
                )
            )
    if golden.uri.startswith(("s3://", "gs://")):
        store = golden.uri.split("://", 1)[0]
        if not model.uri.startswith(f"{store}://"):
            problems.append(
                Problem(
                    "spec.model.goldenSet.uri",
                    f"a {store}:// golden set is read with the model's store settings and credentials, so "
                    f"spec.model.uri must be a {store}:// URI too: put the golden set next to the model, "
                    "or give it as pvc://, file:// or https://",
                )
            )
    return problems


def _engine(spec: Spec) -> list[Problem]:
    """Format, backend, precision and GPUs that cannot go together."""
    model, res, runtime, problems = spec.model, spec.resources, spec.runtime, []
    if model.format == api.ModelFormat.TENSORRT and spec.backend != api.Backend.TENSORRT:
        problems.append(
            Problem(
                "spec.runtime.backend",
                "ONNX Runtime cannot load a serialized TensorRT engine: "
                "set spec.runtime.backend to tensorrt (or omit it), or serve the ONNX model instead",
            )
        )
    if model.format == api.ModelFormat.ONNX and spec.backend == api.Backend.TENSORRT:
        problems.append(
            Problem(
                "spec.runtime.backend",
                "the tensorrt backend loads engines, not ONNX models: build an "
                "engine with `modeldeploy optimize --engine` and set spec.model.format: tensorrt, or keep "
                "backend onnxruntime with precision fp16/int8 to run through its TensorRT provider",
            )
        )
    # TensorRT engines, ONNX on the tensorrt backend and OpenVINO IRs have their own messages
    own_message = model.format in (api.ModelFormat.TENSORRT, api.ModelFormat.OPENVINO) or (
        model.format == api.ModelFormat.ONNX and spec.backend == api.Backend.TENSORRT
    )
    if not own_message and spec.backend not in SERVES[model.format]:
        problems.append(
            Problem(
                "spec.runtime.backend",
                f"backend {spec.backend} cannot serve spec.model.format {model.format}: set "
                f"spec.runtime.backend to {' or '.join(SERVES[model.format])}, or omit it",
            )
        )
    if spec.backend == api.Backend.TENSORRT and res.gpu == 0:
        problems.append(
            Problem("spec.resources.gpu", "TensorRT engines run only on GPUs: set spec.resources.gpu to 1 or more")
        )
    if runtime.precision == api.Precision.BF16 and spec.backend not in (api.Backend.OPENVINO, api.Backend.AUTO):
        problems.append(
            Problem("spec.runtime.precision", "bf16 is served by backend openvino: set spec.runtime.backend")
        )
    if runtime.precision in (api.Precision.FP16, api.Precision.INT8) and res.gpu == 0:
        problems.append(
            Problem(
                "spec.runtime.precision",
                f"{runtime.precision} applies to the TensorRT execution "
                "provider on a GPU: set spec.resources.gpu >= 1, or keep fp32 on CPU and serve an INT8 "
                "model quantized with `modeldeploy optimize --int8`",
            )
        )
    return problems


def _openvino_ir(spec: Spec) -> list[Problem]:
    """An OpenVINO IR is read by OpenVINO alone, from NAME.xml with NAME.bin beside it."""
    model, problems = spec.model, []
    if model.format != api.ModelFormat.OPENVINO:
        if model.format == api.ModelFormat.ONNX and is_ir(model.uri):
            problems.append(
                Problem(
                    "spec.model.format",
                    "is onnx (the default) but spec.model.uri names an .xml file, an OpenVINO IR: set "
                    "spec.model.format to openvino",
                )
            )
        return problems
    if spec.backend not in (api.Backend.OPENVINO, api.Backend.AUTO):
        problems.append(
            Problem(
                "spec.runtime.backend",
                f"{spec.backend} cannot read an OpenVINO IR (spec.model.format: openvino): set "
                "spec.runtime.backend to openvino or auto (or omit it), or serve the ONNX model the IR was "
                "converted from with spec.model.format: onnx",
            )
        )
    if not is_ir(model.uri):
        problems.append(
            Problem(
                "spec.model.uri",
                f"{model.uri!r} does not name an .xml file: an OpenVINO IR is served from NAME.xml with its "
                "weights in NAME.bin beside it; give the URI of the .xml",
            )
        )
    if spec.runtime.precision == api.Precision.FP16:
        problems.append(
            Problem(
                "spec.runtime.precision",
                "fp16 is not served by OpenVINO on the CPU, the only engine reading an IR: set fp32 or bf16",
            )
        )
    return problems


def _gpu_product(spec: Spec) -> list[Problem]:
    res = spec.resources
    if res.gpu_product is None:
        return []
    if res.gpu == 0:
        return [
            Problem(
                "spec.resources.gpuProduct",
                "is set but spec.resources.gpu is 0: request a GPU or remove gpuProduct",
            )
        ]
    if not GPU_PRODUCT.match(res.gpu_product):
        return [
            Problem(
                "spec.resources.gpuProduct",
                f"{res.gpu_product!r} is not a product name as GPU "
                "Feature Discovery labels nodes (e.g. NVIDIA-A100-SXM4-80GB, NVIDIA-H100-80GB-HBM3): "
                "see `kubectl get nodes -L nvidia.com/gpu.product`",
            )
        ]
    return []


def _resources_and_env(spec: Spec) -> list[Problem]:
    res = spec.resources
    return _problems(k8s_checks.check_resources("spec.resources", res.requests, res.limits)) + _problems(
        k8s_checks.check_env("spec.runtime.env", spec.runtime.env, operator_env_names(spec))
    )


def _network_policy(spec: Spec) -> list[Problem]:
    policy = spec.network_policy
    if not policy.enabled:
        return []
    return _problems(k8s_checks.check_peers("spec.networkPolicy.allowFrom", policy.allow_from or [])) + _problems(
        k8s_checks.check_peers("spec.networkPolicy.allowMetricsFrom", policy.allow_metrics_from)
    )


def _autoscaling(spec: Spec) -> list[Problem]:
    scaling, problems = spec.autoscaling, []
    if not scaling.enabled:
        return problems
    for i, metric in enumerate(scaling.metrics):
        _, found = k8s_checks.quantity(
            f"spec.autoscaling.metrics[{i}].targetAverageValue", metric.target_average_value, positive=True
        )
        problems += _problems(found)
    if scaling.min_replicas > scaling.max_replicas:
        problems.append(
            Problem(
                "spec.autoscaling.minReplicas",
                f"{scaling.min_replicas} is greater than "
                f"spec.autoscaling.maxReplicas ({scaling.max_replicas}): make minReplicas <= "
                "maxReplicas",
            )
        )
    uses_cpu = scaling.target_cpu_utilization_percentage is not None or not scaling.metrics
    if uses_cpu and "cpu" not in spec.resources.requests:
        problems.append(
            Problem(
                "spec.resources.requests.cpu",
                "is needed to scale on CPU utilisation (the "
                "default when no metrics are given): set a CPU request, or scale on "
                "spec.autoscaling.metrics only",
            )
        )
    return problems


def _rollout(spec: Spec) -> list[Problem]:
    rollout, problems = spec.rollout, []
    if rollout.max_surge != "auto":
        problems += [
            Problem(p.field, p.message.replace("neither a number", "neither auto, a number"))
            for p in _int_or_percent("spec.rollout.maxSurge", rollout.max_surge)
        ]
    problems += _int_or_percent("spec.rollout.maxUnavailable", rollout.max_unavailable)
    if rollout.max_surge in (0, "0%") and rollout.max_unavailable in (0, "0%"):
        problems.append(
            Problem(
                "spec.rollout.maxUnavailable",
                "maxSurge and maxUnavailable cannot both be 0: no "
                "pod could ever be replaced. Keep maxSurge 0 (no extra GPUs) and set maxUnavailable 1",
            )
        )
    return problems


def _disruption_budget(spec: Spec) -> list[Problem]:
    pdb, problems = spec.pod_disruption_budget, []
    if pdb.enabled and pdb.min_available is not None and pdb.max_unavailable is not None:
        problems.append(Problem("spec.podDisruptionBudget", "set minAvailable or maxUnavailable, not both"))
    problems += _int_or_percent("spec.podDisruptionBudget.minAvailable", pdb.min_available)
    problems += _int_or_percent("spec.podDisruptionBudget.maxUnavailable", pdb.max_unavailable)
    if pdb.enabled:
        problems += _blocks_every_eviction(spec)
    return problems


def _gpu_as_resource(spec: Spec) -> list[Problem]:
    res = spec.resources
    if "nvidia.com/gpu" in res.requests or "nvidia.com/gpu" in res.limits:
        return [Problem("spec.resources", "set GPUs with spec.resources.gpu, not nvidia.com/gpu in requests/limits")]
    return []


def _blocks_every_eviction(spec: api.ModelDeploymentSpec) -> list[Problem]:
    """A budget that keeps every pod forbids every voluntary eviction: a node drain then hangs."""
    least = spec.autoscaling.min_replicas if spec.autoscaling.enabled else spec.replicas
    keep = spec.pod_disruption_budget.min_available
    if least == 0 or keep is None:
        return []
    if keep == "100%" or (isinstance(keep, int) and keep >= least):
        return [
            Problem(
                "spec.podDisruptionBudget.minAvailable",
                f"{keep!r} keeps all of the {least} pod(s) there can be, so no pod could ever be evicted "
                "and a node drain would hang: set it below the replica count, or use maxUnavailable: 1",
            )
        ]
    return []


def check_auth_secret(auth: api.Auth | None, secret: dict[str, Any] | None) -> list[Problem]:
    """`secret` is the Secret as read from the API, or None when it does not exist."""
    if auth is None:
        return []
    if secret is None:
        return [
            Problem(
                "spec.auth.secretName",
                f"Secret {auth.secret_name!r} does not exist in this namespace: "
                f"create it (kubectl create secret generic {auth.secret_name} "
                f"--from-literal={auth.secret_key}=TOKEN) or fix the name",
            )
        ]
    # Anyone who may read this resource reads its status: it names no other key of the Secret.
    data = secret.get("data") or {}
    if auth.secret_key not in data:
        return [
            Problem(
                "spec.auth.secretKey",
                f"Secret {auth.secret_name!r} has no key {auth.secret_key!r}: set spec.auth.secretKey or add the key",
            )
        ]
    if not base64.b64decode(data[auth.secret_key] or "").strip():
        return [
            Problem(
                "spec.auth.secretKey",
                f"key {auth.secret_key!r} of Secret {auth.secret_name!r} is empty: put the token in it",
            )
        ]
    return []


def source_problems(spec: api.ModelDeploymentSpec) -> list[Problem]:
    """Settings of an object-store source that do not fit its URI."""
    model, kind = spec.model, scheme(spec.model)
    problems = []
    if model.s3 is not None and kind != "s3":
        problems.append(Problem("spec.model.s3", "applies only to an s3:// URI: remove it or change spec.model.uri"))
    if model.gcs is not None and kind != "gs":
        problems.append(Problem("spec.model.gcs", "applies only to a gs:// URI: remove it or change spec.model.uri"))
    if model.credentials is not None and kind is None:
        problems.append(
            Problem(
                "spec.model.credentials",
                "applies only to s3:// and gs:// URIs: remove it (an http(s) URL is fetched without credentials)",
            )
        )
    if kind == "s3" and model.s3 is not None and model.s3.endpoint and model.s3.addressing == api.S3Addressing.VIRTUAL:
        host = urlparse(model.s3.endpoint).hostname or ""
        if host.replace(".", "").isdigit() or host == "localhost":
            problems.append(
                Problem(
                    "spec.model.s3.addressing",
                    f"virtual-host addressing puts the bucket in the host name, which {host!r} cannot take: "
                    "set it to path",
                )
            )
    return problems


# Every check of a spec, in the order their problems are reported. Each is pure and small.
CHECKS = (
    _model_uri,
    source_problems,
    _golden_set,
    _engine,
    _openvino_ir,
    _gpu_product,
    _resources_and_env,
    _network_policy,
    _autoscaling,
    _rollout,
    _disruption_budget,
    _gpu_as_resource,
)


def validate_spec(spec: Spec, name: str | None = None) -> list[Problem]:
    """Every problem of the spec. `name`: the resource's name, which every child takes."""
    problems: list[Problem] = _problems(k8s_checks.check_name(name)) if name is not None else []
    for check in CHECKS:
        problems += check(spec)
    return problems
