"""What a real node changes on this machine, and how each change is undone: the pod bridge and its
firewall, kernel settings, and what the kubelet and containerd leave behind (mounts, cgroups,
iptables chains, network namespaces).

Every packet stays on this machine. Pods live on a private bridge with no masquerading; a FORWARD
rule drops whatever would leave the bridge, and pods may reach the host only on the API server's
port (and with replies to connections the host opened: probes, tests), and on a port a test
opens to them while it serves something there (`host_port_open`). Service addresses are routed
onto the bridge, so a ClusterIP nobody serves goes nowhere rather than to the default route.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

BRIDGE = "mdbr0"
POD_CIDR = "10.244.77.0/24"
GATEWAY = "10.244.77.1"  # the bridge's address: the API server and the kubelet listen here
SERVICE_CIDR = "10.0.0.0/24"
IN_CHAIN, FWD_CHAIN = "MODELDEPLOY-NODE-IN", "MODELDEPLOY-NODE-FWD"
# Chains the kubelet, kube-proxy and the CNI plugins make; removed at teardown with ours.
CHAIN_PREFIXES = ("KUBE-", "CNI-", "MODELDEPLOY-NODE-")
SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/route_localnet",
    "net/bridge/bridge-nf-call-iptables",
    "kernel/panic",  # the kubelet changes these three
    "kernel/panic_on_oops",
    "vm/overcommit_memory",
)
CGROUP_ROOT = Path("/sys/fs/cgroup")


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(argv), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def read_sysctls() -> dict[str, str]:
    return {k: (Path("/proc/sys") / k).read_text().strip() for k in SYSCTLS if (Path("/proc/sys") / k).exists()}


def write_sysctls(values: dict[str, str]) -> None:
    for key, value in values.items():
        with contextlib.suppress(OSError):
            (Path("/proc/sys") / key).write_text(value)


def setup_network(api_port: int) -> None:
    """The bridge (before the API server binds to it), its routes and its firewall."""
    if sh("ip", "link", "show", BRIDGE, check=False).returncode != 0:
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
    sh("ip", "addr", "replace", f"{GATEWAY}/{POD_CIDR.split('/')[1]}", "dev", BRIDGE)
    sh("ip", "link", "set", BRIDGE, "up")
    sh("ip", "route", "replace", SERVICE_CIDR, "dev", BRIDGE, "src", GATEWAY)
    write_sysctls({"net/ipv4/ip_forward": "1", "net/bridge/bridge-nf-call-iptables": "1"})
    for chain in (IN_CHAIN, FWD_CHAIN):
        sh("iptables", "-N", chain, check=False)
        sh("iptables", "-F", chain)
    rules = [
        (IN_CHAIN, "-i", BRIDGE, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"),
        (IN_CHAIN, "-i", BRIDGE, "-d", GATEWAY, "-p", "tcp", "--dport", str(api_port), "-j", "ACCEPT"),
        (IN_CHAIN, "-i", BRIDGE, "-j", "DROP"),
        (FWD_CHAIN, "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT"),
        (FWD_CHAIN, "-i", BRIDGE, "-j", "DROP"),
        (FWD_CHAIN, "-o", BRIDGE, "-j", "DROP"),
    ]
    for chain, *rule in rules:
        sh("iptables", "-A", chain, *rule)
    hook_first()


def hook_first() -> None:
    """Our chains first in INPUT and FORWARD. kube-proxy and the kubelet insert theirs at the top
    when they start, so the node calls this again once they run."""
    for builtin, chain in (("INPUT", IN_CHAIN), ("FORWARD", FWD_CHAIN)):
        while sh("iptables", "-D", builtin, "-j", chain, check=False).returncode == 0:
            pass
        sh("iptables", "-I", builtin, "1", "-j", chain)


def _host_port_rule(port: int) -> tuple[str, ...]:
    if not isinstance(port, int) or isinstance(port, bool) or not 1024 < port < 65536:
        raise ValueError(f"pods may be admitted only to an unprivileged TCP port (1025-65535), not {port!r}")
    return ("-i", BRIDGE, "-d", GATEWAY, "-p", "tcp", "--dport", str(port), "-j", "ACCEPT")


@contextlib.contextmanager
def host_port_open(port: int):
    """Pods may reach one more TCP port of this machine, on the bridge address only, while the
    block runs: a server the caller started there and owns (an object store of a test). The rule
    goes before the chain's DROP and is removed afterwards; nothing else of the isolation changes."""
    rule = _host_port_rule(port)
    sh("iptables", "-I", IN_CHAIN, "1", *rule)
    try:
        yield
    finally:
        while sh("iptables", "-D", IN_CHAIN, *rule, check=False).returncode == 0:
            pass


def firewall_rules() -> str:
    """Our chains as `iptables -S` prints them (tests assert the rules, never a packet out)."""
    return sh("iptables", "-S", IN_CHAIN).stdout + sh("iptables", "-S", FWD_CHAIN).stdout


def cni_config(ipam_dir: Path) -> dict:
    return {
        "cniVersion": "0.4.0",
        "name": "modeldeploy",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": GATEWAY}]],
                    # Pods get no default route: only Services (and so the API server) are
                    # reachable beyond their own subnet.
                    "routes": [{"dst": SERVICE_CIDR}],
                    "dataDir": str(ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def unmount_under(*roots: Path) -> None:
    """Everything mounted below `roots`, deepest first (the kubelet's bind mount of its own root
    dir, sandbox /dev/shm mounts, container rootfs, projected volumes)."""
    prefixes = tuple(str(r.resolve()) + "/" for r in roots) + tuple(str(r.resolve()) for r in roots)
    mounts = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1].replace("\\040", " ")
        if target.startswith(prefixes):
            mounts.append(target)
    for target in sorted(set(mounts), key=len, reverse=True):
        if sh("umount", target, check=False).returncode != 0:
            sh("umount", "-l", target, check=False)


def kill_pod_processes(name: str = "kubepods", timeout: float = 10) -> None:
    """Every process left in the kubelet's cgroups: containers whose shim is gone keep running
    otherwise, reparented to init."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = set()
        for procs in CGROUP_ROOT.glob(f"*/{name}/**/cgroup.procs"):
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in procs.read_text().split())
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)


def remove_cgroups(name: str = "kubepods") -> None:
    """The kubelet's empty `kubepods` trees in every hierarchy, leaves first."""
    for hierarchy in CGROUP_ROOT.iterdir() if CGROUP_ROOT.exists() else ():
        top = hierarchy / name
        if not top.is_dir():
            continue
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                d.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


def remove_chains() -> None:
    """Every chain the node made, in every table, after the rules that jump to them."""
    for table in ("filter", "nat", "mangle"):
        listing = sh("iptables", "-t", table, "-S", check=False).stdout.splitlines()
        ours = [ln.split()[1] for ln in listing if ln.startswith("-N ") and ln.split()[1].startswith(CHAIN_PREFIXES)]
        for line in listing:
            words = line.split()
            if words[:1] == ["-A"] and words[1] not in ours and "-j" in words:
                target = words[words.index("-j") + 1]
                if target in ours:
                    sh("iptables", "-t", table, "-D", *words[1:], check=False)
        for chain in ours:
            sh("iptables", "-t", table, "-F", chain, check=False)
        for chain in ours:
            sh("iptables", "-t", table, "-X", chain, check=False)


def remove_network() -> None:
    remove_chains()
    sh("ip", "link", "del", BRIDGE, check=False)  # takes its routes and the pods' veths with it
    for ns in Path("/run/netns").glob("cni-*") if Path("/run/netns").exists() else ():
        sh("ip", "netns", "del", ns.name, check=False)
