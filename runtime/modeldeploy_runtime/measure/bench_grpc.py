"""Latency and throughput of a running server over the v2 gRPC API (``inference.GRPCInferenceService``).

Any v2 gRPC server works (ours, Triton, KServe): ModelMetadata says what to send. The request is
serialized once per batch size and re-sent as bytes, so the client spends no CPU on protobuf;
``concurrency`` calls are kept in flight on one channel (HTTP/2 streams of one connection, as
tritonclient and most gRPC clients do) from one asyncio loop. The client's CPU (its own threads
and gRPC's) is reported, because a saturated client measures itself.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Mapping, Sequence

import numpy as np

from ..types import V2_TO_NUMPY
from . import data as data_mod
from .bench import BenchResult, summarize
from .bench_http import ServerError
from .runner import InputSpec

METHOD = "/inference.GRPCInferenceService/ModelInfer"


def target_of(url: str) -> str:
    """``grpc://HOST:PORT`` or ``HOST:PORT`` -> ``HOST:PORT``."""
    target = url.removeprefix("grpc://").rstrip("/")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ServerError(f"--url {url!r}: with --protocol grpc, expected grpc://HOST:PORT or HOST:PORT")
    return target


def _pb():
    from ..v2grpc import grpc_service_pb2  # grpc and protobuf are imported only for gRPC benchmarks

    return grpc_service_pb2


def encode_request(model: str, version: str | None, feed: Mapping[str, np.ndarray], outputs: Sequence[str]) -> bytes:
    """A serialized ModelInferRequest with every input in raw_input_contents."""
    pb = _pb()
    datatypes = {dt: name for name, dt in V2_TO_NUMPY.items()}
    request = pb.ModelInferRequest(model_name=model, model_version=version or "")
    for name, arr in feed.items():
        request.inputs.add(name=name, datatype=datatypes[arr.dtype], shape=arr.shape)
        request.raw_input_contents.append(np.ascontiguousarray(arr).tobytes())
    for name in outputs:
        request.outputs.add(name=name)
    return request.SerializeToString()


def _metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


async def _load(target, body, concurrency, duration, warmup, metadata, timeout):
    import grpc

    async with grpc.aio.insecure_channel(target, options=[("grpc.max_receive_message_length", -1)]) as channel:
        call = channel.unary_unary(METHOD)  # bytes in, bytes out: no protobuf on the client
        for _ in range(max(1, warmup)):
            await call(body, metadata=metadata, timeout=timeout)
        latencies: list[float] = []
        errors = 0
        window = [0.0, 0.0]  # first send, last answer

        async def worker(stop_at: float) -> None:
            nonlocal errors
            while True:
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                try:
                    await call(body, metadata=metadata, timeout=timeout)
                except grpc.RpcError:
                    errors += 1
                    continue
                done = time.perf_counter()
                latencies.append(done - t0)
                window[1] = max(window[1], done)

        start = time.perf_counter()
        window[0] = start
        await asyncio.gather(*(worker(start + duration) for _ in range(concurrency)))
        return latencies, errors, max(1e-9, window[1] - window[0])


def grpc_load(
    target: str,
    body: bytes,
    concurrency: int,
    duration: float,
    *,
    warmup: int = 10,
    token: str | None = None,
    timeout: float = 30.0,
) -> tuple[list[float], int, float, float]:
    """(latencies in s, errors, measured seconds, client CPU as a fraction of one core) of
    ``concurrency`` closed-loop callers sending ``body`` (a serialized ModelInferRequest)."""
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    latencies, errors, seconds = asyncio.run(
        _load(target, body, concurrency, duration, warmup, _metadata(token), timeout)
    )
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return latencies, errors, seconds, cpu / wall if wall > 0 else 0.0


def fetch_metadata(
    target: str, model: str, version: str | None, token: str | None, timeout: float
) -> tuple[list[InputSpec], list[str]]:
    """The model's inputs and the names of its outputs, from ModelMetadata."""
    import grpc

    pb = _pb()
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelMetadata",
            request_serializer=pb.ModelMetadataRequest.SerializeToString,
            response_deserializer=pb.ModelMetadataResponse.FromString,
        )
        try:
            meta = call(
                pb.ModelMetadataRequest(name=model, version=version or ""), metadata=_metadata(token), timeout=timeout
            )
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise ServerError("the server wants a bearer token (UNAUTHENTICATED): give --token") from None
            raise ServerError(f"model metadata over gRPC: {exc.code().name}: {exc.details()}") from None
    specs = []
    for tensor in meta.inputs:
        if tensor.datatype not in V2_TO_NUMPY or tensor.datatype == "BYTES":
            raise ServerError(f"input {tensor.name!r} has datatype {tensor.datatype}: cannot generate it")
        specs.append(InputSpec(tensor.name, V2_TO_NUMPY[tensor.datatype], tuple(int(d) for d in tensor.shape)))
    if not specs:
        raise ServerError("the model's metadata lists no inputs")
    return specs, [o.name for o in meta.outputs]


def bench_grpc_server(
    url: str,
    model: str,
    *,
    version: str | None = None,
    batch_sizes: Sequence[int] = (1,),
    concurrencies: Sequence[int] = (1,),
    duration: float = 5.0,
    warmup: int = 10,
    token: str | None = None,
    timeout: float = 30.0,
    seed: int = 0,
    value_range: tuple[float, float] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> list[BenchResult]:
    import grpc

    target = target_of(url)
    specs, outputs = fetch_metadata(target, model, version, token, timeout)
    if not all(s.batched for s in specs) and any(b != 1 for b in batch_sizes):
        raise ServerError(f"model {model!r} has no batch dimension: use --batch-sizes 1")
    results = []
    for batch_size in batch_sizes:
        feed = data_mod.generate(specs, batch_size, seed=seed, value_range=value_range, input_shapes=input_shapes)
        body = encode_request(model, version, feed, outputs)
        for concurrency in concurrencies:
            try:
                latencies, errors, seconds, cpu = grpc_load(
                    target, body, concurrency, duration, warmup=warmup, token=token, timeout=timeout
                )
            except grpc.RpcError as exc:  # a warm-up call failed: nothing to measure
                raise ServerError(f"infer with batch size {batch_size}: {exc.code().name}: {exc.details()}") from None
            results.append(
                summarize(
                    latencies,
                    target=f"grpc://{target}/{model}",
                    runs_on="grpc",
                    batch_size=batch_size,
                    concurrency=concurrency,
                    seconds=seconds,
                    errors=errors,
                    client_cpu=cpu,
                )
            )
    return results
