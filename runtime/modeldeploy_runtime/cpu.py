"""How many CPUs the container may really use.

``os.cpu_count()`` reports the host's cores; a pod limited to 2 CPUs on a 64-core node that sizes
ONNX Runtime's pools from it gets throttled by the CFS quota and runs far slower than with 2
threads. The limit is in the cgroup: ``cpu.max`` (v2) or ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``
(v1).
"""

from __future__ import annotations

import math
import os

CGROUP_ROOT = "/sys/fs/cgroup"


def parse_cpu_max(text: str) -> float | None:
    """cgroup v2 ``cpu.max``: ``"max 100000"`` (no limit) or ``"200000 100000"`` (2 CPUs)."""
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def parse_cfs(quota_text: str, period_text: str) -> float | None:
    """cgroup v1: a quota of -1 means no limit."""
    try:
        quota, period = int(quota_text.strip()), int(period_text.strip())
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def cgroup_cpu_limit(root: str = CGROUP_ROOT) -> float | None:
    """The CPU quota of this container in CPUs, or None when it has none."""
    text = _read(os.path.join(root, "cpu.max"))
    if text is not None:
        return parse_cpu_max(text)
    for sub in ("cpu", "cpu,cpuacct"):
        quota = _read(os.path.join(root, sub, "cpu.cfs_quota_us"))
        period = _read(os.path.join(root, sub, "cpu.cfs_period_us"))
        if quota is not None and period is not None:
            return parse_cfs(quota, period)
    return None


def usable_cpus() -> int:
    """CPUs this process may be scheduled on (affinity / cpuset), before any quota."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def threads_for(limit: float | None, usable: int) -> int:
    """Inference threads for a CPU limit: the quota rounded down (a 2.5-CPU limit runs 2 threads
    at full speed rather than 3 throttled ones), at least 1, never more than the usable CPUs."""
    if limit is None:
        return max(1, usable)
    return max(1, min(usable, math.floor(limit)))


def default_threads(root: str = CGROUP_ROOT) -> int:
    return threads_for(cgroup_cpu_limit(root), usable_cpus())


# bf16 compute on x86: AVX-512 BF16 (Cooper Lake, Zen 4 and later) or AMX-BF16 (Sapphire Rapids
# and later). OpenVINO runs bf16 on either; without them it would emulate and run slower than fp32.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The instruction-set flags of the first CPU in ``path`` (empty where it cannot be read)."""
    text = _read(path) or ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def bf16_missing(flags: frozenset[str] | set[str]) -> str | None:
    """Why this CPU cannot serve bf16 (naming the instruction sets it lacks), or None when it can."""
    if any(flag in flags for flag in BF16_FLAGS):
        return None
    return (
        "this CPU lacks the AVX512_BF16 and AMX_BF16 instruction sets (flags avx512_bf16, amx_bf16 in "
        "/proc/cpuinfo) that bf16 inference needs; schedule the pod on such a node (Intel Cooper Lake or "
        "Sapphire Rapids and later, AMD Zen 4 and later) or set precision fp32"
    )
