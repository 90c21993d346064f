"""A real Kubernetes control plane on 127.0.0.1: etcd, kube-apiserver and kube-controller-manager.

There is no kubelet or scheduler: pods stay Pending unless a test writes their status, which is
how tests play the kubelet. Used by the test session, the demo and the benchmarks.

    python hack/localcluster.py up --dir /tmp/mdcluster     # starts, prints `export KUBECONFIG=...`
    python hack/localcluster.py down --dir /tmp/mdcluster

The binaries come from `hack/build-control-plane.sh` (cached under ~/.cache/modeldeploy).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ports import free_port

CACHE = Path(os.environ.get("MODELDEPLOY_CACHE", Path.home() / ".cache" / "modeldeploy"))
BIN = CACHE / "k8s-bin"
CONTROLLERS = (
    "garbagecollector,deployment,replicaset,namespace,serviceaccount,serviceaccount-token,"
    "horizontalpodautoscaling,disruption"
)
# With a kubelet: the node's not-ready taint lifted, Service endpoints (kube-proxy reads the
# slices), and pods of a deleted node collected.
NODE_CONTROLLERS = "nodelifecycle,endpoint,endpointslice,podgc"


@dataclass
class LocalCluster:
    workdir: Path
    authorization: str = "AlwaysAllow"  # or "RBAC"
    # A real node (hack/realnode.py) binds the API server to its pod bridge, and pods reach it
    # through the `kubernetes` Service with their own ServiceAccount tokens.
    address: str = "127.0.0.1"
    in_cluster: bool = False
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    api_port: int = 0

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def audit_log(self) -> Path:
        return self.workdir / "audit.log"

    def audited(self) -> list[dict]:
        """The API server's audit events so far (one per request)."""
        if not self.audit_log.exists():
            return []
        return [json.loads(line) for line in self.audit_log.read_text().splitlines() if line.strip()]

    @property
    def server(self) -> str:
        return f"https://{self.address}:{self.api_port}"

    def start(self, timeout: float = 90.0, crds: Path | None = None, attempts: int = 3) -> LocalCluster:
        """`crds`: a folder of CRD manifests installed before the controller-manager starts, so that
        its garbage collector watches them from the first moment (it discovers CRDs created later
        only at its next 30 s resync, and would not collect their children before that).

        Free ports are picked by binding port 0 and letting go, so another process can take one in
        between: a start that fails on a taken port is tried again on new ports."""
        fixed_port = self.api_port
        for attempt in range(1, attempts + 1):
            try:
                return self._start(timeout, crds)
            except RuntimeError as exc:
                self.stop()
                self.api_port = fixed_port
                shutil.rmtree(self.workdir / "etcd", ignore_errors=True)
                if "address already in use" not in str(exc) or attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    def _start(self, timeout: float, crds: Path | None) -> LocalCluster:
        for binary in ("kube-apiserver", "kube-controller-manager"):
            if not (BIN / binary).exists():
                raise RuntimeError(f"{BIN / binary} is missing: run hack/build-control-plane.sh first")
        if not shutil.which("etcd"):
            raise RuntimeError("etcd is missing: apt-get install etcd-server (hack/build-control-plane.sh does)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        logs = self.workdir / "logs"
        logs.mkdir(exist_ok=True)
        etcd_port, peer_port, cm_port = (free_port() for _ in range(3))
        self.api_port = self.api_port or free_port()
        (self.workdir / "tokens.csv").write_text(f'{self.token},admin,admin,"system:masters"\n')
        # Every request is audited, so tests can count exactly who wrote what.
        (self.workdir / "audit-policy.yaml").write_text(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n"
        )
        sa_key, sa_pub = self.workdir / "sa.key", self.workdir / "sa.pub"
        if not sa_key.exists():
            subprocess.run(["openssl", "genrsa", "-out", sa_key, "2048"], check=True, capture_output=True)
            subprocess.run(
                ["openssl", "rsa", "-in", sa_key, "-pubout", "-out", sa_pub], check=True, capture_output=True
            )
        self._spawn(
            "etcd",
            logs,
            [
                "etcd",
                "--data-dir",
                self.workdir / "etcd",
                "--listen-client-urls",
                f"http://127.0.0.1:{etcd_port}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{etcd_port}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{peer_port}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{peer_port}",
                "--initial-cluster",
                f"default=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync",
                "--log-level",
                "warn",
            ],
        )
        self._spawn(
            "kube-apiserver",
            logs,
            [
                BIN / "kube-apiserver",
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--insecure-port=0",
                f"--token-auth-file={self.workdir / 'tokens.csv'}",
                f"--bind-address={self.address}",
                f"--secure-port={self.api_port}",
                f"--cert-dir={self.workdir / 'certs'}",
                f"--advertise-address={self.address}",
                # `kubectl logs` and `exec` dial the kubelet at its address; no DNS lookup of the node name.
                "--kubelet-preferred-address-types=InternalIP",
                f"--endpoint-reconciler-type={'lease' if self.in_cluster else 'none'}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={sa_pub}",
                f"--service-account-signing-key-file={sa_key}",
                "--service-cluster-ip-range=10.0.0.0/24",
                f"--authorization-mode={self.authorization}",
                *(
                    ["--enable-admission-plugins=NamespaceLifecycle,ServiceAccount"]
                    if self.in_cluster
                    else ["--enable-admission-plugins=NamespaceLifecycle", "--disable-admission-plugins=ServiceAccount"]
                ),
                f"--audit-policy-file={self.workdir / 'audit-policy.yaml'}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-mode=blocking",
            ],
        )
        self._write_kubeconfig()
        self._wait_ready(timeout)
        if crds is not None:
            self._install_crds(crds, timeout)
        self._spawn(
            "kube-controller-manager",
            logs,
            [
                BIN / "kube-controller-manager",
                f"--kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                "--port=0",
                "--bind-address=127.0.0.1",
                f"--secure-port={cm_port}",
                f"--service-account-private-key-file={sa_key}",
                f"--root-ca-file={self._ca_file()}",
                f"--controllers={CONTROLLERS},{NODE_CONTROLLERS}"
                if self.in_cluster
                else f"--controllers={CONTROLLERS}",
                "--concurrent-deployment-syncs=10",
                "--concurrent-replicaset-syncs=10",
                "--concurrent-gc-syncs=20",
            ],
        )
        (self.workdir / "pids.json").write_text(json.dumps({k: p.pid for k, p in self.procs.items()}))
        self._wait_namespace("default", timeout)
        return self

    def _install_crds(self, folder: Path, timeout: float) -> None:
        import yaml  # the project's venv has it; only this option needs it

        for path in sorted(folder.glob("*.yaml")):
            crd = yaml.safe_load(path.read_text())
            status, body = self.request("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
            if status not in (201, 409):
                raise RuntimeError(f"installing {path.name} failed: {status} {body[:500]!r}")
            group, plural = crd["spec"]["group"], crd["spec"]["names"]["plural"]
            version = crd["spec"]["versions"][0]["name"]
            deadline = time.monotonic() + timeout
            while self.request(f"/apis/{group}/{version}/{plural}")[0] != 200:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{plural}.{group} not served within {timeout}s")
                time.sleep(0.1)

    def _ca_file(self) -> Path:
        # The apiserver's self-signed serving certificate doubles as the root CA handed to pods.
        return self.workdir / "certs" / "apiserver.crt"

    def _spawn(self, name: str, logs: Path, argv: list) -> None:
        log = open(logs / f"{name}.log", "wb")  # noqa: SIM115 (kept open for the child's lifetime)
        self.procs[name] = subprocess.Popen(
            [str(a) for a in argv], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def _write_kubeconfig(self) -> None:
        self.kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "local",
                    "clusters": [
                        {"name": "local", "cluster": {"server": self.server, "insecure-skip-tls-verify": True}}
                    ],
                    "users": [{"name": "admin", "user": {"token": self.token}}],
                    "contexts": [{"name": "local", "context": {"cluster": "local", "user": "admin"}}],
                },
                indent=2,
            )
        )

    def request(self, path: str, body: dict | None = None) -> tuple[int, bytes]:
        """GET `path`, or POST `body` to it, as the admin."""
        ctx = ssl._create_unverified_context()  # noqa: S323 (a throwaway local cluster)
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, headers=headers)
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    log = (self.workdir / "logs" / f"{name}.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log}")
            try:
                if self.request("/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"kube-apiserver not ready within {timeout}s (logs in {self.workdir / 'logs'})")

    def _wait_namespace(self, namespace: str, timeout: float) -> None:
        # The "default" service account appearing means the controller-manager is doing its work.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.request(f"/api/v1/namespaces/{namespace}/serviceaccounts/default")[0] == 200:
                return
            time.sleep(0.2)
        raise TimeoutError(f"kube-controller-manager did not start within {timeout}s")

    def stop_process(self, name: str, timeout: float = 15) -> bool:
        """Stops one component (a real node stops them in its own order); False if it has none."""
        proc = self.procs.pop(name, None)
        if proc is not None:
            terminate(proc, timeout)
        return proc is not None

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()


def terminate(proc: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM, and SIGKILL if it has not exited within `timeout`."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def stop_by_pidfile(workdir: Path) -> None:
    pids = workdir / "pids.json"
    if not pids.exists():
        return
    for pid in reversed(list(json.loads(pids.read_text()).values())):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    pids.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/modeldeploy-cluster"))
    parser.add_argument("--authorization", default="AlwaysAllow", choices=["AlwaysAllow", "RBAC"])
    args = parser.parse_args(argv)
    stop_by_pidfile(args.dir)
    if args.action == "down":
        shutil.rmtree(args.dir, ignore_errors=True)
        return 0
    shutil.rmtree(args.dir, ignore_errors=True)
    cluster = LocalCluster(args.dir, authorization=args.authorization).start()
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
