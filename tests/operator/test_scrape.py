"""The operator reads the runtime's own /metrics: parsing the runtime's real output, scraping it over
real HTTP (the server the runtime's metrics port uses), and the watch that does it periodically."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from modeldeploy_operator.analysis import Limits, Verdict
from modeldeploy_operator.scrape import Sample, ScrapeError, difference, parse_metrics, scrape
from modeldeploy_operator.watch import Mode, Track, TrafficWatch
from modeldeploy_runtime.backends.base import BackendInfo
from modeldeploy_runtime.metrics import Metrics
from prometheus_client import generate_latest, start_http_server


def runtime_metrics(model: str = "digits") -> Metrics:
    m = Metrics(model)
    m.model_loaded(BackendInfo("onnxruntime_onnx", ["CPUExecutionProvider"], "cpu", "fp32"), 3.4)
    return m


def serve(m: Metrics) -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start_http_server(port, addr="127.0.0.1", registry=m.registry)
    return port


def test_the_runtime_page_is_read_into_counts_buckets_and_hardware_facts():
    m = runtime_metrics()
    for _ in range(90):
        m.succeeded("rest", 0.004)
    for reason in ["bad_request"] * 6 + ["overloaded"] * 4 + ["unauthorized"] * 7:
        m.failure(reason)
    sample = parse_metrics(generate_latest(m.registry).decode(), "digits")
    assert (sample.successes, sample.failures) == (90, 10)  # a refused token says nothing of the revision
    assert dict(sample.buckets)[0.005] == 90 and dict(sample.buckets)[0.0025] == 0
    assert sample.info == {
        "backend": "onnxruntime",
        "provider": "CPUExecutionProvider",
        "precision": "fp32",
        "device": "cpu",
        "gpu_product": "",
    }
    assert sample.warmup_p95_ms == pytest.approx(3.4)
    assert parse_metrics(generate_latest(m.registry).decode(), "another-model").successes == 0


def test_an_interval_is_the_difference_of_two_scrapes_and_survives_a_restart():
    m = runtime_metrics()
    before = parse_metrics(generate_latest(m.registry).decode(), "digits")
    for _ in range(40):
        m.succeeded("rest", 0.02)
    m.failure("internal")
    after = parse_metrics(generate_latest(m.registry).decode(), "digits")
    interval = difference(before, after)
    assert (interval.requests, interval.errors) == (41, 1)
    assert 10 < interval.p95_ms <= 25
    restarted = Sample(successes=3, failures=0, buckets=((0.005, 3.0), (float("inf"), 3.0)))
    assert difference(after, restarted).requests == 3


def test_scrape_over_http_and_its_refusals():
    m = runtime_metrics()
    port = serve(m)
    assert scrape("127.0.0.1", port, "digits").info["provider"] == "CPUExecutionProvider"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    with pytest.raises(ScrapeError):
        scrape("127.0.0.1", closed, "digits", timeout_s=1)


def wait(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def traffic(m: Metrics, latency_s: float, stop: threading.Event) -> None:
    while not stop.is_set():
        for _ in range(20):
            m.succeeded("rest", latency_s)
        time.sleep(0.05)


@pytest.mark.parametrize(("latency_s", "verdict"), [(0.04, Verdict.FAILED), (0.004, Verdict.BAKING)])
def test_the_watch_judges_a_bake_and_asks_for_a_reconcile_only_on_news(latency_s, verdict):
    m = runtime_metrics()
    port = serve(m)
    triggered = []
    watch = TrafficWatch(lambda ns, name: triggered.append((ns, name)), port=port)
    watch.start()
    stop = threading.Event()
    threading.Thread(target=traffic, args=(m, latency_s, stop), daemon=True).start()
    started = time.time()
    try:
        track = Track(
            Mode.BAKE, "abc", (("pod-0", "127.0.0.1"),), "digits", 0.5,
            limits=Limits(consecutive=3, max_p95_ms=25.0), started=started, bake_s=60.0,
        )  # fmt: skip
        watch.track(("ns", "m"), track)
        wait(lambda: len(watch._memos[("ns", "m")].intervals) >= 3, 10, "three intervals")
        time.sleep(1.0)  # a failed verdict stands; a healthy bake goes on
        decision = watch.decision(("ns", "m"), "abc", started)
        assert decision.verdict is verdict, decision
        if verdict is Verdict.FAILED:
            assert "ms > 25 ms for 3 of 3 intervals" in decision.message
            assert ("ns", "m") in triggered
        else:
            # Healthy and baking: the only news was the hardware facts of the first scrape.
            assert triggered == [("ns", "m")]
        assert watch.facts(("ns", "m"), "abc")[0]["backend"] == "onnxruntime"
    finally:
        stop.set()
        watch.stop()


def test_a_known_good_revision_serving_is_recorded_as_the_baseline_without_reconciles():
    m = runtime_metrics()
    port = serve(m)
    triggered = []
    watch = TrafficWatch(lambda ns, name: triggered.append(name), port=port)
    watch.start()
    stop = threading.Event()
    threading.Thread(target=traffic, args=(m, 0.004, stop), daemon=True).start()
    try:
        watch.track(("ns", "m"), Track(Mode.BASELINE, "good", (("pod-0", "127.0.0.1"),), "digits", 0.3, revision=4))
        baseline = wait(lambda: watch.baseline(("ns", "m"), "good", 20), 10, "a baseline")
        assert baseline.revision == 4 and 2.5 < baseline.p95_ms <= 5 and baseline.error_ratio == 0
        time.sleep(1.0)
        assert triggered == ["m"]  # the hardware facts, once
    finally:
        stop.set()
        watch.stop()
