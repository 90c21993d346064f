"""`modeldeploy bench`: in-process on model files, and over HTTP against the runtime's real v2 server.

These check what the reports contain and that they are consistent, never how fast anything is
(speed is measured by bench/, with figures in bench/README.md)."""

from __future__ import annotations

import json

import pytest
from modeldeploy_runtime.measure.bench import summarize
from optimize_helpers import DEMO_MODEL, run_cli
from ports import free_port


def check_rows(rows, batch_sizes, concurrencies=(1,)):
    assert [(r["batch_size"], r["concurrency"]) for r in rows] == [(b, c) for b in batch_sizes for c in concurrencies]
    for r in rows:
        assert r["errors"] == 0
        assert r["requests"] >= 5
        assert 0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"]
        # throughput is samples per second: requests x batch over the measured time
        assert r["throughput"] == pytest.approx(r["requests"] * r["batch_size"] / r["seconds"])


def test_bench_model_files_side_by_side_as_table_and_json(tmp_path):
    int8 = tmp_path / "digits.int8.onnx"
    assert run_cli("optimize", "quantize", str(DEMO_MODEL), "-o", str(int8), "--input-range", "0,16").returncode == 0
    out = tmp_path / "bench.json"
    result = run_cli(
        "bench", str(DEMO_MODEL), str(int8), "--batch-sizes", "1,4", "--duration", "0.3", "--json", str(out)
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())
    assert [r["target"] for r in rows] == [str(DEMO_MODEL)] * 2 + [str(int8)] * 2
    check_rows(rows[:2], [1, 4])
    check_rows(rows[2:], [1, 4])
    assert all(r["runs_on"] == "onnxruntime CPUExecutionProvider" for r in rows)
    header = result.stdout.splitlines()[0].split()
    assert header[:3] == ["model", "runs", "on"] and "p99" in header and "inferences/s" in header
    assert "digits-mlp.onnx" in result.stdout and "digits.int8.onnx" in result.stdout


def test_bench_over_http_with_binary_and_json_tensors(serve, tmp_path):
    url = serve(DEMO_MODEL, "digits")
    for protocol in ("binary", "json"):
        out = tmp_path / f"{protocol}.json"
        result = run_cli(
            "bench", "--url", url, "--model-name", "digits", "--protocol", protocol,
            "--batch-sizes", "1,4", "--concurrency", "1,3", "--duration", "0.3", "--json", str(out),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        rows = json.loads(out.read_text())
        check_rows(rows, [1, 4], [1, 3])
        assert all(r["runs_on"] == f"http {protocol}" for r in rows)
        assert all(r["client_cpu"] >= 0 for r in rows)
        assert "client cpu" in result.stdout


def test_bench_over_grpc_with_raw_tensors(serve, tmp_path):
    grpc_port = free_port()
    serve(DEMO_MODEL, "digits", "--grpc-port", str(grpc_port), "--auth-token", "s3cret")
    url = f"grpc://127.0.0.1:{grpc_port}"
    denied = run_cli("bench", "--url", url, "--model-name", "digits", "--protocol", "grpc", "--duration", "0.2")
    assert denied.returncode == 2 and "give --token" in denied.stderr
    out = tmp_path / "grpc.json"
    result = run_cli(
        "bench", "--url", url, "--model-name", "digits", "--protocol", "grpc", "--token", "s3cret",
        "--batch-sizes", "1,4", "--concurrency", "1,3", "--duration", "0.3", "--json", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())
    check_rows(rows, [1, 4], [1, 3])
    assert all(r["runs_on"] == "grpc" and r["client_cpu"] >= 0 for r in rows)


def test_bench_over_http_asks_for_the_token_a_server_requires(serve):
    url = serve(DEMO_MODEL, "digits", "--auth-token", "s3cret")
    denied = run_cli("bench", "--url", url, "--model-name", "digits", "--duration", "0.2")
    assert denied.returncode == 2
    assert "give --token" in denied.stderr
    allowed = run_cli(
        "bench", "--url", url, "--model-name", "digits", "--token", "s3cret", "--duration", "0.2", "--batch-sizes", "2"
    )
    assert allowed.returncode == 0, allowed.stderr


def test_bench_over_http_reports_an_unknown_model_with_the_server_answer(serve):
    url = serve(DEMO_MODEL, "digits")
    result = run_cli("bench", "--url", url, "--model-name", "nope", "--duration", "0.2")
    assert result.returncode == 2
    assert "model metadata: HTTP 404" in result.stderr


def test_summary_percentiles_and_throughput():
    result = summarize(
        [i / 1000 for i in range(1, 101)], target="m", runs_on="x", batch_size=4, concurrency=2, seconds=2.0
    )
    assert result.requests == 100
    assert result.p50_ms == pytest.approx(50.5)
    assert result.p99_ms == pytest.approx(99.01)
    assert result.throughput == pytest.approx(200.0)
