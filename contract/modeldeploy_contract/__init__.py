"""The contract between the operator and the runtime image: what a kubelet runs, as whom, on which
ports and paths, and how a failed start is reported back.

Both sides import these names: the operator renders its pod spec from them, the Dockerfile's
ENTRYPOINT/CMD/USER must equal them (tests/contract checks the file), and the runtime's start-up
errors and its CLI use them. A defect in exactly this seam once made every real pod crash-loop
while every test was green, so nothing here is spelled a second time anywhere else.

Standard library only: the operator image and the runtime images both carry this package.
"""

from __future__ import annotations

# The image's ENTRYPOINT, and its CMD. The operator renders `args` (never `command`), so a kubelet
# runs ENTRYPOINT + args: `modeldeploy-runtime serve`. An image of the user's own keeps its
# ENTRYPOINT and gets the same args.
ENTRYPOINT = ("modeldeploy-runtime",)
SERVE_ARGS = ("serve",)

# The runtime images' user and group (USER 10001:10001); the rendered securityContext sets both.
UID = 10001
GID = 10001

# Ports: the v2 API, health and /metrics; and /metrics alone, for scrapers a NetworkPolicy admits.
HTTP_PORT = 8080
METRICS_PORT = 9091

# Paths inside the container.
MODELS_MOUNT = "/mnt/models"  # pvc:// models, read-only
GOLDEN_SET_MOUNT = "/mnt/golden-set"  # a pvc:// golden set on another claim than the model's, read-only
CACHE_MOUNT = "/var/cache/modeldeploy"  # downloads and the TensorRT engine cache
TERMINATION_LOG = "/dev/termination-log"  # Kubernetes' default terminationMessagePath

# Probes (GET on the http port).
LIVE_PATH = "/v2/health/live"
READY_PATH = "/v2/health/ready"

# The one line the runtime writes to the termination log when it refuses to start is
# "<prefix>: <details>"; the operator maps the prefix to the reason it reports.
LATENCY_BUDGET_EXCEEDED = "latency budget exceeded"
MODEL_LOAD_FAILED = "model load failed"
GPU_UNAVAILABLE = "gpu unavailable"
INVALID_CONFIGURATION = "invalid configuration"
GOLDEN_SET_MISMATCH = "golden set mismatch"  # the model's answers differ from its golden set
PROVIDER_MISMATCH = "provider mismatch"  # a GPU provider was asked for, another one runs the model
TERMINATION_REASONS = {
    LATENCY_BUDGET_EXCEEDED: "LatencyBudgetExceeded",
    MODEL_LOAD_FAILED: "ModelLoadFailed",
    GPU_UNAVAILABLE: "GPUUnavailable",
    INVALID_CONFIGURATION: "InvalidRuntimeConfig",
    GOLDEN_SET_MISMATCH: "GoldenSetMismatch",
    PROVIDER_MISMATCH: "ProviderMismatch",
}


def termination_message(prefix: str, details: str) -> str:
    return f"{prefix}: {details}"
