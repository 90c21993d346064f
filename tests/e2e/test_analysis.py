"""The post-rollout analysis against the real API server when there is nothing to scrape (these
pods have no IP; there is no kubelet): an update bakes, is not the last known good while it bakes,
and ends Inconclusive, never rolled back and never passed, with an Event for each step."""

from __future__ import annotations

from .support import set_pod_ready, wait_for
from .test_operator import apply, cpu_model, status_of
from .test_rollback import pods_with_image, ready_revision

NEW = "registry.local/modeldeploy/runtime:new"
ANALYSIS = {"analysis": {"bakeSeconds": 6, "intervalSeconds": 1, "consecutiveIntervals": 3}}


def test_an_update_without_data_bakes_and_ends_inconclusive_not_known_good(operator, namespace, kctl, core, custom):
    first = ready_revision(kctl, core, custom, namespace, "quiet", rollout=ANALYSIS)
    assert "analysis" not in first  # the first revision has nothing to compare with or restore
    apply(kctl, namespace, cpu_model("quiet", runtime={"image": NEW}, rollout=ANALYSIS))
    for pod in wait_for(lambda: pods_with_image(core, namespace, "quiet", NEW), 20, "the new pod"):
        set_pod_ready(core, pod)

    baking = wait_for(
        lambda: (s := status_of(custom, namespace, "quiet")).get("analysis", {}).get("phase") == "Baking" and s,
        20,
        "the bake",
    )
    assert baking["phase"] == "Ready" and baking["lastKnownGood"]["generation"] == 1
    assert "compared with the absolute limits only" in baking["analysis"]["message"]

    done = wait_for(
        lambda: (s := status_of(custom, namespace, "quiet")).get("analysis", {}).get("phase") == "Inconclusive" and s,
        30,
        "the end of the bake",
    )
    assert done["lastKnownGood"]["generation"] == 1, done  # not a pass
    assert "rollback" not in done and done["rollbackCount"] == 0 and done["phase"] == "Ready"  # not a fail
    assert "too little traffic to judge" in done["analysis"]["message"]

    def reasons() -> set[str]:
        return {e.reason for e in core.list_namespaced_event(namespace).items if e.involved_object.name == "quiet"}

    # Events are written beside the status patch and may be listed a moment after it
    wait_for(lambda: {"AnalysisStarted", "AnalysisInconclusive"} <= reasons(), 20, "both analysis Events")
