"""The one played kubelet: the pod statuses a kubelet would report, for a control plane without a
node (the e2e suite, the RBAC tests, and `hack/demo.py --played-kubelet`, which also runs the real
runtime for each pod). Only the shapes the operator reads are filled in: phase, the Ready
condition, and the runtime container's state, last state and restart count. The real node
(hack/realnode.py) replaces all of it wherever it can run.
"""

from __future__ import annotations

import time
from typing import Any


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _container(pod: Any, ready: bool = False, restarts: int = 0, **state: Any) -> dict[str, Any]:
    c = pod.spec.containers[0]
    return {"name": c.name, "image": c.image, "imageID": "", "ready": ready, "restartCount": restarts, **state}


def ready(pod: Any, is_ready: bool = True, started_at: str | None = None) -> dict[str, Any]:
    """Running; Ready as asked. A fixed `started_at` makes a second report of the same pod a no-op
    (no pod event), as a kubelet's is."""
    return {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True" if is_ready else "False"}],
        "containerStatuses": [
            _container(pod, ready=is_ready, started=True, state={"running": {"startedAt": started_at or now()}})
        ],
    }


def crash_loop(
    pod: Any, restarts: int, message: str = "", reason: str = "Error", at: str | None = None
) -> dict[str, Any]:
    """In CrashLoopBackOff after `restarts` restarts; the last run ended with `message` in its
    termination log, as the runtime writes it."""
    at = at or now()
    terminated = {"exitCode": 1, "reason": reason, "message": message, "startedAt": at, "finishedAt": at}
    return {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [
            _container(
                pod,
                restarts=restarts,
                lastState={"terminated": terminated},
                state={
                    "waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}
                },
            )
        ],
    }


def waiting(pod: Any, reason: str, message: str) -> dict[str, Any]:
    """Pending with the container waiting (ErrImagePull, ImagePullBackOff, ...)."""
    return {
        "phase": "Pending",
        "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [_container(pod, state={"waiting": {"reason": reason, "message": message}})],
    }


def report(core: Any, pod: Any, status: dict[str, Any]) -> None:
    """Writes `status` as the pod's status, as a kubelet does."""
    core.patch_namespaced_pod_status(pod.metadata.name, pod.metadata.namespace, {"status": status})
