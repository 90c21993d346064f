"""Prometheus metrics of the runtime, with the names fixed in docs/architecture.md.

Durations are histograms so that p95 can be aggregated across replicas (a summary's quantiles
cannot). Label children are bound once, so the hot path does one lock-free-ish increment each.
GPU figures are read from NVML at scrape time, and NVML is imported only where a GPU exists.
What the model really runs on (backend, provider, precision, GPU product) and its warm-up p95 are
set once when the model is loaded, so the operator reads the hardware truth from the same scrape as
the traffic figures it judges a rollout by.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.process_collector import ProcessCollector

log = logging.getLogger(__name__)

DURATION_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# The `protocol` label of the request metrics: which adapter a request came through.
PROTOCOLS = ("rest", "grpc")


class Metrics:
    def __init__(self, model: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.model = model
        r = self.registry
        self._requests = Counter(
            "modeldeploy_inference_requests",
            "Inference requests by outcome, reason and protocol",
            ["model", "outcome", "reason", "protocol"],
            registry=r,
        )
        self._request_s = Histogram(
            "modeldeploy_request_duration_seconds",
            "Time from request received to response ready",
            ["model", "protocol"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self._queue_s = Histogram(
            "modeldeploy_queue_duration_seconds",
            "Time a request waited for its batch",
            ["model"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self._compute_s = Histogram(
            "modeldeploy_compute_duration_seconds",
            "Time the backend ran one batch",
            ["model"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self._batch = Histogram(
            "modeldeploy_batch_size", "Rows in each batch run", ["model"], buckets=BATCH_BUCKETS, registry=r
        )
        self._inflight = Gauge(
            "modeldeploy_inflight_requests", "Inference requests being served", ["model"], registry=r
        )
        self._ready = Gauge(
            "modeldeploy_model_ready",
            "1 when the model is loaded, warmed and passed its gate",
            ["model"],
            registry=r,
        )
        self._info = Gauge(
            "modeldeploy_runtime_info",
            "1 for what the model really runs on: backend, execution provider, precision, GPU product",
            ["model", "backend", "provider", "precision", "device", "gpu_product"],
            registry=r,
        )
        self._warmup_p95 = Gauge(
            "modeldeploy_warmup_p95_seconds",
            "p95 latency of the batch-1 warm-up inferences, as the latency gate judged it",
            ["model"],
            registry=r,
        )
        ProcessCollector(registry=r)
        self._success = {p: self._requests.labels(model, "success", "", p) for p in PROTOCOLS}
        self._request_by = {p: self._request_s.labels(model, p) for p in PROTOCOLS}
        self.queue_s = self._queue_s.labels(model)
        self.compute_s = self._compute_s.labels(model)
        self.batch = self._batch.labels(model)
        self.inflight = self._inflight.labels(model)
        self.ready = self._ready.labels(model)
        self._failures: dict[tuple[str, str], Counter] = {}

    def succeeded(self, protocol: str, duration_s: float) -> None:
        self._success[protocol].inc()
        self._request_by[protocol].observe(duration_s)

    def failure(self, reason: str, protocol: str = "rest") -> None:
        child = self._failures.get((reason, protocol))
        if child is None:
            child = self._failures[reason, protocol] = self._requests.labels(self.model, "failure", reason, protocol)
        child.inc()

    def batch_done(self, queue_waits: Iterable[float], compute_s: float, rows: int) -> None:
        for wait in queue_waits:
            self.queue_s.observe(wait)
        self.compute_s.observe(compute_s)
        self.batch.observe(rows)

    def model_loaded(self, info, warmup_p95_ms: float | None) -> None:
        """Record how the loaded model is really being run (a BackendInfo) and its warm-up p95."""
        backend = info.platform.split("_")[0]  # the engine serving, also when `auto` chose it
        provider = info.providers[0] if info.providers else ""
        gpu_product = gpu_product_name() if info.device == "gpu" else ""
        self._info.labels(self.model, backend, provider, info.precision, info.device, gpu_product).set(1)
        if warmup_p95_ms is not None:
            self._warmup_p95.labels(self.model).set(warmup_p95_ms / 1000.0)

    def enable_gpu(self) -> bool:
        """Register the NVML collector when a GPU is visible; False (and nothing imported) otherwise."""
        if not gpu_present():
            return False
        try:
            import pynvml  # from nvidia-ml-py, in the gpu extra only

            pynvml.nvmlInit()
        except Exception as exc:  # ImportError, or NVMLError when the driver is absent
            log.warning("GPU metrics disabled: NVML unavailable (%s)", exc)
            return False
        self.registry.register(NvmlCollector(pynvml))
        return True


def gpu_present() -> bool:
    return os.path.exists("/dev/nvidiactl") or bool(
        os.environ.get("NVIDIA_VISIBLE_DEVICES", "").strip() not in ("", "void", "none")
    )


def gpu_product_name() -> str:
    """The first visible GPU's product name as NVML reports it (e.g. `NVIDIA H100 80GB HBM3`), or ""."""
    if not gpu_present():
        return ""
    try:
        import pynvml

        pynvml.nvmlInit()
        name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
    except Exception as exc:  # ImportError, or NVMLError when the driver is absent
        log.debug("GPU product unknown: %s", exc)
        return ""
    return name.decode() if isinstance(name, bytes) else str(name)


class NvmlCollector:
    """Reads utilisation and memory of every visible GPU when Prometheus scrapes."""

    def __init__(self, nvml) -> None:
        self.nvml = nvml

    def collect(self):
        util = GaugeMetricFamily("modeldeploy_gpu_utilization_ratio", "GPU busy fraction (NVML)", labels=["gpu"])
        mem = GaugeMetricFamily("modeldeploy_gpu_memory_used_bytes", "GPU memory used (NVML)", labels=["gpu"])
        try:
            for i in range(self.nvml.nvmlDeviceGetCount()):
                handle = self.nvml.nvmlDeviceGetHandleByIndex(i)
                util.add_metric([str(i)], self.nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0)
                mem.add_metric([str(i)], float(self.nvml.nvmlDeviceGetMemoryInfo(handle).used))
        except Exception as exc:
            log.debug("NVML read failed: %s", exc)
        yield util
        yield mem
