"""What the schema cannot say: checks only the operator can make. Each problem names the field and
the fix. A resource with problems gets no children (and keeps any it already had untouched)."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Any

from . import api

GPU_PRODUCT = re.compile(r"^NVIDIA-[A-Za-z0-9][A-Za-z0-9._-]*$")
PERCENT = re.compile(r"^(100|[1-9]?[0-9])%$")


@dataclass(frozen=True)
class Problem:
    field: str
    message: str  # says what is wrong and how to fix it

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def _int_or_percent(field: str, value: int | str | None) -> list[Problem]:
    if value is None or isinstance(value, int) or PERCENT.match(value):
        return []
    return [Problem(field, f"{value!r} is neither a number nor a percentage like '25%'")]


def validate_spec(spec: api.ModelDeploymentSpec) -> list[Problem]:
    problems: list[Problem] = []
    model, res, runtime = spec.model, spec.resources, spec.runtime
    if model.uri.startswith(("http://", "https://")) and not model.sha256:
        problems.append(
            Problem(
                "spec.model.sha256",
                "is required for an http(s) model URI: set it to the file's "
                "sha256 (`sha256sum model.onnx`) so a changed or truncated download is refused",
            )
        )
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
    if res.gpu_product is not None:
        if res.gpu == 0:
            problems.append(
                Problem(
                    "spec.resources.gpuProduct",
                    "is set but spec.resources.gpu is 0: request a GPU or remove gpuProduct",
                )
            )
        elif not GPU_PRODUCT.match(res.gpu_product):
            problems.append(
                Problem(
                    "spec.resources.gpuProduct",
                    f"{res.gpu_product!r} is not a product name as GPU "
                    "Feature Discovery labels nodes (e.g. NVIDIA-A100-SXM4-80GB, NVIDIA-H100-80GB-HBM3): "
                    "see `kubectl get nodes -L nvidia.com/gpu.product`",
                )
            )
    scaling = spec.autoscaling
    if scaling.enabled:
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
        if uses_cpu and "cpu" not in res.requests:
            problems.append(
                Problem(
                    "spec.resources.requests.cpu",
                    "is needed to scale on CPU utilisation (the "
                    "default when no metrics are given): set a CPU request, or scale on "
                    "spec.autoscaling.metrics only",
                )
            )
    rollout = spec.rollout
    problems += _int_or_percent("spec.rollout.maxSurge", rollout.max_surge)
    problems += _int_or_percent("spec.rollout.maxUnavailable", rollout.max_unavailable)
    if rollout.max_surge in (0, "0%") and rollout.max_unavailable in (0, "0%"):
        problems.append(
            Problem(
                "spec.rollout.maxUnavailable",
                "maxSurge and maxUnavailable cannot both be 0: no "
                "pod could ever be replaced. Keep maxSurge 0 (no extra GPUs) and set maxUnavailable 1",
            )
        )
    pdb = spec.pod_disruption_budget
    if pdb.enabled and pdb.min_available is not None and pdb.max_unavailable is not None:
        problems.append(Problem("spec.podDisruptionBudget", "set minAvailable or maxUnavailable, not both"))
    problems += _int_or_percent("spec.podDisruptionBudget.minAvailable", pdb.min_available)
    problems += _int_or_percent("spec.podDisruptionBudget.maxUnavailable", pdb.max_unavailable)
    if "nvidia.com/gpu" in res.requests or "nvidia.com/gpu" in res.limits:
        problems.append(
            Problem("spec.resources", "set GPUs with spec.resources.gpu, not nvidia.com/gpu in requests/limits")
        )
    return problems


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
    data = secret.get("data") or {}
    if auth.secret_key not in data:
        keys = ", ".join(sorted(data)) or "none"
        return [
            Problem(
                "spec.auth.secretKey",
                f"Secret {auth.secret_name!r} has no key {auth.secret_key!r} "
                f"(keys: {keys}): set spec.auth.secretKey or add the key",
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
