"""The cost of the post-rollout analysis' scrape loop, on the local control plane.

200 ModelDeployments (analysis on, a scrape every 10 s: three times the default rate), each with one
pod whose status this script writes (there is no kubelet). One real runtime process
(`modeldeploy-runtime serve`, the digits model, metrics port 9091 on 127.0.0.1) under a small steady
load stands in for every pod: each pod's status says podIP 127.0.0.1, so the operator scrapes that
runtime's real /metrics page once per resource per interval.

Two windows of the same length, after everything has settled:
- A: the pods are Ready but have no IP, so nothing is scraped;
- B: the pods have the runtime's IP, so every resource is scraped (baseline recording).
For each: the operator's CPU seconds, API writes (audit log, anyone but the controller-manager),
reconciles and scrapes. Peak RSS at the end.

    .venv/bin/python bench/operator/analysis.py [--count 200] [--window 60] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import kubernetes
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "hack"), str(ROOT), str(ROOT / "bench" / "operator")]
from localcluster import LocalCluster  # noqa: E402
from run import kubectl, proc_stats  # noqa: E402

from tests.e2e.support import Operator, wait_for  # noqa: E402

GROUP, VERSION, PLURAL = "modeldeploy.dev", "v1alpha1", "modeldeployments"
NS = "scrape"
MODEL = ROOT / "examples" / "models" / "digits-mlp.onnx"
METRICS_PORT = 9091  # the contract's; the operator scrapes pod IPs on it


def manifest(name: str) -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": "file:///models/digits.onnx", "name": "digits"},
            "resources": {"gpu": 0},
            "runtime": {"image": "registry.local/runtime:good"},
            "rollout": {"analysis": {"intervalSeconds": 10, "bakeSeconds": 60}},
        },
    }


def pod_status(pod, ip: str | None) -> dict:
    status = {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": [
            {
                "name": pod.spec.containers[0].name,
                "image": pod.spec.containers[0].image,
                "imageID": "",
                "ready": True,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
            }
        ],
    }
    if ip:
        status.update(podIP=ip, podIPs=[{"ip": ip}])
    return {"status": status}


def start_runtime(tmp: Path) -> tuple[subprocess.Popen, int]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        "MODELDEPLOY_MODEL_PATH": str(MODEL),
        "MODELDEPLOY_MODEL_NAME": "digits",
        "MODELDEPLOY_HOST": "127.0.0.1",
        "MODELDEPLOY_PORT": str(port),
        "MODELDEPLOY_METRICS_PORT": str(METRICS_PORT),
        "MODELDEPLOY_THREADS": "1",
        "MODELDEPLOY_TERMINATION_LOG": str(tmp / "termination-log"),
        "MODELDEPLOY_CACHE_DIR": str(tmp / "cache"),
        "PATH": "/usr/bin:/bin",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "modeldeploy_runtime.cli", "serve"],
        env=env,
        stdout=open(tmp / "runtime.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    wait_for(ready, 60, "the runtime ready")
    return proc, port


def load(port: int, stop: threading.Event, per_second: float = 40.0) -> None:
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [1.0] * 64}]})
    url = f"http://127.0.0.1:{port}/v2/models/digits/infer"
    while not stop.is_set():
        with contextlib.suppress(OSError):
            urllib.request.urlopen(urllib.request.Request(url, body.encode()), timeout=5).read()
        stop.wait(1.0 / per_second)


def window(cluster: LocalCluster, operator: Operator, seconds: float) -> dict[str, float]:
    pid = operator.proc.pid
    since = len(cluster.audited())
    cpu0 = proc_stats(pid)[0]
    rec0 = operator.metric("modeldeploy_operator_reconciles_total", result="ok")
    ok0 = operator.metric("modeldeploy_operator_pod_scrapes_total", result="ok")
    err0 = operator.metric("modeldeploy_operator_pod_scrapes_total", result="error")
    time.sleep(seconds)
    writes = [
        e
        for e in cluster.audited()[since:]
        if e.get("verb") in ("create", "update", "patch", "delete")
        and "kube-controller-manager" not in e.get("userAgent", "")
    ]
    return {
        "cpu_s": proc_stats(pid)[0] - cpu0,
        "api_writes": len(writes),
        "reconciles": operator.metric("modeldeploy_operator_reconciles_total", result="ok") - rec0,
        "scrapes_ok": operator.metric("modeldeploy_operator_pod_scrapes_total", result="ok") - ok0,
        "scrapes_error": operator.metric("modeldeploy_operator_pod_scrapes_total", result="error") - err0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict[str, object] = {"count": args.count, "window_s": args.window}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runtime, port = start_runtime(tmp)
        stop = threading.Event()
        threading.Thread(target=load, args=(port, stop), daemon=True).start()
        cluster = LocalCluster(tmp / "cluster").start(crds=ROOT / "crds")
        try:
            config = kubernetes.client.Configuration()
            kubernetes.config.load_kube_config(str(cluster.kubeconfig), client_configuration=config)
            core = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(config))
            custom = kubernetes.client.CustomObjectsApi(kubernetes.client.ApiClient(config))
            (tmp / "operator").mkdir()
            operator = Operator(cluster.kubeconfig, tmp / "operator", resync_seconds=30).start()
            try:
                core.create_namespace({"metadata": {"name": NS}})
                names = [f"m{i}" for i in range(args.count)]
                kubectl(
                    cluster.kubeconfig, "apply", "-n", NS, "-f", "-", stdin=yaml.safe_dump_all(map(manifest, names))
                )
                pods = wait_for(
                    lambda: (p := core.list_namespaced_pod(NS).items) and len(p) >= args.count and p,
                    300,
                    "every pod",
                    interval=1,
                )

                def statuses() -> list[dict]:
                    return [
                        i.get("status") or {}
                        for i in custom.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)["items"]
                    ]

                for pod in pods:
                    core.patch_namespaced_pod_status(pod.metadata.name, NS, pod_status(pod, None))
                wait_for(
                    lambda: (
                        sum(bool(s.get("lastKnownGood")) and s.get("phase") == "Ready" for s in statuses())
                        == args.count
                    ),
                    300,
                    "every resource Ready and known good",
                    interval=1,
                )
                time.sleep(15)
                results["A_no_pod_ip"] = window(cluster, operator, args.window)

                started = time.perf_counter()
                for pod in pods:
                    core.patch_namespaced_pod_status(pod.metadata.name, NS, pod_status(pod, "127.0.0.1"))
                wait_for(
                    lambda: sum(bool((s.get("hardware") or {}).get("provider")) for s in statuses()) == args.count,
                    300,
                    "status.hardware on every resource",
                    interval=1,
                )
                results["pod_ip_to_hardware_in_status_all_s"] = round(time.perf_counter() - started, 1)
                sample = statuses()[0]["hardware"]
                results["hardware_sample"] = sample
                time.sleep(15)
                results["B_scraped"] = window(cluster, operator, args.window)
                results["operator_peak_rss_mib"] = round(proc_stats(operator.proc.pid)[1] / 2**20, 1)
                results["scrape_cpu_ms_per_pod"] = round(
                    1000
                    * (results["B_scraped"]["cpu_s"] - results["A_no_pod_ip"]["cpu_s"])
                    / max(1.0, results["B_scraped"]["scrapes_ok"]),
                    2,
                )
            finally:
                operator.stop()
        finally:
            cluster.stop()
            stop.set()
            runtime.terminate()
            runtime.wait(10)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
