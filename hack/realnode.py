"""A real single-node Kubernetes 1.20 on this machine: the control plane of localcluster.py plus
kube-scheduler, containerd, the kubelet and kube-proxy. Pods really run (runc, CNI bridge), with
real probes, restarts, termination messages, image pull errors and ClusterIP Services.

    python hack/realnode.py up      # starts, loads the images, prints `export KUBECONFIG=...`
    python hack/realnode.py down    # stops it and undoes every change to the machine

One node at a time per machine (it owns a bridge, iptables chains and kernel settings): a lock
refuses a second, and `down` (or the next `up`) cleans up after one that was killed. Every process
is stopped by the PID recorded when it started. See ../shared/docs/real-node.md for why each
setting is what it is. It is one module, over the usual size, because start and teardown must
mirror each other step for step (the host's network rules are in nodehost.py).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import nodehost  # noqa: E402
from localcluster import BIN, CACHE, LocalCluster, terminate  # noqa: E402
from ports import free_port  # noqa: E402

NODE_NAME = "modeldeploy-node"
PAUSE_IMAGE = "localhost/modeldeploy/pause:3.4"
STATE = Path("/run/modeldeploy-realnode.json")
LOCK = Path("/run/modeldeploy-realnode.lock")
CONTAINERD_ROOT = CACHE / "containerd"  # kept between runs: imported images stay imported
NODE_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "pause")
HOST_TOOLS = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables", "ip", "etcd", "podman")
# The kubelet's in-tree cloud credential providers dial the cloud metadata address unless told not to.
QUIET_ENV = {"AWS_EC2_METADATA_DISABLED": "true"}


def why_not() -> str | None:
    """None when this machine can run a node, else the reason (tests skip with it)."""
    if os.geteuid() != 0:
        return "a real node needs root (containerd, the kubelet, iptables and a bridge)"
    for ctrl in ("cpu", "memory", "pids"):
        v1 = nodehost.CGROUP_ROOT / ctrl
        v2 = nodehost.CGROUP_ROOT / "cgroup.controllers"
        if not v1.is_dir() and not (v2.exists() and ctrl in v2.read_text().split()):
            return f"no {ctrl} cgroup controller under {nodehost.CGROUP_ROOT}: the kubelet cannot run pods here"
    if not Path("/proc/sys/net/bridge/bridge-nf-call-iptables").exists():
        return "the kernel has no br_netfilter (net.bridge.bridge-nf-call-iptables): Services cannot work"
    missing = [b for b in NODE_BINARIES if not (BIN / b).exists()]
    if missing:
        return f"{', '.join(missing)} missing from {BIN}: run hack/setup.sh (hack/build-control-plane.sh)"
    tools = [t for t in HOST_TOOLS if shutil.which(t) is None]
    if tools:
        return f"{', '.join(tools)} missing: run hack/setup.sh (hack/setup-node.sh installs them from Debian)"
    if not Path("/usr/lib/cni/bridge").exists():
        return "CNI plugins missing from /usr/lib/cni: apt-get install containernetworking-plugins"
    return None


def _ours(name: str, pid: int) -> bool:
    """Whether `pid` is still the node's `name` process (not a later process given the same PID)."""
    try:
        return name.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _kill(pid: int, timeout: float = 10) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)


@dataclass
class RealNode:
    workdir: Path
    images: tuple[str, ...] = ()  # image refs (podman) loaded into containerd at start
    authorization: str = "RBAC"
    cluster: LocalCluster = field(init=False)  # its API server binds to the pod bridge
    pids: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    _lock: object = None
    _procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.cluster = LocalCluster(
            self.workdir / "cluster", authorization=self.authorization, address=nodehost.GATEWAY, in_cluster=True
        )

    @property
    def kubeconfig(self) -> Path:
        return self.cluster.kubeconfig

    @property
    def socket(self) -> Path:
        return self.workdir / "containerd.sock"

    def start(self, timeout: float = 120.0) -> RealNode:
        reason = why_not()
        if reason:
            raise RuntimeError(reason)
        self._take_lock()
        clean_stale()
        started = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "logs").mkdir(exist_ok=True)
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        self.timings["node_ready_s"] = time.monotonic() - started
        return self

    def _take_lock(self, force: bool = False) -> None:
        """The lock is held while a node starts or stops in this process; a node left running by
        `up` is known by its recorded PIDs being alive. `force` (for `down`) takes it over."""
        fd = os.open(LOCK, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            busy = (
                not force
                and STATE.exists()
                and any(_ours(n, p) for n, p in json.loads(STATE.read_text())["pids"].items())
            )
        except BlockingIOError:
            busy = True
        if busy:
            os.close(fd)
            owner = json.loads(STATE.read_text()).get("workdir", "?") if STATE.exists() else "?"
            raise RuntimeError(
                f"another real node is running on this machine (workdir {owner}); "
                "stop it with `python hack/realnode.py down`"
            )
        self._lock = fd

    def _record(self, sysctls: dict[str, str] | None = None) -> None:
        state = json.loads(STATE.read_text()) if STATE.exists() else {}
        state.update(workdir=str(self.workdir), pids=self.pids)
        if sysctls is not None:
            state["sysctls"] = sysctls
        STATE.write_text(json.dumps(state))

    def _spawn(self, name: str, argv: list, env: dict[str, str] | None = None) -> None:
        log = open(self.workdir / "logs" / f"{name}.log", "wb")  # noqa: SIM115 (the child's lifetime)
        proc = subprocess.Popen(
            [str(a) for a in argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **QUIET_ENV, **(env or {})},
        )
        self._procs[name] = proc
        self.pids[name] = proc.pid
        self._record()

    def _alive(self) -> None:
        for name, proc in self._procs.items():
            if proc.poll() is not None:
                log = (self.workdir / "logs" / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log}")

    def _wait(self, what: str, ready, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            self._alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} not within {timeout:.0f} s (logs in {self.workdir / 'logs'})")
            time.sleep(0.2)

    def _start(self, timeout: float) -> None:
        self._record(sysctls=nodehost.read_sysctls())
        api_port = free_port()
        nodehost.setup_network(api_port)
        self.cluster.api_port = api_port  # chosen before the firewall, which admits pods to it alone
        self._start_containerd(timeout)
        self._load_images()
        self.cluster.start(timeout=timeout)  # the chart installs the CRD, as on any cluster
        self.pids.update({k: p.pid for k, p in self.cluster.procs.items()})
        self._record()
        kubeconfig = self.cluster.kubeconfig
        sched_port = free_port()
        self._spawn(
            "kube-scheduler",
            [BIN / "kube-scheduler", f"--kubeconfig={kubeconfig}", "--leader-elect=false", "--port=0",
             "--bind-address=127.0.0.1", f"--secure-port={sched_port}"],
        )  # fmt: skip
        self._start_kubelet(kubeconfig)
        proxy_health, proxy_metrics = free_port(), free_port()
        self._spawn(
            "kube-proxy",
            [BIN / "kube-proxy", f"--kubeconfig={kubeconfig}", "--proxy-mode=iptables",
             f"--cluster-cidr={nodehost.POD_CIDR}", f"--hostname-override={NODE_NAME}",
             "--bind-address=127.0.0.1", f"--healthz-bind-address=127.0.0.1:{proxy_health}",
             f"--metrics-bind-address=127.0.0.1:{proxy_metrics}", "--conntrack-max-per-core=0"],
        )  # fmt: skip
        self._wait("node Ready", self.node_ready, timeout)
        self._wait(
            "kube-proxy's rules", lambda: "KUBE-SERVICES" in nodehost.sh("iptables-save", "-t", "nat").stdout, timeout
        )
        nodehost.hook_first()
        self._wait("default ServiceAccount token", self._default_token, timeout)

    def _start_containerd(self, timeout: float) -> None:
        cni_dir = self.workdir / "cni"
        cni_dir.mkdir(exist_ok=True)
        (cni_dir / "10-modeldeploy.conflist").write_text(
            json.dumps(nodehost.cni_config(self.workdir / "cni-ipam"), indent=2)
        )
        CONTAINERD_ROOT.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "containerd.toml"
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        config.write_text(
            f"""version = 2
root = "{CONTAINERD_ROOT}"
state = "{self.workdir / "containerd-state"}"
[grpc]
  address = "{self.socket}"
[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  # No CAP_SYS_RESOURCE in this VM: runc cannot lower oom_score_adj to -998 for sandboxes.
  restrict_oom_score_adj = true
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
  [{cri}.cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni_dir}"
"""
        )
        self._spawn("containerd", ["containerd", "--config", config])
        self._wait("containerd", lambda: self.ctr("version", check=False).returncode == 0, timeout)

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return nodehost.sh("ctr", "-a", str(self.socket), "-n", "k8s.io", *args, check=check)

    def _load_images(self) -> None:
        """Each image once into containerd's store, which is kept between runs."""
        import images  # hack/images.py

        started = time.monotonic()
        have = set(self.ctr("images", "ls", "-q").stdout.split())
        wanted = {pause_image(), *self.images}
        stale = [ref for ref in have - wanted if ref.startswith(f"{images.REPO}/")]
        if stale:  # older builds: the store is kept between runs, so it would only grow
            self.ctr("images", "rm", *stale, check=False)
        for ref in wanted:
            if ref in have:
                continue
            with tempfile.TemporaryDirectory(prefix="modeldeploy-img-") as tmp:
                archive = images.save(ref, Path(tmp) / "image.tar")
                self.ctr("images", "import", str(archive))
        self.timings["images_loaded_s"] = time.monotonic() - started

    def _start_kubelet(self, kubeconfig: Path) -> None:
        port, health = free_port(), free_port()
        config = self.workdir / "kubelet.yaml"
        config.write_text(
            json.dumps(
                {
                    "apiVersion": "kubelet.config.k8s.io/v1beta1",
                    "kind": "KubeletConfiguration",
                    "address": nodehost.GATEWAY,
                    "port": port,
                    "readOnlyPort": 0,
                    "healthzBindAddress": "127.0.0.1",
                    "healthzPort": health,
                    "cgroupDriver": "cgroupfs",
                    "failSwapOn": False,
                    "nodeStatusUpdateFrequency": "2s",  # with 10 s, Ready comes 10 s later
                    "nodeStatusReportFrequency": "10s",
                    "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
                    "authorization": {"mode": "AlwaysAllow"},
                    "resolvConf": "",  # no upstream DNS for pods
                    # A test machine's disk is often fuller than a node's; never evict for it.
                    "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
                    "imageGCHighThresholdPercent": 100,
                    "imageGCLowThresholdPercent": 99,
                    "serializeImagePulls": False,
                }
            )
        )
        self._spawn(
            "kubelet",
            [BIN / "kubelet", f"--config={config}", f"--kubeconfig={kubeconfig}", "--container-runtime=remote",
             f"--container-runtime-endpoint=unix://{self.socket}", f"--root-dir={self.workdir / 'kubelet'}",
             f"--node-ip={nodehost.GATEWAY}", f"--hostname-override={NODE_NAME}", "--fail-swap-on=false", "--v=1"],
        )  # fmt: skip

    def node_ready(self) -> bool:
        status, body = self.cluster.request(f"/api/v1/nodes/{NODE_NAME}")
        if status != 200:
            return False
        conditions = json.loads(body).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def _default_token(self) -> bool:
        status, body = self.cluster.request("/api/v1/namespaces/default/serviceaccounts/default")
        return status == 200 and bool(json.loads(body).get("secrets"))

    def stop(self) -> None:
        """Pods first (with the controllers stopped, so nothing recreates them), then every process
        by its PID, then what they left on the machine."""
        started = time.monotonic()
        for name in ("kube-controller-manager", "kube-scheduler"):
            self._stop(name)
        if "kube-apiserver" in self.pids and "kubelet" in self._procs:
            self._delete_pods(timeout=30)
        for name in ("kube-proxy", "kubelet"):
            self._stop(name)
        if "containerd" in self._procs:
            self._stop_containers()
        for name in ("containerd", "kube-apiserver", "etcd"):
            self._stop(name)
        undo(self.workdir, json.loads(STATE.read_text()).get("sysctls", {}) if STATE.exists() else {})
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None
        self.timings["teardown_s"] = time.monotonic() - started

    def _stop(self, name: str) -> None:
        proc, pid = self._procs.pop(name, None), self.pids.pop(name, None)
        if proc is not None:
            terminate(proc)
        elif not self.cluster.stop_process(name) and pid is not None:
            _kill(pid)

    def _delete_pods(self, timeout: float) -> None:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        subprocess.run(
            ["kubectl", "delete", "pods", "--all", "--all-namespaces", "--wait=false", "--grace-period=5"],
            env=env, capture_output=True, timeout=30,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = self.cluster.request("/api/v1/pods")
            if status != 200 or not json.loads(body).get("items"):
                return
            time.sleep(0.5)

    def _stop_containers(self) -> None:
        """Whatever the kubelet did not stop: a shim killed alone would leave its container running."""
        for task in self.ctr("tasks", "ls", "-q", check=False).stdout.split():
            self.ctr("tasks", "kill", "-s", "SIGKILL", task, check=False)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.ctr("tasks", "ls", "-q", check=False).stdout.split():
            for task in self.ctr("tasks", "ls", "-q", check=False).stdout.split():
                self.ctr("tasks", "delete", task, check=False)
            time.sleep(0.2)
        for container in self.ctr("containers", "ls", "-q", check=False).stdout.split():
            self.ctr("containers", "delete", container, check=False)


def pause_image() -> str:
    """The sandbox image, from the tree's pause.c (built by hack/build-control-plane.sh)."""
    if subprocess.run(["podman", "image", "exists", PAUSE_IMAGE], capture_output=True).returncode != 0:
        with tempfile.TemporaryDirectory(prefix="modeldeploy-pause-") as tmp:
            shutil.copy(BIN / "pause", Path(tmp) / "pause")
            tar = subprocess.Popen(["tar", "-C", tmp, "-c", "pause"], stdout=subprocess.PIPE)
            subprocess.run(
                ["podman", "import", "--change", 'ENTRYPOINT ["/pause"]', "-", PAUSE_IMAGE],
                stdin=tar.stdout, check=True, capture_output=True,
            )  # fmt: skip
            tar.wait()
    return PAUSE_IMAGE


def undo(workdir: Path, sysctls: dict[str, str]) -> None:
    """Every change a node made to the machine, whether it stopped cleanly or was killed."""
    nodehost.kill_pod_processes()
    for shim in _shims(workdir):
        _kill(shim, timeout=2)
    nodehost.unmount_under(workdir, CONTAINERD_ROOT, Path("/var/lib/kubelet"))
    nodehost.remove_cgroups()
    if (BIN / "kube-proxy").exists():
        nodehost.sh(str(BIN / "kube-proxy"), "--cleanup", check=False)
    nodehost.remove_network()
    nodehost.write_sysctls(sysctls)
    STATE.unlink(missing_ok=True)


def _shims(workdir: Path) -> list[int]:
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if argv and argv[0].endswith(b"containerd-shim-runc-v2") and str(workdir).encode() in b" ".join(argv):
                found.append(int(proc.name))
    return found


def clean_stale() -> None:
    """A node killed before its teardown (the lock is ours now, so none is running)."""
    if not STATE.exists():
        return
    state = json.loads(STATE.read_text())
    for name, pid in reversed(list(state.get("pids", {}).items())):
        if _ours(name, pid):
            _kill(pid, timeout=5)
    undo(Path(state["workdir"]), state.get("sysctls", {}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["up", "down", "check"])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/modeldeploy-node"))
    parser.add_argument("--image", action="append", default=[], help="podman image ref to load (repeatable)")
    args = parser.parse_args(argv)
    if args.action == "check":
        reason = why_not()
        print(reason or "this machine can run a real node")
        return 1 if reason else 0
    if args.action == "down":
        node = RealNode(args.dir)
        node._take_lock(force=True)
        clean_stale()
        shutil.rmtree(args.dir, ignore_errors=True)
        return 0
    node = RealNode(args.dir, images=tuple(args.image)).start()
    # The processes were started in their own sessions: they outlive this command until `down`.
    os.close(node._lock)
    print(f"export KUBECONFIG={node.kubeconfig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
