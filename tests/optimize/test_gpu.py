"""The GPU path with TensorRT: engine builds, the TensorRT backend, serving an engine over the v2
API. Skipped, with the reason, where no GPU with TensorRT 10 and pycuda is (see
test_gpu_onnxruntime.py for ONNX Runtime's GPU providers)."""

from __future__ import annotations

import json
import shutil
import threading
import urllib.request

import numpy as np
import onnxruntime as ort
import pytest
from optimize_helpers import DEMO_MODEL, gpu_skip_reason, run_cli

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(gpu_skip_reason() is not None, reason=str(gpu_skip_reason()))]


@pytest.fixture(scope="module")
def raw_digits(digits):
    """The demo model takes raw pixels (0..16)."""
    return digits


@pytest.fixture(scope="module")
def fp16_engine(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("engines")
    result = run_cli(
        "optimize", "tensorrt", str(DEMO_MODEL), "--precision", "fp16", "--max-batch-size", "16",
        "--output-dir", str(out_dir), "--no-progress", "--json", str(out_dir / "build.json"), timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    build = json.loads((out_dir / "build.json").read_text())
    return build


def cpu_reference(x):
    session = ort.InferenceSession(str(DEMO_MODEL), providers=["CPUExecutionProvider"])
    label, probabilities = session.run(None, {"input": x})
    return label, probabilities


def test_engine_is_named_by_model_tensorrt_and_gpu_and_reused(fp16_engine, tmp_path):
    from pathlib import Path

    engine = Path(fp16_engine["engine"])
    assert engine.is_file() and engine.name.startswith("digits-mlp.fp16.b16.trt")
    assert f".sm{fp16_engine['compute_capability'][0]}{fp16_engine['compute_capability'][1]}." in engine.name
    sidecar = json.loads(Path(str(engine) + ".json").read_text())
    assert sidecar["cache_key"] == fp16_engine["cache_key"] and sidecar["gpu_name"]
    again = run_cli(
        "optimize", "tensorrt", str(DEMO_MODEL), "--precision", "fp16", "--max-batch-size", "16",
        "--output-dir", str(engine.parent), "--no-progress", "--json", str(tmp_path / "again.json"),
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "up to date" in again.stdout
    assert json.loads((tmp_path / "again.json").read_text())["cached"] is True


def test_tensorrt_backend_matches_onnxruntime_at_every_batch_size(fp16_engine, raw_digits):
    from modeldeploy_runtime.backends.tensorrt import TensorRTBackend

    _, x_test, _, _ = raw_digits
    backend = TensorRTBackend(fp16_engine["engine"])
    try:
        assert backend.max_batch_size == 16
        assert [(t.name, t.datatype, t.shape) for t in backend.inputs] == [("input", "FP32", (-1, 64))]
        assert backend.info.platform == "tensorrt_plan" and backend.info.device == "gpu"
        for batch in (1, 5, 16):
            x = x_test[:batch]
            label, probabilities = cpu_reference(x)
            out = backend.infer({"input": x})
            assert out["probabilities"].shape == (batch, 10)
            np.testing.assert_allclose(out["probabilities"], probabilities, atol=2e-2)
            assert (out["label"].astype(np.int64) == label).mean() >= 0.9
        # Buffers are reused: a smaller batch after a larger one must not return stale rows.
        again = backend.infer({"input": x_test[:2]})
        assert again["probabilities"].shape == (2, 10)
    finally:
        backend.close()


def test_tensorrt_backend_refuses_a_batch_beyond_the_profile(fp16_engine, raw_digits):
    from modeldeploy_runtime.backends.base import BackendError
    from modeldeploy_runtime.backends.tensorrt import TensorRTBackend

    backend = TensorRTBackend(fp16_engine["engine"])
    try:
        with pytest.raises(BackendError, match="outside the engine's profile"):
            backend.infer({"input": raw_digits[1][:17]})
    finally:
        backend.close()


def test_engine_built_for_another_gpu_is_refused_with_the_reason(fp16_engine, tmp_path):
    from pathlib import Path

    from modeldeploy_runtime.backends.base import BackendError
    from modeldeploy_runtime.backends.tensorrt import TensorRTBackend

    source = Path(fp16_engine["engine"])
    copy = tmp_path / source.name
    shutil.copy(source, copy)
    meta = json.loads(Path(str(source) + ".json").read_text())
    meta["gpu_name"] = "Some Other GPU"
    Path(str(copy) + ".json").write_text(json.dumps(meta))
    with pytest.raises(BackendError, match="engine was built for GPU 'Some Other GPU'"):
        TensorRTBackend(str(copy))


def test_int8_engine_calibrated_on_digits_passes_validate(raw_digits, tmp_path):
    x_train, x_test, _, _ = raw_digits
    calib, held = tmp_path / "calib", tmp_path / "held"
    calib.mkdir()
    held.mkdir()
    np.save(calib / "train.npy", x_train[:512])
    np.save(held / "test.npy", x_test)
    engine = tmp_path / "digits.int8.engine"
    build = run_cli(
        "optimize", "tensorrt", str(DEMO_MODEL), "--precision", "int8", "--max-batch-size", "32",
        "--calibration-data", str(calib), "-o", str(engine), "--no-progress", timeout=600,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    result = run_cli("validate", str(DEMO_MODEL), str(engine), "--data", str(held))
    assert result.returncode == 0, result.stdout + result.stderr


def test_concurrent_callers_of_the_one_execution_context_get_their_own_answers(raw_digits, tmp_path):
    from modeldeploy_runtime.backends.tensorrt import TensorRTBackend

    engine = tmp_path / "digits.engine"
    build = run_cli(
        "optimize", "tensorrt", str(DEMO_MODEL), "--max-batch-size", "8", "-o", str(engine), "--no-progress",
        timeout=600,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    x = raw_digits[1][:64]
    backend = TensorRTBackend(str(engine))
    try:
        expected = [backend.infer({"input": x[i : i + 8]})["probabilities"] for i in range(0, 64, 8)]
        results: dict[int, np.ndarray] = {}
        errors: list[BaseException] = []

        def work(i: int) -> None:
            try:
                for _ in range(20):
                    results[i] = backend.infer({"input": x[i * 8 : i * 8 + 8]})["probabilities"]
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors and all(not t.is_alive() for t in threads)
        for i in range(8):
            np.testing.assert_allclose(results[i], expected[i], atol=1e-3)
    finally:
        backend.close()


def post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read())


def test_tensorrt_engine_served_through_the_v2_api(fp16_engine, raw_digits, serve):
    url = serve(fp16_engine["engine"], "digits-trt", "--max-batch-size", "8", deadline_s=180)
    with urllib.request.urlopen(f"{url}/v2/models/digits-trt", timeout=10) as resp:
        metadata = json.loads(resp.read())
    assert metadata["platform"] == "tensorrt_plan"
    x = raw_digits[1][:3]
    answer = post_json(
        f"{url}/v2/models/digits-trt/infer",
        {"inputs": [{"name": "input", "shape": [3, 64], "datatype": "FP32", "data": x.reshape(-1).tolist()}]},
    )
    outputs = {o["name"]: o for o in answer["outputs"]}
    label, _ = cpu_reference(x)
    assert outputs["probabilities"]["shape"] == [3, 10]
    assert (np.asarray(outputs["label"]["data"]) == label).all()


def test_bench_measures_an_engine_in_process(fp16_engine, tmp_path):
    out = tmp_path / "bench.json"
    result = run_cli("bench", fp16_engine["engine"], "--batch-sizes", "1,16", "--duration", "0.5", "--json", str(out))
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())
    assert [r["batch_size"] for r in rows] == [1, 16] and all(r["runs_on"].startswith("tensorrt") for r in rows)
