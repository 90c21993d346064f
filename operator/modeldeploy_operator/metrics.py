"""The operator's own Prometheus metrics."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

RECONCILES = Counter("modeldeploy_operator_reconciles_total", "Reconciles, by result.", ["result"])
RECONCILE_SECONDS = Histogram(
    "modeldeploy_operator_reconcile_duration_seconds",
    "Time to reconcile one ModelDeployment.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
API_WRITES = Counter(
    "modeldeploy_operator_api_writes_total", "Writes sent to the Kubernetes API, by resource.", ["kind"]
)
API_READS = Counter(
    "modeldeploy_operator_api_reads_total",
    "Reads (GET, LIST) sent to the Kubernetes API by the operator's own code (not kopf's watches), by resource.",
    ["kind"],
)
ROLLBACKS = Counter("modeldeploy_operator_rollbacks_total", "Automatic rollbacks, by reason.", ["reason"])
SCRAPES = Counter(
    "modeldeploy_operator_pod_scrapes_total",
    "Runtime pods' /metrics read by the post-rollout analysis, by result (ok, error).",
    ["result"],
)
