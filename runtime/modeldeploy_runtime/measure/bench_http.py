"""Latency and throughput of a running server, over plain Open Inference Protocol v2 REST.

Any v2 server works (ours, Triton, KServe, MLServer): the model's metadata says what to send. The
request body is encoded once per batch size and re-sent, JSON or with the binary tensor extension,
over N keep-alive connections by loadgen (one event loop, the same client as `bench/`), so the
client spends its CPU on HTTP and not on encoding; its own CPU use is reported, because a saturated
client measures itself.
"""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Mapping, Sequence
from urllib.parse import quote, urlsplit

import numpy as np

from ..backends.base import V2_TO_NUMPY
from . import data as data_mod
from . import loadgen
from .bench import BenchResult, summarize
from .runner import InputSpec

PROTOCOLS = ("binary", "json")


class ServerError(RuntimeError):
    """The server cannot be benchmarked as asked. The message says what it answered."""


class _Client:
    def __init__(self, url: str, token: str | None, timeout: float):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ServerError(f"--url {url!r}: expected http://HOST:PORT or https://HOST:PORT")
        self._cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self._host, self._port = parts.hostname, parts.port
        self._prefix = parts.path.rstrip("/")
        self._timeout = timeout
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None, headers: Mapping[str, str] | None = None):
        if self._conn is None:
            self._conn = self._cls(self._host, self._port, timeout=self._timeout)
        try:
            self._conn.request(method, self._prefix + path, body=body, headers={**self._headers, **(headers or {})})
            resp = self._conn.getresponse()
            payload = resp.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        if resp.getheader("Connection", "").lower() == "close":
            self.close()
        return resp.status, resp.headers, payload

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def model_path(model: str, version: str | None) -> str:
    path = f"/v2/models/{quote(model, safe='')}"
    return f"{path}/versions/{quote(version, safe='')}" if version else path


def fetch_metadata(client: _Client, model: str, version: str | None) -> dict:
    try:
        status, _, payload = client.request("GET", model_path(model, version))
    except OSError as exc:
        raise ServerError(f"cannot reach the server: {exc}") from exc
    if status == 401:
        raise ServerError("the server wants a bearer token (401): give --token")
    if status != 200:
        raise ServerError(f"model metadata: HTTP {status}: {payload[:300].decode(errors='replace')}")
    return json.loads(payload)


def input_specs(metadata: Mapping) -> list[InputSpec]:
    specs = []
    for tensor in metadata.get("inputs", []):
        datatype = tensor["datatype"]
        if datatype not in V2_TO_NUMPY or datatype == "BYTES":
            raise ServerError(f"input {tensor['name']!r} has datatype {datatype}: cannot generate it")
        specs.append(InputSpec(tensor["name"], V2_TO_NUMPY[datatype], tuple(int(d) for d in tensor["shape"])))
    if not specs:
        raise ServerError("the model's metadata lists no inputs")
    return specs


def encode_request(
    specs: Sequence[InputSpec], feed: Mapping[str, np.ndarray], outputs: Sequence[str], protocol: str
) -> tuple[bytes, dict[str, str]]:
    """An infer request body and its headers, JSON or with the binary tensor data extension."""
    datatypes = {s.name: next(k for k, v in V2_TO_NUMPY.items() if v == s.dtype) for s in specs}
    if protocol == "json":
        body = {
            "inputs": [
                {"name": n, "shape": list(a.shape), "datatype": datatypes[n], "data": a.reshape(-1).tolist()}
                for n, a in feed.items()
            ]
        }
        return json.dumps(body).encode(), {"Content-Type": "application/json"}
    blobs = [np.ascontiguousarray(a).tobytes() for a in feed.values()]
    header = {
        "inputs": [
            {
                "name": n,
                "shape": list(a.shape),
                "datatype": datatypes[n],
                "parameters": {"binary_data_size": len(b)},
            }
            for (n, a), b in zip(feed.items(), blobs, strict=True)
        ],
        "outputs": [{"name": o, "parameters": {"binary_data": True}} for o in outputs],
    }
    head = json.dumps(header).encode()
    return head + b"".join(blobs), {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(head)),
    }


def _run_load(url, token, path, body, headers, concurrency, duration):
    """The timed load, through loadgen (the same client as bench/): `concurrency` keep-alive
    connections each re-sending the prebuilt request."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    head = {**headers, **({"Authorization": f"Bearer {token}"} if token else {})}
    request = loadgen.build_request(parts.hostname, port, parts.path.rstrip("/") + path, body, head)
    tls = ssl.create_default_context() if parts.scheme == "https" else None
    result = loadgen.http_load("bench", parts.hostname, port, request, concurrency, duration, warmup=0, ssl=tls)
    cpu = result.client_cpu_s / result.wall_s if result.wall_s else 0.0
    return result.latencies_s, result.errors, result.wall_s, cpu


def bench_server(
    url: str,
    model: str,
    *,
    version: str | None = None,
    batch_sizes: Sequence[int] = (1,),
    concurrencies: Sequence[int] = (1,),
    protocol: str = "binary",
    duration: float = 5.0,
    warmup: int = 10,
    token: str | None = None,
    timeout: float = 30.0,
    seed: int = 0,
    value_range: tuple[float, float] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> list[BenchResult]:
    if protocol not in PROTOCOLS:
        raise ServerError(f"--protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}")
    client = _Client(url, token, timeout)
    try:
        metadata = fetch_metadata(client, model, version)
        specs = input_specs(metadata)
        outputs = [o["name"] for o in metadata.get("outputs", [])]
        batched = all(s.batched for s in specs)
        if not batched and any(b != 1 for b in batch_sizes):
            raise ServerError(f"model {model!r} has no batch dimension: use --batch-sizes 1")
        path = model_path(model, version) + "/infer"
        results = []
        for batch_size in batch_sizes:
            feed = data_mod.generate(specs, batch_size, seed=seed, value_range=value_range, input_shapes=input_shapes)
            body, headers = encode_request(specs, feed, outputs, protocol)
            for _ in range(max(1, warmup)):
                status, _, payload = client.request("POST", path, body, headers)
                if status != 200:
                    raise ServerError(
                        f"infer with batch size {batch_size}: HTTP {status}: {payload[:300].decode(errors='replace')}"
                    )
            for concurrency in concurrencies:
                latencies, errors, wall, cpu = _run_load(url, token, path, body, headers, concurrency, duration)
                results.append(
                    summarize(
                        latencies,
                        target=f"{url.rstrip('/')}{model_path(model, version)}",
                        runs_on=f"http {protocol}",
                        batch_size=batch_size,
                        concurrency=concurrency,
                        seconds=wall,
                        errors=errors,
                        client_cpu=cpu,
                    )
                )
        return results
    finally:
        client.close()
