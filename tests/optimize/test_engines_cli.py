"""`modeldeploy validate` and `bench` on the other CPU engines: OpenVINO at bf16 against the FP32
reference, .tflite files on LiteRT, and the flags that cannot work together."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from modeldeploy_runtime.cpu import bf16_missing, cpu_flags
from optimize_helpers import DEMO_MODEL, run_cli

pytest.importorskip("openvino")
TFLITE = Path(__file__).resolve().parent.parent / "fixtures" / "classifier.tflite"


@pytest.mark.skipif(bf16_missing(cpu_flags()) is not None, reason="this CPU has no bf16 instructions")
def test_validate_bf16_on_openvino_against_fp32(tmp_path):
    out = tmp_path / "report.json"
    result = run_cli("validate", str(DEMO_MODEL), "--engine", "openvino", "--precision", "bf16", "--samples", "64",
                     "--json", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "PASSED" in result.stdout
    report = json.loads(out.read_text())
    assert "openvino" in report["candidate_runs_on"] and "bf16" in report["candidate_runs_on"]


def test_validate_fp32_on_openvino_agrees_closely():
    result = run_cli("validate", str(DEMO_MODEL), "--engine", "openvino", "--samples", "32", "--max-rel-error", "1e-3")
    assert result.returncode == 0, result.stderr + result.stdout


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([str(DEMO_MODEL), "--precision", "bf16"], "add --engine openvino"),
        ([str(DEMO_MODEL)], "give OPTIMIZED, or --engine openvino"),
    ],
)
def test_validate_flags_that_cannot_work_exit_2(argv, message):
    result = run_cli("validate", *argv)
    assert result.returncode == 2 and message in result.stderr


def test_bench_runs_tflite_and_openvino(tmp_path):
    pytest.importorskip("ai_edge_litert")
    out = tmp_path / "bench.json"
    result = run_cli("bench", str(TFLITE), "--batch-sizes", "1,4", "--duration", "0.2", "--json", str(out))
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())
    assert {r["batch_size"] for r in rows} == {1, 4} and all("litert" in r["runs_on"] for r in rows)
    result = run_cli("bench", str(DEMO_MODEL), "--engine", "openvino", "--batch-sizes", "1", "--duration", "0.2")
    assert result.returncode == 0, result.stderr
    assert "openvino" in result.stdout


@pytest.fixture
def demo_ir(tmp_path) -> Path:
    """The demo model as OpenVINO IR, as `ovc` writes it (tests/fixtures/make_openvino_ir.py)."""
    sys.path.insert(0, str(TFLITE.parent))
    import make_openvino_ir

    return make_openvino_ir.convert(DEMO_MODEL, tmp_path / "digits.xml")


def test_validate_and_bench_take_an_openvino_ir(demo_ir, tmp_path):
    out = tmp_path / "report.json"
    result = run_cli("validate", str(DEMO_MODEL), str(demo_ir), "--engine", "openvino", "--samples", "32",
                     "--max-rel-error", "1e-3", "--json", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    assert "openvino" in json.loads(out.read_text())["candidate_runs_on"]
    bench_out = tmp_path / "bench.json"
    result = run_cli("bench", str(demo_ir), "--engine", "openvino", "--batch-sizes", "1,4", "--duration", "0.2",
                     "--json", str(bench_out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = json.loads(bench_out.read_text())
    assert {r["batch_size"] for r in rows} == {1, 4} and all("openvino" in r["runs_on"] for r in rows)


def test_an_ir_without_its_bin_exits_2_naming_the_file(demo_ir):
    demo_ir.with_suffix(".bin").unlink()
    result = run_cli("bench", str(demo_ir), "--engine", "openvino", "--batch-sizes", "1", "--duration", "0.2")
    assert result.returncode == 2 and str(demo_ir.with_suffix(".bin")) in result.stderr
