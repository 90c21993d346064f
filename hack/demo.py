"""The whole loop in one command (`make demo`). One script, over the usual size, so that a reader
follows the demo as it runs; the pod statuses of --played-kubelet come from playedkubelet.py.

1. By default a real single-node Kubernetes starts on this machine (hack/realnode.py), the images
   are built from the Dockerfile (hack/images.py), and the chart is installed with helm: the
   operator runs in the cluster. When $KUBECONFIG is set, that cluster is used instead, with the
   operator on this machine (`--local` forces a local cluster).
2. `examples/digits-cpu.yaml` is applied; `kubectl get mdep` and the children are shown.
3. The kubelet runs the runtime image; its readiness probe says when the model is loaded, warmed
   up and within its latency budget.
4. A real Open Inference Protocol v2 request, through the Service, classifies a handwritten digit.
5. An update sets a latency budget no model can meet: the runtime refuses to become ready and says
   why in its termination message, the operator sees the rollout fail and rolls back to the last
   known good revision.

Where this machine cannot run a node (not root, no cgroups, no podman), or with `--played-kubelet`,
the demo says why and falls back to a control plane without a kubelet: this script plays the
kubelet, starting the real runtime (`modeldeploy-runtime serve`) with each pod's environment and
reporting its readiness and termination message.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from pathlib import Path

import kubernetes

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "hack"), str(ROOT)]
import chart  # noqa: E402
import images  # noqa: E402
import playedkubelet  # noqa: E402
import realnode  # noqa: E402
from localcluster import LocalCluster  # noqa: E402
from ports import free_port  # noqa: E402

from tests.e2e.support import Operator, wait_for  # noqa: E402

NS = "modeldeploy-demo"
EXAMPLE = ROOT / "examples" / "digits-cpu.yaml"
IMAGE_MODELS = "/opt/modeldeploy/models/"  # where the runtime image carries examples/models/
warnings.filterwarnings("ignore")  # the local control plane has a self-signed certificate


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


class Demo:
    def __init__(self, kubeconfig: Path, workdir: Path, play_kubelet: bool, on_node: bool = False):
        self.kubeconfig, self.workdir, self.play_kubelet = kubeconfig, workdir, play_kubelet
        self.on_node = on_node  # ClusterIPs are reachable from this machine
        config = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(str(kubeconfig), client_configuration=config)
        client = kubernetes.client.ApiClient(config)
        self.core = kubernetes.client.CoreV1Api(client)
        self.apps = kubernetes.client.AppsV1Api(client)
        self.custom = kubernetes.client.CustomObjectsApi(client)
        self.patience = 1 if play_kubelet or on_node else 5  # a remote cluster pulls a large image first
        self.runtimes: dict[str, tuple[subprocess.Popen, int, Path]] = {}  # pod -> (process, port, term log)
        self.forward: tuple[subprocess.Popen, int] | None = None

    def kubectl(self, *args: str, show: bool = True, stdin: str | None = None) -> str:
        if show:
            print(f"$ kubectl {' '.join(args)}", flush=True)
        out = subprocess.run(
            ["kubectl", f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            input=stdin,
            timeout=60,
        )
        if out.returncode != 0:
            raise RuntimeError(out.stderr)
        if show:
            print(out.stdout.rstrip(), flush=True)
        return out.stdout

    def status(self) -> dict:
        obj = self.custom.get_namespaced_custom_object("modeldeploy.dev", "v1alpha1", NS, "modeldeployments", "digits")
        return obj.get("status") or {}

    # ---- playing the kubelet with the real runtime ------------------------------------------------

    def tend_pods(self) -> None:
        """One pass of the pretend kubelet over the demo's pods."""
        for pod in self.core.list_namespaced_pod(NS, label_selector="modeldeploy.dev/name=digits").items:
            name = pod.metadata.name
            if pod.metadata.deletion_timestamp:
                self.stop_runtime(name)
                continue
            if name not in self.runtimes:
                self.start_runtime(pod)
                continue
            proc, port, term_log = self.runtimes[name]
            if proc.poll() is not None:
                self.report_crash(pod, term_log)
            elif not _pod_ready(pod) and _http_ok(f"http://127.0.0.1:{port}/v2/health/ready"):
                playedkubelet.report(self.core, pod, playedkubelet.ready(pod))
        live = {p.metadata.name for p in self.core.list_namespaced_pod(NS).items}
        for gone in set(self.runtimes) - live:
            self.stop_runtime(gone)

    def start_runtime(self, pod) -> None:
        container = pod.spec.containers[0]
        env = {e.name: e.value for e in container.env or [] if e.value is not None}
        port, scratch = free_port(), self.workdir / pod.metadata.name
        scratch.mkdir(exist_ok=True)
        env.update(
            {
                "MODELDEPLOY_MODEL_PATH": env["MODELDEPLOY_MODEL_PATH"].replace(
                    IMAGE_MODELS, f"{ROOT}/examples/models/"
                ),
                "MODELDEPLOY_PORT": str(port),
                "MODELDEPLOY_METRICS_PORT": "0",
                "MODELDEPLOY_GRPC_PORT": "0",  # the runtimes share this machine's ports
                "MODELDEPLOY_TERMINATION_LOG": str(scratch / "termination-log"),
                "MODELDEPLOY_CACHE_DIR": str(scratch / "cache"),
                "MODELDEPLOY_THREADS": "1",
            }
        )
        log = open(scratch / "runtime.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "modeldeploy-runtime"), "serve"],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.runtimes[pod.metadata.name] = (proc, port, scratch / "termination-log")
        print(f"   [kubelet] started the runtime for pod {pod.metadata.name} on 127.0.0.1:{port}", flush=True)

    def report_crash(self, pod, term_log: Path) -> None:
        message = term_log.read_text().strip() if term_log.exists() else "exited"
        if _waiting_reason(pod) != "CrashLoopBackOff":
            print(f"   [kubelet] pod {pod.metadata.name}: runtime exited: {message}", flush=True)
            playedkubelet.report(self.core, pod, playedkubelet.crash_loop(pod, restarts=1, message=message))

    def stop_runtime(self, name: str) -> None:
        proc, _, _ = self.runtimes.pop(name, (None, 0, None))
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(10)

    def wait(self, check, timeout: float, what: str):
        deadline = time.monotonic() + timeout * self.patience
        while True:
            if self.play_kubelet:
                self.tend_pods()
            result = check()
            if result:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"gave up waiting for {what} after {timeout:.0f}s")
            time.sleep(0.3)

    # ---- the story ----------------------------------------------------------------------------------

    def run(self) -> None:
        say("A ModelDeployment: examples/digits-cpu.yaml (a digits classifier on CPU, 2 replicas)")
        self.kubectl("create", "namespace", NS)
        self.kubectl("apply", "-n", NS, "-f", str(EXAMPLE))
        say("The operator makes the children, owned by the resource")
        self.wait(lambda: self.status().get("observedGeneration"), 30, "the first reconcile")
        self.kubectl("get", "deployment,service,networkpolicy,poddisruptionbudget,pods", "-n", NS)
        say("The pods start the runtime, which loads the model, warms up and passes its latency gate")
        self.wait(lambda: self.status().get("phase") == "Ready", 120, "phase Ready")
        self.kubectl("get", "mdep", "-n", NS)

        say("A real Open Inference Protocol v2 request (one handwritten digit from scikit-learn)")
        self.infer()

        say("An update with a latency budget no model can meet (p95 under 1 microsecond)")
        self.kubectl(
            "patch",
            "mdep",
            "digits",
            "-n",
            NS,
            "--type=merge",
            "-p",
            '{"spec":{"runtime":{"latencyBudget":{"p95Milliseconds":0.001}}}}',
        )
        self.wait(lambda: self.status().get("phase") == "RolledBack", 120, "the automatic rollback")
        say("The operator saw the new pod fail, restored the last known good revision, and says why")
        self.kubectl("get", "mdep", "-n", NS)
        status = self.status()
        print(json.dumps(status["rollback"], indent=2))
        described = self.kubectl("describe", "mdep", "digits", "-n", NS, show=False)
        print("$ kubectl describe mdep digits -n modeldeploy-demo   # (the Events)")
        print(described[described.index("Events:") :].rstrip())
        say("The restored revision is serving again")
        self.wait(lambda: self.status().get("ready") == "2/2", 120, "two ready pods on the restored revision")
        self.kubectl("get", "mdep,deployment,replicasets", "-n", NS)
        self.infer()

    def infer(self) -> None:
        from sklearn.datasets import load_digits

        digits = load_digits()
        pixels, label = digits.data[7].astype("float32").tolist(), int(digits.target[7])
        url = f"{self.model_base()}/v2/models/digits/infer"
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": pixels}]}
        print(
            f'$ curl -s {url} -d \'{{"inputs": [{{"name": "input", "datatype": "FP32", '
            f'"shape": [1, 64], "data": [...64 pixels...]}}]}}\''
        )
        req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            answer = json.loads(resp.read())
        outputs = {o["name"]: o for o in answer["outputs"]}
        print(
            json.dumps({"model_name": answer["model_name"], "outputs": [{k: v for k, v in outputs["label"].items()}]})
        )
        print(f"   predicted {outputs['label']['data'][0]}, true label {label}")

    def model_base(self) -> str:
        """A URL that reaches a ready replica: the Service's ClusterIP on the real node, a runtime
        this script runs, or, on a remote cluster, `kubectl port-forward` to the Service."""
        if self.on_node:
            ip = self.kubectl("get", "service", "digits", "-n", NS, "-o", "jsonpath={.spec.clusterIP}", show=False)
            return f"http://{ip}:8080"
        return f"http://127.0.0.1:{self.model_port()}"

    def model_port(self) -> int:
        """A local port that reaches a ready replica: a runtime this script runs, or, on a real
        cluster, `kubectl port-forward` to the Service."""
        if self.play_kubelet:
            return next(
                port
                for proc, port, _ in self.runtimes.values()
                if proc.poll() is None and _http_ok(f"http://127.0.0.1:{port}/v2/health/ready")
            )
        if self.forward is None or self.forward[0].poll() is not None:
            port = free_port()
            proc = subprocess.Popen(
                ["kubectl", f"--kubeconfig={self.kubeconfig}", "port-forward", "-n", NS, "svc/digits", f"{port}:8080"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.forward = (proc, port)
            wait_for(lambda: _http_ok(f"http://127.0.0.1:{port}/v2/health/ready"), 30, "kubectl port-forward")
        return self.forward[1]

    def close(self) -> None:
        for name in list(self.runtimes):
            self.stop_runtime(name)
        if self.forward is not None and self.forward[0].poll() is None:
            self.forward[0].terminate()


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


def _pod_ready(pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


def _waiting_reason(pod) -> str | None:
    for s in pod.status.container_statuses or []:
        if s.state and s.state.waiting:
            return s.state.waiting.reason
    return None


def start_node(workdir: Path) -> realnode.RealNode:
    say("Building the images from the Dockerfile (podman; cached by content) and starting a real node")
    refs = {target: images.build(target, log=print) for target in images.TARGETS}
    print(f"images: {', '.join(refs.values())}")
    node = realnode.RealNode(workdir / "node", images=tuple(refs.values())).start()
    print(f"node Ready in {node.timings['node_ready_s']:.1f} s: kubelet, containerd, kube-proxy, kube-scheduler")
    print(f"export KUBECONFIG={node.kubeconfig}")
    say("helm install: the operator runs in the cluster, under the chart's ServiceAccount")
    print("$ helm upgrade --install modeldeploy-operator charts/modeldeploy-operator -n modeldeploy-system ...")
    installed = chart.install(node.kubeconfig, refs)
    if installed.returncode != 0:
        node.stop()
        raise SystemExit(f"helm install failed: {installed.stderr or installed.stdout}")
    return node


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--local", action="store_true", help="use the local control plane even if $KUBECONFIG is set")
    parser.add_argument("--keep", action="store_true", help="leave what the demo made in place at the end")
    parser.add_argument(
        "--played-kubelet", action="store_true", help="no real node: a control plane, with this script as the kubelet"
    )
    parser.add_argument(
        "--runtime-image",
        default="ghcr.io/modeldeploy/runtime:0.1.0",
        help="runtime image (on a real cluster it must be pullable by the nodes)",
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="mdemo-"))  # short: containerd puts sockets below it
    cluster = node = None
    no_node = "--played-kubelet was given" if args.played_kubelet else realnode.why_not() or images.have_podman()
    if os.environ.get("KUBECONFIG") and not args.local:
        kubeconfig = Path(os.environ["KUBECONFIG"])
        context = subprocess.run(["kubectl", "config", "current-context"], capture_output=True, text=True).stdout
        say(f"Using your cluster: KUBECONFIG={kubeconfig}, context {context.strip()} (--local to use a local one)")
    elif no_node is None:
        node = start_node(workdir)
        kubeconfig = node.kubeconfig
    else:
        say(f"No real node: {no_node}. A local control plane (etcd, kube-apiserver, kube-controller-manager)")
        print("without a kubelet: this script plays the kubelet, running the real runtime for each pod")
        cluster = LocalCluster(workdir / "cluster").start()
        kubeconfig = cluster.kubeconfig
        print(f"export KUBECONFIG={kubeconfig}")
    demo = Demo(kubeconfig, workdir, play_kubelet=cluster is not None, on_node=node is not None)
    operator = None
    try:
        if node is not None:
            demo.run()
            say(
                "Done. Everything above ran for real: pods, probes, restarts, the Service, the operator in the cluster."
            )
            return 0
        say("Installing the CRD and starting the operator")
        demo.kubectl("apply", "-f", str(ROOT / "crds"))
        wait_for(
            lambda: (
                subprocess.run(
                    ["kubectl", f"--kubeconfig={kubeconfig}", "get", "mdep", "-A"], capture_output=True
                ).returncode
                == 0
            ),
            30,
            "the CRD",
        )
        (workdir / "operator").mkdir()
        operator = Operator(
            kubeconfig,
            workdir / "operator",
            resync_seconds=10,
            extra_env={"MODELDEPLOY_RUNTIME_IMAGE": args.runtime_image},
        ).start()
        print(f"modeldeploy-operator running (pid {operator.proc.pid}, log {workdir / 'operator'})")
        demo.run()
        played = " only the kubelet was played by this script." if cluster is not None else ""
        say(f"Done. Everything above ran for real;{played}")
        return 0
    finally:
        demo.close()
        if operator is not None:
            operator.stop()
        if args.keep:
            print(f"Left in place: export KUBECONFIG={kubeconfig}; kubectl get mdep -n {NS}")
            if node is not None:
                print("Stop the node with: python hack/realnode.py down")
        elif node is not None:
            node.stop()
            shutil.rmtree(workdir, ignore_errors=True)
        elif cluster is not None:
            cluster.stop()
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            demo.kubectl("delete", "namespace", NS, "--wait=false")


if __name__ == "__main__":
    raise SystemExit(main())
