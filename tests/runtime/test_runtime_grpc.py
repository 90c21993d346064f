"""The v2 gRPC API of a real runtime process, through the real tritonclient (sync, asyncio and
streaming) and grpc.health.v1: results, auth, errors mapped to gRPC codes, serving after bad
requests, the message limit and the metrics' protocol label."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import re
import signal
import socket
import time
import urllib.request

import grpc
import numpy as np
import pytest
from ports import free_port
from runtime_helpers import start_server

grpcclient = pytest.importorskip("tritonclient.grpc")
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from tritonclient.grpc import service_pb2, service_pb2_grpc  # noqa: E402
from tritonclient.grpc.aio import InferenceServerClient as AioClient  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

TOKEN = "s3cret"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    """The two-input model (a + b, n + 1) with a token, REST and gRPC on free ports."""
    grpc_port = free_port()
    srv = start_server(
        tmp_path_factory.mktemp("grpc"),
        models["two_inputs"],
        "two",
        GRPC_PORT=grpc_port,
        AUTH_TOKEN=TOKEN,
        MAX_BATCH_SIZE=8,
        MAX_BODY_BYTES=64 * 1024,
    )
    srv.grpc_url = f"127.0.0.1:{grpc_port}"
    yield srv
    srv.stop()


@pytest.fixture
def client(server):
    c = grpcclient.InferenceServerClient(server.grpc_url)
    yield c
    c.close()


def inputs(rows: int = 2, a_cols: int = 3, start: float = 0.0):
    a = np.arange(rows * a_cols, dtype=np.float32).reshape(rows, a_cols) + start
    b = np.ones((rows, 3), dtype=np.float32)
    n = np.arange(rows, dtype=np.int64).reshape(rows, 1)
    out = []
    for name, arr, dt in (("a", a, "FP32"), ("b", b, "FP32"), ("n", n, "INT64")):
        t = grpcclient.InferInput(name, list(arr.shape), dt)
        t.set_data_from_numpy(arr)
        out.append(t)
    return out, (a + b if a_cols == 3 else None), n + 1


def metric(server, series: str) -> float:
    with urllib.request.urlopen(server.base + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    found = re.search(re.escape(series) + r" (\S+)", text)
    return float(found.group(1)) if found else 0.0


def test_health_and_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("two")
    meta = client.get_model_metadata("two", headers=AUTH, as_json=True)
    assert meta["name"] == "two" and meta["platform"] == "onnxruntime_onnx"
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [
        ("a", "FP32", ["-1", "3"]),
        ("b", "FP32", ["-1", "3"]),
        ("n", "INT64", ["-1", "1"]),
    ]
    server_meta = client.get_server_metadata(headers=AUTH, as_json=True)
    assert server_meta["name"] == "modeldeploy" and "binary_tensor_data" in server_meta["extensions"]


def test_sync_infer_returns_every_output_and_the_id(client):
    tensors, total, count = inputs()
    result = client.infer("two", tensors, request_id="req-7", headers=AUTH)
    np.testing.assert_array_equal(result.as_numpy("sum"), total)
    np.testing.assert_array_equal(result.as_numpy("count"), count)
    response = result.get_response()
    assert response.id == "req-7" and response.model_name == "two" and response.model_version == "1"


def test_requested_outputs_only_and_in_order(client):
    tensors, _, count = inputs(rows=1)
    result = client.infer("two", tensors, outputs=[grpcclient.InferRequestedOutput("count")], headers=AUTH)
    assert [o.name for o in result.get_response().outputs] == ["count"]
    np.testing.assert_array_equal(result.as_numpy("count"), count)


def test_asyncio_client_concurrent_requests(server):
    async def main():
        async with AioClient(server.grpc_url) as c:
            jobs = []
            for i in range(16):
                tensors, total, _ = inputs(rows=1 + i % 3, start=float(i))
                jobs.append((c.infer("two", tensors, headers=AUTH), total))
            results = await asyncio.gather(*(job for job, _ in jobs))
            for result, (_, total) in zip(results, jobs, strict=True):
                np.testing.assert_array_equal(result.as_numpy("sum"), total)

    asyncio.run(main())


def test_streaming_answers_each_request_and_keeps_going_after_a_bad_one(client):
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)), headers=AUTH)
    try:
        expected = {}
        for i in range(5):
            tensors, total, _ = inputs(start=float(i))
            client.async_stream_infer("two", tensors, request_id=f"s{i}")
            expected[f"s{i}"] = total
        bad, _, _ = inputs(a_cols=2)
        client.async_stream_infer("two", bad, request_id="bad")
        got, errors = {}, []
        for _ in range(6):
            result, error = answers.get(timeout=30)
            if error is not None:
                errors.append(str(error))
            else:
                got[result.get_response().id] = result.as_numpy("sum")
    finally:
        client.stop_stream()
    assert len(errors) == 1 and "'a'" in errors[0] and "shape" in errors[0], errors
    assert set(got) == set(expected)
    for key, total in expected.items():
        np.testing.assert_array_equal(got[key], total)


def test_stream_without_token_is_refused(client):
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        tensors, _, _ = inputs()
        # the server ends the stream at its start: the request may find it closed already
        with contextlib.suppress(InferenceServerException):
            client.async_stream_infer("two", tensors)
        result, error = answers.get(timeout=30)
    finally:
        client.stop_stream()
    assert result is None and "UNAUTHENTICATED" in str(error)


def test_grpc_health_v1_follows_readiness(server):
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService", "live"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
        with pytest.raises(grpc.RpcError) as err:
            stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("headers", [None, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}])
def test_infer_and_metadata_need_the_token(client, server, headers):
    tensors, _, _ = inputs()
    before = metric(
        server,
        'modeldeploy_inference_requests_total{model="two",outcome="failure",protocol="grpc",reason="unauthorized"}',
    )
    with pytest.raises(InferenceServerException) as err:
        client.infer("two", tensors, headers=headers)
    assert err.value.status() == "StatusCode.UNAUTHENTICATED"
    assert "Bearer" in err.value.message()
    with pytest.raises(InferenceServerException) as err:
        client.get_model_metadata("two", headers=headers)
    assert err.value.status() == "StatusCode.UNAUTHENTICATED"
    after = metric(
        server,
        'modeldeploy_inference_requests_total{model="two",outcome="failure",protocol="grpc",reason="unauthorized"}',
    )
    assert after >= before + 2
    assert client.is_server_ready(headers=headers)  # health stays open


def test_bad_input_is_invalid_argument_naming_the_tensor_then_serving_goes_on(client):
    bad, _, _ = inputs(a_cols=2)
    with pytest.raises(InferenceServerException) as err:
        client.infer("two", bad, headers=AUTH)
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "input 'a'" in err.value.message() and "[-1, 3]" in err.value.message()
    tensors, total, _ = inputs()
    np.testing.assert_array_equal(client.infer("two", tensors, headers=AUTH).as_numpy("sum"), total)


def raw_stub(server):
    channel = grpc.insecure_channel(server.grpc_url)
    return channel, service_pb2_grpc.GRPCInferenceServiceStub(channel)


def raw_request(**changes) -> service_pb2.ModelInferRequest:
    a = np.zeros((1, 3), np.float32)
    n = np.zeros((1, 1), np.int64)
    req = service_pb2.ModelInferRequest(model_name="two")
    for name, arr, dt in (("a", a, "FP32"), ("b", a, "FP32"), ("n", n, "INT64")):
        req.inputs.add(name=name, datatype=dt, shape=arr.shape)
        req.raw_input_contents.append(arr.tobytes())
    for key, value in changes.items():
        setattr(req, key, value)
    return req


@pytest.mark.parametrize(
    ("mutate", "code", "words"),
    [
        (
            lambda r: r.raw_input_contents.__setitem__(2, b"\0" * 7),
            "INVALID_ARGUMENT",
            ["'n'", "raw_input_contents[2]"],
        ),
        (lambda r: r.raw_input_contents.pop(), "INVALID_ARGUMENT", ["raw_input_contents has 2 entries"]),
        (lambda r: setattr(r.inputs[0], "datatype", "FP99"), "INVALID_ARGUMENT", ["'a'", "FP99"]),
        (lambda r: setattr(r, "model_name", "other"), "NOT_FOUND", ["'other'"]),
        (lambda r: r.outputs.add(name="nope"), "INVALID_ARGUMENT", ["'nope'"]),
    ],
    ids=["raw-size", "raw-count", "datatype", "unknown-model", "unknown-output"],
)
def test_malformed_messages_get_the_mapped_code(server, mutate, code, words):
    channel, stub = raw_stub(server)
    with channel:
        req = raw_request()
        mutate(req)
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(req, metadata=tuple(AUTH.items()), timeout=10)
        assert err.value.code().name == code
        for word in words:
            assert word in err.value.details(), err.value.details()
        ok = stub.ModelInfer(raw_request(), metadata=tuple(AUTH.items()), timeout=10)
        assert [o.name for o in ok.outputs] == ["sum", "count"]


def test_typed_contents_are_read_too(server):
    channel, stub = raw_stub(server)
    with channel:
        req = service_pb2.ModelInferRequest(model_name="two")
        for name in ("a", "b"):
            t = req.inputs.add(name=name, datatype="FP32", shape=[1, 3])
            t.contents.fp32_contents.extend([1.0, 2.0, 3.0])
        req.inputs.add(name="n", datatype="INT64", shape=[1, 1]).contents.int64_contents.append(41)
        reply = stub.ModelInfer(req, metadata=tuple(AUTH.items()), timeout=10)
    assert np.frombuffer(reply.raw_output_contents[0], np.float32).tolist() == [2.0, 4.0, 6.0]
    assert np.frombuffer(reply.raw_output_contents[1], np.int64).tolist() == [42]


def test_message_over_the_body_limit_is_refused_and_serving_goes_on(client):
    rows = 4096  # 4096 * 3 * 4 bytes * 2 inputs: over the 64 KiB limit
    big, _, _ = inputs(rows=rows)
    with pytest.raises(InferenceServerException) as err:
        client.infer("two", big, headers=AUTH)
    assert err.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    tensors, total, _ = inputs()
    np.testing.assert_array_equal(client.infer("two", tensors, headers=AUTH).as_numpy("sum"), total)


def test_metrics_count_grpc_requests_under_their_protocol(client, server):
    series = 'modeldeploy_inference_requests_total{model="two",outcome="success",protocol="grpc",reason=""}'
    before = metric(server, series)
    tensors, _, _ = inputs()
    client.infer("two", tensors, headers=AUTH)
    assert metric(server, series) == before + 1
    bad = 'modeldeploy_inference_requests_total{model="two",outcome="failure",protocol="grpc",reason="bad_request"}'
    assert metric(server, bad) >= 1  # from the bad-input tests of this module
    assert (
        'modeldeploy_request_duration_seconds_count{model="two",protocol="grpc"}'
        in urllib.request.urlopen(server.base + "/metrics", timeout=5).read().decode()
    )


def test_a_grpc_port_in_use_is_a_clear_start_failure(models, tmp_path):
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        srv = start_server(tmp_path, models["affine"], "m", wait=False, GRPC_PORT=port)
        try:
            assert srv.wait_exit(30) == 1
        finally:
            srv.stop()
    message = srv.termination_log.read_text()
    assert (
        message.startswith("invalid configuration: cannot serve gRPC on 127.0.0.1:")
        and "MODELDEPLOY_GRPC_PORT" in message
    )


def test_sigterm_turns_grpc_health_not_serving_then_the_server_exits_cleanly(models, tmp_path):
    port = free_port()
    srv = start_server(tmp_path, models["affine"], "m", GRPC_PORT=port, DRAIN_DELAY_S=3)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            assert (
                health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
                == health_pb2.HealthCheckResponse.SERVING
            )
            srv.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 2
            while (
                health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
                == health_pb2.HealthCheckResponse.SERVING
            ):
                assert time.monotonic() < deadline, "still SERVING 2 s after SIGTERM"
                time.sleep(0.05)
            # draining: readiness is off, but what still arrives is served
            live = health.Check(health_pb2.HealthCheckRequest(service="live"), timeout=5)
            assert live.status == health_pb2.HealthCheckResponse.SERVING
            client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
            assert not client.is_server_ready()
            x = grpcclient.InferInput("x", [1, 4], "FP32")
            x.set_data_from_numpy(np.zeros((1, 4), np.float32))
            assert client.infer("m", [x]).as_numpy("y").tolist() == [[1.0] * 4]
            client.close()
        assert srv.wait_exit(30) == 0
    finally:
        srv.stop()
