"""Models built with onnx.helper inside the tests (no downloads), and real server processes started on
free ports with deadlines on every wait."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from ports import free_port

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

READY_DEADLINE_S = 60.0


def _save(graph, path: Path, opset: int = 17) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def affine_model(path: Path, features: int = 4) -> Path:
    """y = 2x + 1 on FP32 [batch, features]: a batchable model whose answer is easy to check."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["t"]), helper.make_node("Add", ["t", "one"], ["y"])],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", features])],
        initializer=[
            numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two"),
            numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
        ],
    )
    return _save(graph, path)


def two_input_model(path: Path) -> Path:
    """sum = a + b (FP32 [batch, 3]) and count = n + 1 (INT64 [batch, 1]): two inputs of different types."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Add", ["n", "one"], ["count"])],
        "two_inputs",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("n", TensorProto.INT64, ["batch", 1]),
        ],
        [
            helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("count", TensorProto.INT64, ["batch", 1]),
        ],
        initializer=[numpy_helper.from_array(np.array(1, dtype=np.int64), "one")],
    )
    return _save(graph, path)


def fixed_shape_model(path: Path) -> Path:
    """Transpose of a fixed [2, 3] tensor: no batch dimension, so it is served unbatched."""
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["x"], ["y"], perm=[1, 0])],
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2])],
    )
    return _save(graph, path)


def string_model(path: Path) -> Path:
    """Identity on BYTES (tensor(string)) [batch, 2]."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["text"], ["same"])],
        "strings",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["batch", 2])],
        [helper.make_tensor_value_info("same", TensorProto.STRING, ["batch", 2])],
    )
    return _save(graph, path)


def pairs_model(path: Path) -> Path:
    """Reshape FP32 [batch, n] to [batch, n/2, 2]: fails for n = 1, which is what warm-up sends
    for a dynamic dimension."""
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "to"], ["y"])],
        "pairs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "half", 2])],
        initializer=[numpy_helper.from_array(np.array([0, -1, 2], dtype=np.int64), "to")],
    )
    return _save(graph, path)


def slow_model(path: Path, layers: int = 200, width: int = 512) -> Path:
    """MatMul+Tanh repeated on FP32 [batch, rows, width] with one shared weight: a small file whose
    cost grows with the dynamic ``rows``, so a test picks how long a request stays in flight (warm-up
    uses rows=1 and stays fast)."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
    nodes, x = [], "x"
    for i in range(layers):
        nodes.append(helper.make_node("MatMul", [x, "w"], [f"m{i}"]))
        nodes.append(helper.make_node("Tanh", [f"m{i}"], [f"h{i}"]))
        x = f"h{i}"
    nodes.append(helper.make_node("Identity", [x], ["y"]))
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "rows", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "rows", width])],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    return _save(graph, path)


def small_cnn_model(path: Path, classes: int = 10, seed: int = 0) -> Path:
    """Conv + Relu + global pooling + Gemm + Softmax on FP32 [batch, 3, 16, 16] -> [batch, classes]:
    a tiny image classifier with random weights, on which engines can be compared."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((8, 3, 3, 3)) / np.sqrt(27)).astype(np.float32)
    fc = (rng.standard_normal((8, classes)) * 2).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("GlobalAveragePool", ["r"], ["p"]),
            helper.make_node("Flatten", ["p"], ["f"]),
            helper.make_node("Gemm", ["f", "fc"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
        ],
        "small_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", classes])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(fc, "fc")],
    )
    return _save(graph, path)


@dataclass
class ServerProcess:
    proc: subprocess.Popen
    port: int
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def termination_log(self) -> Path:
        return self.workdir / "termination-log"

    def log(self) -> str:
        return (self.workdir / "server.log").read_text(errors="replace")

    def status(self, path: str) -> int:
        try:
            with urllib.request.urlopen(self.base + path, timeout=5) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code

    def wait_ready(self, deadline_s: float = READY_DEADLINE_S) -> None:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.status("/v2/health/ready") == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"server not ready within {deadline_s} s:\n{self.log()}")

    def wait_exit(self, deadline_s: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout=deadline_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"server still running after {deadline_s} s:\n{self.log()}") from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


def start_server(workdir: Path, model: str | Path, name: str = "m", wait: bool = True, **settings) -> ServerProcess:
    """Run `modeldeploy-runtime serve` configured through environment variables, as the operator does."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELDEPLOY_")}
    env.update(
        MODELDEPLOY_MODEL_PATH=str(model),
        MODELDEPLOY_MODEL_NAME=name,
        MODELDEPLOY_PORT=str(port),
        MODELDEPLOY_HOST="127.0.0.1",
        MODELDEPLOY_TERMINATION_LOG=str(workdir / "termination-log"),
        MODELDEPLOY_CACHE_DIR=str(workdir / "cache"),
        MODELDEPLOY_WARMUP_REQUESTS="2",
        MODELDEPLOY_THREADS="1",
    )
    env.update({f"MODELDEPLOY_{k.upper()}": str(v) for k, v in settings.items()})
    log = open(workdir / "server.log", "wb")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "modeldeploy_runtime.cli", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    server = ServerProcess(proc, port, workdir, env)
    if wait:
        try:
            server.wait_ready()
        except BaseException:
            server.stop()
            raise
    return server


def slow_request(rows: int) -> tuple[bytes, dict]:
    """A binary v2 request for slow_model; its cost grows with ``rows``."""
    x = np.zeros((1, rows, 512), dtype=np.float32)
    head = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape),
                                   "parameters": {"binary_data_size": x.nbytes}}]}).encode()  # fmt: skip
    return head + x.tobytes(), {"Inference-Header-Content-Length": str(len(head))}


def post(server, body: bytes, headers: dict, path="/v2/models/m/infer") -> tuple[int, dict]:
    """POST on a fresh connection; (status, lower-case headers)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status, dict(resp.getheaders())
    finally:
        conn.close()


def nvml_gpus() -> int:
    """How many GPUs NVML sees here (0 without nvidia-ml-py, a driver or a GPU)."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # ImportError, or NVMLError without a driver
        return 0
    try:
        return pynvml.nvmlDeviceGetCount()
    finally:
        pynvml.nvmlShutdown()


def http_infer(
    server, x: np.ndarray, input_name: str, output: str, binary: bool = True, model: str = "m"
) -> np.ndarray:
    """One FP32 input through tritonclient's HTTP client; the named output."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.url, network_timeout=60)
    inp = httpclient.InferInput(input_name, list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    try:
        return client.infer(model, [inp]).as_numpy(output)
    finally:
        client.close()


def http_metadata(server, model: str = "m") -> dict:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.url)
    try:
        return client.get_model_metadata(model)
    finally:
        client.close()
