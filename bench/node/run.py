"""Real-node benchmark: the product as users run it, timed on this machine's real node.

    .venv/bin/python bench/node/run.py [--json out.json]      # ~5 min; needs root (hack/realnode.py)

Measures, one after the other:
- the time to build each image from the Dockerfile (podman, no layer cache) and to find it cached;
- node cold start to Ready (control plane, containerd, kubelet, kube-proxy, scheduler; the images
  already in containerd's store) and the teardown;
- `helm install` to the operator Ready, in the cluster;
- `kubectl apply -f examples/digits-cpu.yaml` to both pods Ready through their readiness probes;
- for each failure kind (the runtime's termination message, an image pull error, a crash loop):
  from the kubelet's failure signal (the first pod status that shows it) to the known good
  template applied to the Deployment, and to the known good pods Ready again;
- the operator's API writes over two in-sync resyncs (the API server's audit log) and its peak RSS,
  running in the cluster.

Status is polled every 50 ms through the API, so each figure is good to about that.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import kubernetes

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "hack")]
import chart  # noqa: E402
import images  # noqa: E402
import realnode  # noqa: E402

NS, NAME = "bench", "digits"
OPERATOR_SA = "system:serviceaccount:modeldeploy-system:modeldeploy-operator"
WRITES = {"create", "update", "patch", "delete", "deletecollection"}
POLL_S = 0.05
warnings.filterwarnings("ignore")  # the node's API server has a self-signed certificate


def until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found, time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout:.0f} s")
        time.sleep(POLL_S)


class Bench:
    def __init__(self, node: realnode.RealNode):
        self.node = node
        config = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(str(node.kubeconfig), client_configuration=config)
        client = kubernetes.client.ApiClient(config)
        self.core, self.apps = kubernetes.client.CoreV1Api(client), kubernetes.client.AppsV1Api(client)

    def kubectl(self, *args: str) -> str:
        return subprocess.run(
            ["kubectl", f"--kubeconfig={self.node.kubeconfig}", *args], check=True, capture_output=True, text=True
        ).stdout

    def pods(self):
        return [
            p
            for p in self.core.list_namespaced_pod(NS, label_selector=f"modeldeploy.dev/name={NAME}").items
            if not p.metadata.deletion_timestamp
        ]

    def template(self) -> tuple[str, str]:
        c = self.apps.read_namespaced_deployment(NAME, NS).spec.template.spec.containers[0]
        budget = next((e.value for e in c.env or [] if e.name == "MODELDEPLOY_LATENCY_BUDGET_MS"), "")
        return c.image, budget

    def good_pods_ready(self, good: tuple[str, str], replicas: int = 2) -> bool:
        if self.template() != good:
            return False
        d = self.apps.read_namespaced_deployment(NAME, NS)
        s = d.status
        return (
            (s.observed_generation or 0) >= d.metadata.generation
            and (s.updated_replicas or 0) == replicas
            and (s.ready_replicas or 0) == replicas == (s.replicas or 0)
        )

    def failure(self, signal) -> bool:
        for pod in self.pods():
            for cs in pod.status.container_statuses or []:
                if signal(cs):
                    return True
        return False

    def patch(self, spec: dict) -> None:
        self.kubectl("patch", "mdep", NAME, "-n", NS, "--type=merge", "-p", json.dumps({"spec": spec}))

    def rollback(self, spec: dict, signal, good: tuple[str, str]) -> dict[str, float]:
        self.patch(spec)
        _, failed = until(lambda: self.failure(signal), 240, "failure signal")
        _, applied = until(lambda: self.template() == good, 60, "known good template")
        _, ready = until(lambda: self.good_pods_ready(good), 120, "known good pods Ready")
        return {"signal_to_template_s": applied - failed, "signal_to_ready_s": ready - failed}


def latency_signal(cs) -> bool:
    t = (cs.state.terminated if cs.state else None) or (cs.last_state.terminated if cs.last_state else None)
    return bool(t and (t.message or "").startswith("latency budget exceeded"))


def pull_signal(cs) -> bool:
    return bool(cs.state and cs.state.waiting and cs.state.waiting.reason in ("ErrImagePull", "ImagePullBackOff"))


def crash_signal(cs) -> bool:
    return bool(cs.state and cs.state.waiting and cs.state.waiting.reason == "CrashLoopBackOff" and cs.restart_count)


def peak_rss_mib(name: str) -> float:
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if name.encode() in (proc / "cmdline").read_bytes():
                hwm = next(x for x in (proc / "status").read_text().splitlines() if x.startswith("VmHWM"))
                return int(hwm.split()[1]) / 1024
        except (OSError, StopIteration):
            continue
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--resync-seconds", type=int, default=30, help="the chart's resyncSeconds (its default)")
    args = parser.parse_args(argv)
    reason = realnode.why_not() or images.have_podman()
    if reason:
        print(f"bench/node: {reason}", file=sys.stderr)
        return 1
    results: dict[str, float] = {}
    refs = {}
    for target in images.TARGETS:
        started = time.monotonic()
        refs[target] = images.build(target, log=lambda _: None, fresh=True)
        results[f"build_{target}_s"] = time.monotonic() - started
        started = time.monotonic()
        images.build(target)
        results[f"cached_{target}_s"] = time.monotonic() - started
    node = realnode.RealNode(Path(tempfile.mkdtemp(prefix="mdbench-")), images=tuple(refs.values())).start()
    results["node_ready_s"] = node.timings["node_ready_s"]
    results["images_loaded_s"] = node.timings["images_loaded_s"]
    try:
        bench = Bench(node)
        started = time.monotonic()
        chart.install(node.kubeconfig, refs, f"resyncSeconds={args.resync_seconds}").check_returncode()
        results["helm_install_to_operator_ready_s"] = time.monotonic() - started
        bench.kubectl("create", "namespace", NS)
        started = time.monotonic()
        bench.kubectl("apply", "-n", NS, "-f", str(ROOT / "examples" / "digits-cpu.yaml"))
        until(lambda: bench.apps.read_namespaced_deployment(NAME, NS).status.ready_replicas == 2, 180, "2/2 Ready")
        results["apply_to_all_pods_ready_s"] = time.monotonic() - started
        good = bench.template()
        for kind, spec, signal in (
            ("latency_budget", {"runtime": {"latencyBudget": {"p95Milliseconds": 0.001}}}, latency_signal),
            ("image_pull", {"runtime": {"image": "localhost/modeldeploy/does-not-exist:0",
                                        "latencyBudget": {"p95Milliseconds": 50}}}, pull_signal),
            ("crash_loop", {"runtime": {"image": refs["operator"]}, "rollout": {"crashLoopRestarts": 1}}, crash_signal),
        ):  # fmt: skip
            for key, value in bench.rollback(spec, signal, good).items():
                results[f"{kind}_{key}"] = value
        unschedulable = [e for e in bench.core.list_namespaced_event(NS).items if e.reason == "FailedScheduling"]
        results["failed_scheduling_events"] = sum(e.count or 1 for e in unschedulable)
        for e in unschedulable[:3]:
            print(f"FailedScheduling: {e.message}", file=sys.stderr)
        # Back to the known good spec, then two resyncs with nothing to do.
        bench.patch({"runtime": {"image": None}, "rollout": {"crashLoopRestarts": 3}})
        until(lambda: bench.good_pods_ready(good), 120, "in sync")
        time.sleep(5)
        since = len(node.cluster.audited())
        time.sleep(2 * args.resync_seconds + 2)
        events = node.cluster.audited()[since:]
        ours = [e for e in events if e.get("user", {}).get("username") == OPERATOR_SA]
        results["operator_requests_in_two_resyncs"] = len(ours)
        results["operator_writes_in_two_resyncs"] = sum(e["verb"] in WRITES for e in ours)
        results["operator_peak_rss_mib"] = peak_rss_mib("modeldeploy-operator")
    finally:
        node.stop()
        results["teardown_s"] = node.timings["teardown_s"]
    width = max(map(len, results))
    for key, value in results.items():
        print(f"{key:<{width}}  {value:8.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
