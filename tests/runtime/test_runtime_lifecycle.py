"""Start-up and shutdown: model download with sha256, failures that stop the server with a
termination message, the latency gate, readiness, and SIGTERM draining."""

from __future__ import annotations

import hashlib
import http.client
import http.server
import signal
import socket
import sys
import threading
import time

import pytest
from runtime_helpers import post, slow_request


class ModelFiles(http.server.SimpleHTTPRequestHandler):
    """Serves a folder, counting requests; a path under /slow/ waits before answering."""

    hits: list[str] = []
    delay_s = 0.0

    def do_GET(self):
        type(self).hits.append(self.path)
        if self.path.startswith("/slow/"):
            time.sleep(type(self).delay_s)
            self.path = self.path[len("/slow") :]
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def file_server(models):
    handler = type("Handler", (ModelFiles,), {"hits": [], "delay_s": 3.0})
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a, **kw: handler(*a, directory=str(models["affine"].parent), **kw)
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()
    httpd.server_close()


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_model_url_is_downloaded_once_and_verified(server_factory, models, file_server, tmp_path):
    base, handler = file_server
    sha = sha256(models["affine"])
    cache = tmp_path / "cache"
    server = server_factory(f"{base}/affine.onnx", "m", MODEL_SHA256=sha, CACHE_DIR=cache)
    assert server.status("/v2/health/ready") == 200
    assert (cache / "models" / sha / "affine.onnx").read_bytes() == models["affine"].read_bytes()
    server.proc.send_signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    again = server_factory(f"{base}/affine.onnx", "m", MODEL_SHA256=sha, CACHE_DIR=cache)
    assert again.status("/v2/health/ready") == 200
    assert handler.hits == ["/affine.onnx"]  # the second start used the cache


def test_checksum_mismatch_stops_with_model_load_failed(server_factory, file_server):
    base, _ = file_server
    server = server_factory(f"{base}/affine.onnx", "m", MODEL_SHA256="0" * 64, wait=False)
    assert server.wait_exit() == 1
    message = server.termination_log.read_text()
    assert message.startswith("model load failed: ") and "sha256" in message and "0" * 64 in message


def test_download_error_stops_with_the_http_status(server_factory, file_server):
    base, _ = file_server
    server = server_factory(f"{base}/missing.onnx", "m", MODEL_SHA256="0" * 64, wait=False)
    assert server.wait_exit() == 1
    assert server.termination_log.read_text().startswith("model load failed: downloading")
    assert "404" in server.termination_log.read_text()


def test_live_while_loading_ready_only_after(server_factory, models, file_server):
    base, _ = file_server
    server = server_factory(f"{base}/slow/affine.onnx", "m", MODEL_SHA256=sha256(models["affine"]), wait=False)
    deadline = time.monotonic() + 30
    while True:  # the listener comes up before the (3 s) download ends
        try:
            live = server.status("/v2/health/live")
            break
        except OSError:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.05)
    assert live == 200
    assert server.status("/v2/health/ready") == 503
    assert server.status("/v2/models/m/ready") == 503
    server.wait_ready()
    assert server.status("/v2/models/m/ready") == 200


def test_missing_model_file(server_factory, tmp_path):
    server = server_factory(tmp_path / "nowhere.onnx", "m", wait=False)
    assert server.wait_exit() == 1
    message = server.termination_log.read_text()
    assert message.startswith("model load failed: ") and "nowhere.onnx" in message and "does not exist" in message


def test_corrupt_model_file(server_factory, tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 100)
    server = server_factory(corrupt, "m", wait=False)
    assert server.wait_exit() == 1
    message = server.termination_log.read_text()
    assert message.startswith("model load failed: ONNX Runtime cannot load") and "corrupt.onnx" in message


def test_invalid_configuration_is_reported_before_anything_starts(server_factory, models):
    server = server_factory(models["affine"], "m", MAX_BATCH_SIZE="lots", wait=False)
    assert server.wait_exit() == 2
    message = server.termination_log.read_text()
    assert message.startswith("invalid configuration: MODELDEPLOY_MAX_BATCH_SIZE")


def test_port_in_use_is_reported(server_factory, models):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = server_factory(models["affine"], "m", PORT=taken.getsockname()[1], wait=False)
        assert server.wait_exit() == 1
    assert server.termination_log.read_text().startswith("invalid configuration: cannot listen")


def test_latency_gate_exits_non_zero_with_the_reason(server_factory, models):
    server = server_factory(models["slow"], "m", LATENCY_BUDGET_MS="0.001", WARMUP_REQUESTS=5, wait=False)
    assert server.wait_exit() == 1
    message = server.termination_log.read_text().strip()
    assert message.startswith("latency budget exceeded: p95 ") and message.endswith("> 0.001 ms")
    assert float(message.split("p95 ")[1].split(" ms")[0]) > 0.001, "the p95 shown reads as over the budget"
    assert "latency budget exceeded" in server.log()


def test_latency_gate_in_warn_mode_serves_anyway(server_factory, models):
    server = server_factory(models["slow"], "m", LATENCY_BUDGET_MS="0.001", LATENCY_GATE="warn")
    assert server.status("/v2/health/ready") == 200
    assert "serving anyway" in server.log()
    assert not server.termination_log.exists()


def test_sigterm_drops_readiness_finishes_in_flight_then_exits(server_factory, models):
    """Without a drain delay: new connections are refused at once; a request on a connection
    already open is still answered, with `Connection: close`."""
    server = server_factory(models["slow"], "m", MAX_BATCH_SIZE=1)
    body, headers = slow_request(rows=1024)  # about a second of compute on one thread
    result: dict[str, object] = {}

    def in_flight() -> None:
        result["status"] = post(server, body, headers)[0]

    thread = threading.Thread(target=in_flight)
    thread.start()
    deadline = time.monotonic() + 30
    probe = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    while True:  # wait until the request is being computed
        probe.request("GET", "/metrics")
        text = probe.getresponse().read().decode()
        if 'modeldeploy_inflight_requests{model="m"} 1.0' in text:
            break
        assert time.monotonic() < deadline, "the request never got in flight"
        time.sleep(0.01)
    idle = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    idle.connect()  # open before the signal, no request yet
    server.proc.send_signal(signal.SIGTERM)
    while True:  # readiness drops while the request is still running
        probe.request("GET", "/v2/health/ready")
        ready = probe.getresponse()
        ready.read()
        if ready.status == 503:
            break
        assert ready.status == 200 and time.monotonic() < deadline
        time.sleep(0.01)
    assert thread.is_alive()
    with pytest.raises(OSError):
        http.client.HTTPConnection("127.0.0.1", server.port, timeout=2).request("GET", "/v2/health/live")
    idle.request("POST", "/v2/models/m/infer", body=slow_request(rows=1)[0], headers=slow_request(rows=1)[1])
    answered = idle.getresponse()
    answered.read()
    assert answered.status == 200 and answered.getheader("connection") == "close"
    thread.join(60)
    assert result["status"] == 200  # the in-flight request finished
    assert server.wait_exit() == 0
    with pytest.raises(OSError):
        http.client.HTTPConnection("127.0.0.1", server.port, timeout=2).request("GET", "/v2/health/live")


def test_sigterm_with_a_drain_delay_keeps_serving_new_connections_until_it_ends(server_factory, models):
    """The Service's endpoint goes a moment after readiness drops: during the delay the replica is
    unready but answers whatever still reaches it, closing each connection after its answer."""
    server = server_factory(models["slow"], "m", DRAIN_DELAY_S=3)
    body, headers = slow_request(rows=1)
    server.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 2
    while server.status("/v2/health/ready") != 503:
        assert time.monotonic() < deadline, "readiness did not drop"
        time.sleep(0.01)
    for _ in range(3):  # new connections, each answered and closed
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("POST", "/v2/models/m/infer", body=body, headers=headers)
        answer = conn.getresponse()
        answer.read()
        assert answer.status == 200 and answer.getheader("connection") == "close"
        conn.close()
    assert server.wait_exit() == 0
    with pytest.raises(OSError):
        http.client.HTTPConnection("127.0.0.1", server.port, timeout=2).request("GET", "/v2/health/live")


def test_cli_without_serve_prints_usage():
    import subprocess

    out = subprocess.run([sys.executable, "-m", "modeldeploy_runtime.cli"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "modeldeploy-runtime serve" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "modeldeploy_runtime.cli", "run"], capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert bad.returncode == 2 and "unknown command 'run'" in bad.stderr


def test_model_that_cannot_run_generated_inputs_serves_without_warm_up(server_factory, models):
    import numpy as np
    from runtime_helpers import post

    server = server_factory(models["pairs"], "m")
    assert "warm-up skipped" in server.log()
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    head = f'{{"inputs": [{{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": {x.ravel().tolist()}}}]}}'
    assert post(server, head.encode(), {})[0] == 200


def test_latency_gate_needs_warm_up_to_work(server_factory, models):
    server = server_factory(models["pairs"], "m", LATENCY_BUDGET_MS=100, wait=False)
    assert server.wait_exit() == 1
    message = server.termination_log.read_text()
    assert message.startswith("model load failed: warm-up inference on generated inputs")
    assert "MODELDEPLOY_LATENCY_BUDGET_MS=0" in message


def test_a_large_request_of_the_only_client_leaves_health_answering(server_factory, models):
    """The slow model warms up fast (rows=1), so a lone client's small requests may run on the
    event loop; a large one must not, or probes would wait for it."""
    server = server_factory(models["slow"], "m", MAX_BATCH_SIZE=1)
    body, headers = slow_request(rows=1024)  # about a second of compute
    answered: dict[str, float] = {}

    def infer() -> None:
        assert post(server, body, headers)[0] == 200
        answered["infer"] = time.monotonic()

    thread = threading.Thread(target=infer)
    thread.start()
    time.sleep(0.3)  # the request is read and computing, alone on the server
    probe = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    probe.request("GET", "/v2/health/live")
    assert probe.getresponse().status == 200
    answered["probe"] = time.monotonic()
    thread.join(60)
    assert answered["probe"] < answered["infer"]
