"""Reads one runtime pod's /metrics on its metrics port (the pod IP, no Prometheus) into the few
figures the analysis and the hardware status need. The text is parsed with prometheus_client's own
parser; names and labels are those of docs/architecture.md.
"""

from __future__ import annotations

import http.client
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from .analysis import Figures

REQUESTS = "modeldeploy_inference_requests"
DURATION = "modeldeploy_request_duration_seconds"
INFO = "modeldeploy_runtime_info"
WARMUP_P95 = "modeldeploy_warmup_p95_seconds"
# A client without a valid token says nothing about the revision it was refused by.
NOT_COUNTED = frozenset({"unauthorized"})
MAX_BYTES = 1 << 20  # a runtime's page is a few KiB; more is not ours


class ScrapeError(Exception):
    pass


@dataclass(frozen=True)
class Sample:
    """Cumulative counters of one pod at one moment (since its process started)."""

    successes: float
    failures: float
    buckets: tuple[tuple[float, float], ...]
    info: dict[str, str] | None = None
    warmup_p95_ms: float | None = None


def parse_metrics(text: str, model: str) -> Sample:
    successes = failures = 0.0
    buckets: dict[float, float] = {}
    info = None
    warmup = None
    for family in text_string_to_metric_families(text):
        if family.name == REQUESTS:
            for s in family.samples:
                if s.name != REQUESTS + "_total" or s.labels.get("model") != model:
                    continue
                if s.labels.get("outcome") == "success":
                    successes += s.value
                elif s.labels.get("reason") not in NOT_COUNTED:
                    failures += s.value
        elif family.name == DURATION:
            for s in family.samples:
                if s.name == DURATION + "_bucket" and s.labels.get("model") == model:
                    le = float(s.labels["le"])  # summed over protocols (rest, grpc)
                    buckets[le] = buckets.get(le, 0.0) + s.value
        elif family.name == INFO:
            for s in family.samples:
                if s.labels.get("model") == model and s.value == 1:
                    info = {k: v for k, v in s.labels.items() if k != "model"}
        elif family.name == WARMUP_P95:
            for s in family.samples:
                if s.labels.get("model") == model:
                    warmup = s.value * 1000.0
    return Sample(successes, failures, tuple(sorted(buckets.items())), info, warmup)


def fetch(ip: str, port: int, timeout_s: float = 2.0) -> str:
    """GET http://ip:port/metrics; ScrapeError on anything but a 200 with a sane body."""
    host = f"[{ip}]" if ":" in ip else ip
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.request("GET", "/metrics", headers={"Accept": "text/plain"})
        resp = conn.getresponse()
        body = resp.read(MAX_BYTES + 1)
    except (OSError, http.client.HTTPException) as exc:
        raise ScrapeError(f"{ip}:{port}: {exc}") from exc
    finally:
        conn.close()
    if resp.status != 200:
        raise ScrapeError(f"{ip}:{port}: HTTP {resp.status}")
    if len(body) > MAX_BYTES:
        raise ScrapeError(f"{ip}:{port}: /metrics larger than {MAX_BYTES} bytes")
    return body.decode("utf-8", "replace")


def scrape(ip: str, port: int, model: str, timeout_s: float = 2.0) -> Sample:
    try:
        return parse_metrics(fetch(ip, port, timeout_s), model)
    except ValueError as exc:  # the parser's complaint about a page that is not the exposition format
        raise ScrapeError(f"{ip}:{port}: unreadable metrics: {exc}") from exc


def difference(before: Sample, after: Sample) -> Figures:
    """One pod's interval. A counter that went down means the process restarted: its counts since
    the restart are the interval's (as Prometheus' rate() treats resets)."""
    reset = after.successes < before.successes or after.failures < before.failures
    prev = {le: 0.0 for le, _ in after.buckets} if reset else dict(before.buckets)
    if not reset and any(count < prev.get(le, 0.0) for le, count in after.buckets):
        reset, prev = True, {le: 0.0 for le, _ in after.buckets}
    successes = after.successes - (0.0 if reset else before.successes)
    failures = after.failures - (0.0 if reset else before.failures)
    buckets = tuple((le, count - prev.get(le, 0.0)) for le, count in after.buckets)
    return Figures(requests=round(successes + failures), errors=round(failures), buckets=buckets)
