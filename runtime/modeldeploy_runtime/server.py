"""The server's life: listen at once (so liveness answers while the model loads), load and warm
the model off the event loop, pass the latency gate and the golden set, become ready; on SIGTERM drop readiness at
once, let in-flight requests finish, stop.

A start that cannot succeed writes one line to the termination log and exits non-zero, so the
operator can tell the user why (docs/architecture.md, "Termination message").
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
import sys
import threading
import time

from .app import BINARY_HEADER, App
from .backends import load_backend
from .backends.base import (
    Backend,
    BackendError,
    GpuUnavailableError,
    ProviderMismatchError,
    UnsupportedConfigurationError,
)
from .config import RuntimeConfig
from .cpu import default_threads
from .dataplane import DataPlane
from .errors import GpuUnavailable, InvalidConfiguration, ModelLoadFailed, ProviderMismatch, StartupError
from .fetch import resolve_model
from .golden import Tolerances, check_golden_gate, fetch_golden_set
from .httpserver import HttpServer
from .malloc import keep_freed_memory
from .metrics import Metrics
from .termination import write_termination_message
from .warmup import check_latency_gate, run_warmup

log = logging.getLogger("modeldeploy_runtime")

# The GIL is handed between the event loop and the inference thread at most every switch interval
# when both want it; the default 5 ms would add up to 5 ms to a request whose result is ready.
SWITCH_INTERVAL_S = 0.0005
# Kubernetes kills the pod 30 s after SIGTERM by default; in-flight requests get most of that.
DRAIN_TIMEOUT_S = 25


def load_model(config: RuntimeConfig, threads: int) -> tuple[Backend, float | None]:
    """Fetch, load, warm up and gate the model. Runs on a loader thread; raises StartupError."""
    t0 = time.perf_counter()
    path = resolve_model(config.model_path, config.model_sha256, config.cache_dir, config.source_options())
    golden_path = None
    if config.golden_set_path:  # fetched first: a wrong location fails before a long model load
        golden_path = fetch_golden_set(
            config.golden_set_path, config.golden_set_sha256, config.cache_dir, config.source_options()
        )
    try:
        backend = load_backend(config, path, threads=threads)
    except GpuUnavailableError as exc:
        raise GpuUnavailable(str(exc)) from exc
    except ProviderMismatchError as exc:
        raise ProviderMismatch(str(exc)) from exc
    except UnsupportedConfigurationError as exc:
        raise InvalidConfiguration(str(exc)) from exc
    except BackendError as exc:
        raise ModelLoadFailed(str(exc)) from exc
    log.info(
        "model %s loaded from %s in %.2f s: platform %s, providers %s, max batch %d",
        config.model_name,
        path,
        time.perf_counter() - t0,
        backend.info.platform,
        ",".join(backend.info.providers),
        backend.max_batch_size,
    )
    try:
        latencies = run_warmup(backend, config.warmup_requests)
    except Exception as exc:
        # Warm-up feeds generated inputs, with 1 for every dynamic dimension; some models cannot
        # run on those yet serve real inputs well. Only the latency gate truly needs warm-up.
        if config.latency_budget_ms > 0:
            backend.close()
            raise ModelLoadFailed(
                f"warm-up inference on generated inputs (dynamic dimensions set to 1) failed: {exc}; the "
                "latency gate needs it: give the model fixed non-batch dimensions, or set "
                "MODELDEPLOY_LATENCY_BUDGET_MS=0"
            ) from exc
        log.warning("warm-up skipped: inference on generated inputs (dynamic dimensions set to 1) failed: %s", exc)
        latencies = []
    try:
        p95 = check_latency_gate(latencies, config.latency_budget_ms, config.latency_gate)
        if golden_path is not None:
            tolerances = Tolerances(
                max_abs_error=config.golden_set_max_abs_error,
                max_rel_error=config.golden_set_max_rel_error,
                min_top1=config.golden_set_min_top1_agreement,
            )
            check_golden_gate(backend, golden_path, tolerances)
    except StartupError:
        backend.close()
        raise
    return backend, p95


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise InvalidConfiguration(
            f"cannot listen on {host}:{port} ({exc.strerror}); set MODELDEPLOY_PORT to a free port"
        ) from exc
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def _load_in_thread(config: RuntimeConfig, threads: int):
    """Run load_model on a daemon thread, so a SIGTERM during a long download need not wait for it."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(result, error) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def target():
        try:
            result = load_model(config, threads)
        except StartupError as exc:
            loop.call_soon_threadsafe(settle, None, exc)
        except Exception as exc:  # a bug or an odd library error: still a reason the operator can show
            log.exception("model load failed")
            loop.call_soon_threadsafe(settle, None, ModelLoadFailed(f"{type(exc).__name__}: {exc}"))
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=target, name="model-loader", daemon=True).start()
    return await future


async def run(config: RuntimeConfig, sock: socket.socket, metrics: Metrics) -> int:
    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    keep_freed_memory()
    threads = config.threads or default_threads()
    dataplane = DataPlane(
        config.model_name,
        config.model_version,
        metrics,
        config.max_queue_delay_us / 1e6,
        config.max_queue_size,
        config.queue_timeout_us / 1e6,
    )
    app = App(dataplane, config.auth_token, config.max_body_bytes)
    http = HttpServer(app, app.too_large, config.max_body_bytes, payload_offset_header=BINARY_HEADER, screen=app.screen)
    stop = asyncio.Event()
    hurry = asyncio.Event()  # a second signal, or SIGINT: no drain delay
    grpc_server = None

    def on_signal(signame: str) -> None:
        if stop.is_set() or signame != "SIGTERM":
            hurry.set()
        else:
            log.info("%s: readiness off, finishing in-flight requests", signame)
        dataplane.drain()  # readiness drops before anything else happens
        http.draining = True
        if grpc_server is not None:
            grpc_server.drain()  # gRPC clients are told (GOAWAY) to take their next calls elsewhere
        if hurry.is_set() or not config.drain_delay_s:
            http.stop_accepting()  # no drain delay: new connections are refused from this moment
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    await http.start(sock)
    if config.grpc_port:
        from .grpc_app import GrpcServer  # imported only when gRPC is served

        grpc_server = GrpcServer(dataplane, config.host, config.grpc_port, config.auth_token, config.max_body_bytes)
        try:
            await grpc_server.start()
        except StartupError as exc:
            log.error("%s", exc.termination_message)
            write_termination_message(config.termination_log, exc.termination_message)
            await http.stop(timeout_s=1)
            return 1
    loading = asyncio.ensure_future(_load_in_thread(config, threads))
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({stopping, loading}, return_when=asyncio.FIRST_COMPLETED)
    if not loading.done():
        log.info("stopped before the model was ready")
        await _stop_grpc(grpc_server, 1)
        await http.stop(timeout_s=5)
        return 0
    try:
        backend, warmup_p95_ms = loading.result()
    except StartupError as exc:
        dataplane.fail()
        log.error("%s", exc.termination_message)
        write_termination_message(config.termination_log, exc.termination_message)
        await _stop_grpc(grpc_server, 0)
        await http.stop(timeout_s=1)
        return 1
    dataplane.attach(backend, warmup_p95_ms)
    metrics.model_loaded(backend.info, warmup_p95_ms)
    if metrics.enable_gpu():
        log.info("GPU metrics from NVML enabled")
    gc.collect()
    gc.freeze()  # the model and libraries stay: later collections need not scan them
    dataplane.set_ready()
    log.info(
        "ready: model %s version %s on port %d%s, %d inference threads, %.2f s after start",
        config.model_name,
        config.model_version,
        sock.getsockname()[1],
        f" (gRPC on {grpc_server.port})" if grpc_server else "",
        threads,
        time.perf_counter() - started,
    )
    await stopping
    delay = 0.0 if hurry.is_set() else config.drain_delay_s
    if delay:
        # Readiness is off, but the endpoint leaves kube-proxy's rules a moment later: what still
        # arrives is served, each connection closing after its answer so clients reconnect elsewhere.
        log.info("serving %g s more while the endpoint is removed (MODELDEPLOY_DRAIN_DELAY_S)", delay)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(hurry.wait(), delay)
    http.stop_accepting()
    budget = max(1.0, DRAIN_TIMEOUT_S - delay)
    # gRPC refuses new calls from here and lets those in progress finish within the budget
    grpc_stopping = asyncio.ensure_future(_stop_grpc(grpc_server, budget))
    if not await dataplane.wait_idle(budget):
        log.warning("requests still in flight after %g s; stopping anyway", budget)
    await http.stop(timeout_s=5)
    await grpc_stopping
    app.close()
    dataplane.close()
    log.info("stopped")
    return 0


async def _stop_grpc(server, grace_s: float) -> None:
    if server is not None:
        await server.stop(grace_s)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("hpack").setLevel(logging.INFO)  # at debug it logs every header of every call


def serve(config: RuntimeConfig) -> int:
    configure_logging(config.log_level)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        sock = bind(config.host, config.port)
    except StartupError as exc:
        log.error("%s", exc.termination_message)
        write_termination_message(config.termination_log, exc.termination_message)
        return 1
    metrics = Metrics(config.model_name)
    if config.metrics_port:
        from prometheus_client import start_http_server

        try:
            start_http_server(config.metrics_port, addr=config.host, registry=metrics.registry)
        except OSError as exc:
            message = InvalidConfiguration(
                f"cannot serve metrics on {config.host}:{config.metrics_port} "
                f"({exc.strerror}); set MODELDEPLOY_METRICS_PORT to a free port, or 0"
            ).termination_message
            log.error("%s", message)
            write_termination_message(config.termination_log, message)
            return 1
    try:
        import uvloop
    except ImportError:  # pragma: no cover - not on Windows
        return asyncio.run(run(config, sock, metrics))
    return uvloop.run(run(config, sock, metrics))
