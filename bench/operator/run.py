"""Operator benchmark on the local control plane (hack/localcluster.py).

Measures, with the operator running as its own process:
- time from `kubectl apply` to every child present and status written, for 1 resource and for N at
  once (default 200);
- the operator's CPU time and peak RSS over the run;
- API writes per in-sync resync and API reads per in-sync reconcile (from the API server's audit
  log; the resync's one LIST of ModelDeployments per pass is counted apart);
- time from the decisive failure signal (a pod in CrashLoopBackOff) to the last known good template
  applied to the Deployment.

    .venv/bin/python bench/operator/run.py [--count 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import kubernetes
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "hack"), str(ROOT)]
from localcluster import LocalCluster  # noqa: E402

from tests.e2e.support import Operator, set_pod_crash_loop, set_pod_ready, wait_for  # noqa: E402

GROUP, VERSION, PLURAL = "modeldeploy.dev", "v1alpha1", "modeldeployments"
CHILDREN = ("deployments", "services", "networkpolicies", "poddisruptionbudgets")


def manifest(name: str, image: str = "registry.local/runtime:good") -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {"model": {"uri": "file:///models/m.onnx"}, "resources": {"gpu": 0}, "runtime": {"image": image}},
    }


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", *args], input=stdin, capture_output=True, text=True, timeout=300
    )
    if result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr}")
    return result.stdout


def proc_stats(pid: int) -> tuple[float, int]:
    """(CPU seconds, peak RSS bytes) of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    hwm = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmHWM"))
    return cpu, int(hwm.split()[1]) * 1024


def all_converged(custom, apps, core, net, policy, namespace: str, names: set[str]) -> bool:
    crs = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
    done = {c["metadata"]["name"] for c in crs if (c.get("status") or {}).get("observedGeneration") == 1}
    if not names <= done:
        return False
    have = [
        {o.metadata.name for o in apps.list_namespaced_deployment(namespace).items},
        {o.metadata.name for o in core.list_namespaced_service(namespace).items},
        {o.metadata.name for o in net.list_namespaced_network_policy(namespace).items},
        {o["metadata"]["name"] for o in policy(namespace)},
    ]
    return all(names <= h for h in have)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cluster = LocalCluster(Path(tmp) / "cluster").start(crds=ROOT / "crds")
        try:
            config = kubernetes.client.Configuration()
            kubernetes.config.load_kube_config(str(cluster.kubeconfig), client_configuration=config)
            client = kubernetes.client.ApiClient(config)
            custom, apps = kubernetes.client.CustomObjectsApi(client), kubernetes.client.AppsV1Api(client)
            core, net = kubernetes.client.CoreV1Api(client), kubernetes.client.NetworkingV1Api(client)

            def pdbs(namespace: str) -> list:
                code, body = cluster.request(f"/apis/policy/v1beta1/namespaces/{namespace}/poddisruptionbudgets")
                return json.loads(body)["items"] if code == 200 else []

            log_dir = Path(tmp) / "operator"
            log_dir.mkdir()
            operator = Operator(cluster.kubeconfig, log_dir, resync_seconds=10).start()
            pid = operator.proc.pid
            try:
                for ns in ("one", "many", "fail"):
                    core.create_namespace({"metadata": {"name": ns}})

                t0 = time.perf_counter()
                kubectl(cluster.kubeconfig, "apply", "-n", "one", "-f", "-", stdin=json.dumps(manifest("m0")))
                wait_for(
                    lambda: all_converged(custom, apps, core, net, pdbs, "one", {"m0"}),
                    60,
                    "one resource",
                    interval=0.02,
                )
                results["apply_to_converged_1_s"] = time.perf_counter() - t0

                names = {f"m{i}" for i in range(args.count)}
                docs = yaml.safe_dump_all([manifest(n) for n in sorted(names)])
                cpu0, _ = proc_stats(pid)
                t0 = time.perf_counter()
                kubectl(cluster.kubeconfig, "apply", "-n", "many", "-f", "-", stdin=docs)
                results["kubectl_apply_many_s"] = time.perf_counter() - t0
                wait_for(
                    lambda: all_converged(custom, apps, core, net, pdbs, "many", names),
                    600,
                    f"{args.count} resources",
                    interval=0.5,
                )
                results[f"apply_to_converged_{args.count}_s"] = time.perf_counter() - t0
                results[f"operator_cpu_s_for_{args.count}"] = proc_stats(pid)[0] - cpu0

                # In sync: every Deployment controller update seen and reflected in status.
                def settled() -> bool:
                    items = custom.list_namespaced_custom_object(GROUP, VERSION, "many", PLURAL)["items"]
                    reasons = {
                        c["reason"]
                        for i in items
                        for c in i.get("status", {}).get("conditions", [])
                        if c["type"] == "Progressing"
                    }
                    return len(items) == args.count and reasons == {"RolloutInProgress"}

                wait_for(settled, 300, "every rollout observed", interval=1)
                since = len(cluster.audited())
                reconciles = operator.metric("modeldeploy_operator_reconciles_total", result="ok")
                wait_for(
                    lambda: (
                        operator.metric("modeldeploy_operator_reconciles_total", result="ok")
                        >= reconciles + 2 * (args.count + 1)
                    ),
                    120,
                    "two full resyncs",
                    interval=0.5,
                )
                resyncs = operator.metric("modeldeploy_operator_reconciles_total", result="ok") - reconciles
                window = [
                    e
                    for e in cluster.audited()[since:]
                    if "kube-controller-manager" not in e.get("userAgent", "")
                    and "kube-apiserver" not in e.get("userAgent", "")
                    and e.get("stage") == "ResponseComplete"
                ]
                writes = [e for e in window if e.get("verb") in ("create", "update", "patch", "delete")]
                reads = [e for e in window if e.get("verb") in ("get", "list")]
                # The resync pass's own listing of the resources is one request per pass, not per reconcile.
                passes = [e for e in reads if e["objectRef"].get("resource") == PLURAL and e.get("verb") == "list"]
                results["api_reads_per_in_sync_reconcile"] = (len(reads) - len(passes)) / max(resyncs, 1)
                results["resync_lists_observed"] = len(passes)
                read_kinds = collections.Counter(
                    f"{e['verb']} {e['objectRef'].get('resource')}" for e in reads if e not in passes
                )
                if read_kinds:
                    print("reads during the in-sync resyncs:", dict(read_kinds), file=sys.stderr)
                results["api_writes_per_in_sync_resync"] = len(writes) / 2
                breakdown = collections.Counter(
                    f"{e['verb']} {e['objectRef'].get('resource')}/{e['objectRef'].get('subresource', '')} "
                    f"{e.get('userAgent', '').split(' ')[0]}"
                    for e in writes
                )
                if breakdown:
                    print("writes during the in-sync resyncs:", dict(breakdown), file=sys.stderr)
                results["resyncs_observed"] = resyncs

                # Rollback: from the decisive signal to the known good template applied.
                kubectl(cluster.kubeconfig, "apply", "-n", "fail", "-f", "-", stdin=json.dumps(manifest("r")))
                pod = wait_for(lambda: core.list_namespaced_pod("fail").items, 30, "pod")[0]
                set_pod_ready(core, pod)
                wait_for(
                    lambda: (
                        custom.get_namespaced_custom_object(GROUP, VERSION, "fail", PLURAL, "r")
                        .get("status", {})
                        .get("phase")
                        == "Ready"
                    ),
                    30,
                    "Ready",
                )
                kubectl(
                    cluster.kubeconfig,
                    "apply",
                    "-n",
                    "fail",
                    "-f",
                    "-",
                    stdin=json.dumps(manifest("r", image="registry.local/runtime:bad")),
                )
                bad = wait_for(
                    lambda: [
                        p for p in core.list_namespaced_pod("fail").items if p.spec.containers[0].image.endswith(":bad")
                    ],
                    30,
                    "bad pod",
                )[0]
                t0 = time.perf_counter()
                set_pod_crash_loop(core, bad, restarts=3, message="boom")
                wait_for(
                    lambda: (
                        apps.read_namespaced_deployment("r", "fail")
                        .spec.template.spec.containers[0]
                        .image.endswith(":good")
                    ),
                    30,
                    "rollback applied",
                    interval=0.02,
                )
                results["failure_signal_to_rollback_applied_s"] = time.perf_counter() - t0
                results["operator_peak_rss_mib"] = proc_stats(pid)[1] / 2**20
                results["operator_cpu_s_total"] = proc_stats(pid)[0]
            finally:
                operator.stop()
        finally:
            cluster.stop()
    print(json.dumps({k: round(v, 3) for k, v in results.items()}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
