"""Every kind of bad request gets a 4xx whose message names the tensor or field, and the server
keeps serving after each."""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import time
import urllib.request

import numpy as np
import pytest
from runtime_helpers import start_server

MAX_BODY = 100_000


@pytest.fixture(scope="module")
def server(models, tmp_path_factory):
    s = start_server(tmp_path_factory.mktemp("bad"), models["two_inputs"], "two", MAX_BATCH_SIZE=4,
                     MAX_BODY_BYTES=MAX_BODY)  # fmt: skip
    yield s
    s.stop()


def post(server, path: str, body: bytes, headers: dict | None = None) -> tuple[int, dict, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers=headers or {})
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, dict(resp.getheaders()), json.loads(raw) if raw else {}
    finally:
        conn.close()


def tensor(name, datatype="FP32", shape=(1, 3), data=None):
    if data is None:
        data = [1] * int(np.prod(shape))
    return {"name": name, "datatype": datatype, "shape": list(shape), "data": data}


def good_inputs(rows=1):
    return [tensor("a", shape=(rows, 3)), tensor("b", shape=(rows, 3)), tensor("n", "INT64", (rows, 1))]


def infer_json(server, doc, path="/v2/models/two/infer"):
    return post(server, path, json.dumps(doc).encode())


CASES = [
    ("malformed JSON", b'{"inputs": [', {}, 400, ["not valid JSON"]),
    ("missing input", {"inputs": good_inputs()[:2]}, {}, 400, ["'n'", "missing", "INT64"]),
    ("extra input", {"inputs": [*good_inputs(), tensor("c")]}, {}, 400, ["'c'", "not an input", "a, b, n"]),
    ("wrong datatype", {"inputs": [tensor("a", "INT32"), *good_inputs()[1:]]}, {}, 400, ["'a'", "INT32", "FP32"]),
    ("wrong shape", {"inputs": [tensor("a", shape=(1, 4)), *good_inputs()[1:]]}, {}, 400,
     ["'a'", "[1, 4]", "[-1, 3]"]),
    ("wrong rank", {"inputs": [tensor("a", shape=(3,)), *good_inputs()[1:]]}, {}, 400, ["'a'", "[3]"]),
    ("data length", {"inputs": [tensor("a", data=[1, 2]), *good_inputs()[1:]]}, {}, 400, ["'a'", "3 elements", "2"]),
    ("batch mismatch", {"inputs": [tensor("a", shape=(2, 3)), *good_inputs()[1:]]}, {}, 400,
     ["batch size", "same first dimension"]),
    ("batch too large", {"inputs": good_inputs(rows=5)}, {}, 400, ["batch size 5", "1 to 4"]),
    ("unknown output", {"inputs": good_inputs(), "outputs": [{"name": "zzz"}]}, {}, 400, ["'zzz'", "sum, count"]),
    ("unknown datatype", {"inputs": [tensor("a", "FLOAT32"), *good_inputs()[1:]]}, {}, 400, ["'a'", "FLOAT32"]),
    ("no inputs", {"outputs": []}, {}, 400, ["'inputs'"]),
    ("bad binary header value", {"inputs": good_inputs()}, {"Inference-Header-Content-Length": "abc"}, 400,
     ["Inference-Header-Content-Length", "'abc'"]),
    ("binary header past the body", {"inputs": good_inputs()}, {"Inference-Header-Content-Length": "999999"}, 400,
     ["Inference-Header-Content-Length", "999999"]),
    ("binary size mismatch", "binary-short", {}, 400, ["'a'", "12 bytes", "8"]),
    ("unsupported encoding", {"inputs": good_inputs()}, {"Content-Encoding": "br"}, 400, ["'br'"]),
    ("binary header of 5,000 digits", {"inputs": good_inputs()}, {"Inference-Header-Content-Length": "9" * 5000},
     400, ["Inference-Header-Content-Length", "5000 characters"]),
    ("binary header of 5,000 digits, large body", {"inputs": good_inputs(), "pad": " " * 70_000},
     {"Inference-Header-Content-Length": "9" * 5000}, 400, ["Inference-Header-Content-Length", "5000 characters"]),
    ("70 dimensions", {"inputs": [tensor("a", shape=(1,) * 70), *good_inputs()[1:]]}, {}, 400,
     ["'a'", "70 dimensions", "64"]),
    ("element count overflow", {"inputs": [tensor("a", shape=(0, 4611686018427387904), data=[]),
                                           *good_inputs()[1:]]}, {}, 400, ["'a'", "4611686018427387904"]),
    ("FP32 null", {"inputs": [tensor("a", data=[None, 1, 1]), *good_inputs()[1:]]}, {}, 400,
     ["'a'", "FP32", "numbers", "null"]),
    ("FP32 string", {"inputs": [tensor("a", data=["0.5", 1, 1]), *good_inputs()[1:]]}, {}, 400,
     ["'a'", "FP32", "numbers", "strings"]),
    ("FP32 boolean", {"inputs": [tensor("a", data=[True, 1, 1]), *good_inputs()[1:]]}, {}, 400,
     ["'a'", "FP32", "numbers", "true/false"]),
    ("FP32 null, large body", {"inputs": [tensor("a", shape=(1, 3), data=[0.5, None, 1.0]),
                                          *good_inputs()[1:]], "pad": " " * 40_000}, {}, 400, ["'a'", "null"]),
    ("INT64 boolean", {"inputs": [*good_inputs()[:2], tensor("n", "INT64", (1, 1), [True])]}, {}, 400,
     ["'n'", "INT64", "whole numbers", "true/false"]),
]  # fmt: skip


def _body(doc) -> tuple[bytes, dict]:
    if doc == "binary-short":
        head = json.dumps({"inputs": [{"name": "a", "datatype": "FP32", "shape": [1, 3],
                                       "parameters": {"binary_data_size": 8}}]}).encode()  # fmt: skip
        return head + b"\0" * 8, {"Inference-Header-Content-Length": str(len(head))}
    return (doc if isinstance(doc, bytes) else json.dumps(doc).encode()), {}


@pytest.mark.parametrize(("case", "doc", "headers", "status", "words"), CASES, ids=[c[0] for c in CASES])
def test_bad_request_is_rejected_with_a_clear_message(server, case, doc, headers, status, words):
    body, extra = _body(doc)
    code, _, reply = post(server, "/v2/models/two/infer", body, {**extra, **headers})
    assert code == status, reply
    for word in words:
        assert word in reply["error"], (word, reply["error"])
    # and the server goes on serving
    code, _, reply = infer_json(server, {"inputs": good_inputs()})
    assert code == 200, reply
    assert reply["outputs"][0]["data"] == [2.0, 2.0, 2.0] and reply["outputs"][1]["data"] == [2]


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [("/v2/models/other/infer", 404, ["'other'", "'two'"]), ("/v2/models/two/versions/9/infer", 404, ["'9'"]),
     ("/v2/models/two/explode", 404, ["/v2/models/two/explode"]), ("/v3/anything", 404, ["/v2"])],
)  # fmt: skip
def test_unknown_model_version_or_path(server, path, status, words):
    code, _, reply = infer_json(server, {"inputs": good_inputs()}, path)
    assert code == status
    for word in words:
        assert word in reply["error"]


def test_wrong_method_is_405(server):
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(server.base + "/v2/models/two/infer", timeout=10)
    assert err.value.code == 405 and "POST" in json.loads(err.value.read())["error"]


def test_body_over_the_limit_is_413_without_reading_it(server):
    body = json.dumps({"inputs": [tensor("a", shape=(1, 3), data=[1.0, 2.0, 3.0])], "pad": "x" * MAX_BODY}).encode()
    code, headers, reply = post(server, "/v2/models/two/infer", body)
    assert code == 413
    assert "MODELDEPLOY_MAX_BODY_BYTES" in reply["error"] and str(MAX_BODY) in reply["error"]
    assert infer_json(server, {"inputs": good_inputs()})[0] == 200


def test_chunked_body_over_the_limit_is_413(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    chunks = (b"x" * 20_000 for _ in range(10))
    try:
        conn.request("POST", "/v2/models/two/infer", body=chunks, encode_chunked=True)
        resp = conn.getresponse()
        assert resp.status == 413
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may close before the client has finished sending; the status is checked below
    finally:
        conn.close()
    assert infer_json(server, {"inputs": good_inputs()})[0] == 200


def test_malformed_http_is_400(server):
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"GARBAGE / NOT-HTTP\r\n\r\n")
        assert s.recv(1000).startswith(b"HTTP/1.1 400")
    assert infer_json(server, {"inputs": good_inputs()})[0] == 200


def test_failures_are_counted_by_reason(server):
    infer_json(server, {"inputs": good_inputs()[:1]})
    with urllib.request.urlopen(server.base + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    found = re.search(r'modeldeploy_inference_requests_total\{model="two",outcome="failure",protocol="rest",reason="bad_request"\} (\S+)',
                      text)  # fmt: skip
    assert found and float(found.group(1)) >= 1


def failures(server) -> dict[str, float]:
    with urllib.request.urlopen(server.base + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    found = re.findall(
        r'modeldeploy_inference_requests_total\{model="two",outcome="failure",protocol="rest",reason="(\w+)"\} (\S+)',
        text,
    )
    return {reason: float(value) for reason, value in found}


def test_client_errors_are_counted_as_client_errors_never_internal(server):
    before = failures(server)
    for _, doc, headers, _, _ in CASES:
        body, extra = _body(doc)
        post(server, "/v2/models/two/infer", body, {**extra, **headers})
    after = failures(server)
    assert after.get("internal", 0) == before.get("internal", 0) == 0
    assert after["bad_request"] - before.get("bad_request", 0) == len(CASES)


def test_endless_headers_are_cut_off_with_431(server):
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /v2/models/two/infer HTTP/1.1\r\nHost: x\r\nX-Long: ")
        reply = b""
        try:
            for _ in range(100):  # 100 x 4 KB, far past the 64 KB limit
                s.sendall(b"a" * 4096)
                time.sleep(0.001)
        except (BrokenPipeError, ConnectionResetError):
            pass
        s.settimeout(10)
        with contextlib.suppress(ConnectionResetError):
            reply = s.recv(1000)
    assert reply.startswith(b"HTTP/1.1 431"), reply
    assert infer_json(server, {"inputs": good_inputs()})[0] == 200


def exchange(server, data: bytes, head_only: list[bool]) -> list[bytes]:
    """Send raw bytes on one connection and read one response per entry of ``head_only`` (True:
    the answer to a HEAD, which has no body whatever its Content-Length says)."""
    import socket

    out, buf = [], b""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(data)
        for no_body in head_only:
            while b"\r\n\r\n" not in buf:
                chunk = s.recv(65536)
                assert chunk, (out, buf)
                buf += chunk
            head, buf = buf.split(b"\r\n\r\n", 1)
            length = 0 if no_body else int(re.search(rb"content-length: (\d+)", head).group(1))
            while len(buf) < length:
                chunk = s.recv(65536)
                assert chunk, (out, buf)
                buf += chunk
            out.append(head + b"\r\n\r\n" + buf[:length])
            buf = buf[length:]
        s.settimeout(0.5)
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            buf += s.recv(65536)
    assert buf == b"", f"more than {len(head_only)} responses: {out} then {buf!r}"
    return out


def get_request(path: str, method: str = "GET", extra: str = "") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()


def test_upgrade_request_gets_one_response_and_the_connection_goes_on(server):
    upgrade = get_request("/v2/health/live", extra="Connection: Upgrade\r\nUpgrade: websocket\r\n")
    first, second = exchange(server, upgrade + get_request("/v2/health/ready"), [False, False])
    assert first.startswith(b"HTTP/1.1 200") and first.endswith(b'{"live":true}')
    assert second.startswith(b"HTTP/1.1 200") and second.endswith(b'{"ready":true}')


def test_upgrade_request_with_a_body_is_one_400(server):
    body = b'{"inputs": []}'
    upgrade = get_request(
        "/v2/models/two/infer", "POST", f"Connection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: {len(body)}\r\n"
    )
    (reply,) = exchange(server, upgrade + body, [False])
    assert reply.startswith(b"HTTP/1.1 400") and b"upgrade" in reply


def test_head_is_answered_without_a_body(server):
    replies = exchange(server, get_request("/v2/health/live", "HEAD") + get_request("/v2/health/live"), [True, False])
    assert replies[0].startswith(b"HTTP/1.1 200") and b"content-length: 13" in replies[0]
    assert replies[0].endswith(b"\r\n\r\n")
    assert replies[1].endswith(b'{"live":true}')


def test_head_of_a_post_only_path_is_405_without_a_body(server):
    (reply,) = exchange(server, get_request("/v2/models/two/infer", "HEAD"), [True])
    assert reply.startswith(b"HTTP/1.1 405") and reply.endswith(b"\r\n\r\n") and b"allow: POST" in reply


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [("GET", "/v2/models/two/infer", b"POST"), ("POST", "/v2/health/live", b"GET, HEAD"),
     ("DELETE", "/v2/models/two", b"GET, HEAD")],
)  # fmt: skip
def test_405_names_the_allowed_methods(server, method, path, allow):
    (reply,) = exchange(server, get_request(path, method), [False])
    assert reply.startswith(b"HTTP/1.1 405"), reply
    assert b"\r\nallow: " + allow + b"\r\n" in reply
