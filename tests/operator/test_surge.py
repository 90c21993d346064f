"""maxSurge auto as a pure decision: from Nodes and Pods shaped as the API lists them and the pod
template as rendered, one surge pod only where a node the pods may run on has a free GPU."""

from __future__ import annotations

from typing import Any

import pytest
from modeldeploy_operator import api, surge
from modeldeploy_operator.render import render_deployment, render_pod_template
from operator_helpers import SETTINGS, make_target

PRODUCT = "NVIDIA-A100-SXM4-80GB"


def node(
    name: str = "node-a",
    gpus: str | None = "1",
    labels: dict[str, str] | None = None,
    taints: list[dict] | None = None,
    unschedulable: bool = False,
    resource: str = "nvidia.com/gpu",
) -> dict[str, Any]:
    allocatable = {"cpu": "8", "memory": "32Gi"} | ({resource: gpus} if gpus is not None else {})
    spec: dict[str, Any] = {"taints": taints} if taints else {}
    if unschedulable:
        spec["unschedulable"] = True
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
        "spec": spec,
        "status": {"allocatable": allocatable, "capacity": allocatable},
    }


def pod(on: str | None = "node-a", gpus: str = "1", phase: str = "Running", terminating: bool = False) -> dict:
    meta: dict[str, Any] = {"name": f"p-{on}-{phase}", "namespace": "other"}
    if terminating:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    spec: dict[str, Any] = {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": gpus}}}]}
    if on:
        spec["nodeName"] = on
    return {"metadata": meta, "spec": spec, "status": {"phase": phase}}


def plan(nodes=(), pods=(), error: str = "", replicas: int = 1, inventory: bool = True, **spec) -> surge.SurgePlan:
    target = make_target(replicas=replicas, **spec)
    inv = surge.Inventory(tuple(nodes), tuple(pods), error) if inventory else None
    return surge.plan_surge(target.spec.rollout, replicas, render_pod_template(target, SETTINGS), inv)


# ---- one pod more only where it fits ------------------------------------------------------------

CASES = {
    "free-gpu": ({}, [node()], [], 1, "update surges 1 pod: 1 free nvidia.com/gpu on node-a"),
    "every-gpu-requested": (
        {},
        [node()],
        [pod()],
        0,
        "update will take 1 of 1 replicas offline: no free nvidia.com/gpu on any node "
        "(node-a: 1 of 1 nvidia.com/gpu requested)",
    ),
    "no-gpu-node": ({}, [node(gpus=None)], [], 0, "(no such node has nvidia.com/gpu allocatable)"),
    "no-node-at-all": ({}, [], [], 0, "no free nvidia.com/gpu on any node"),
    "two-of-two-left-one": ({}, [node(gpus="2")], [pod()], 1, "1 free nvidia.com/gpu on node-a"),
    "pod-needs-two": (
        {"resources": {"gpu": 2}},
        [node(gpus="2")],
        [pod()],
        0,
        "no free nvidia.com/gpu on any node (node-a: 1 of 2 nvidia.com/gpu requested)",
    ),
    "free-on-second-node": ({}, [node("a"), node("b")], [pod("a")], 1, "1 free nvidia.com/gpu on b"),
    "free-summed-over-nodes": ({}, [node("a", "2"), node("b")], [], 1, "3 free nvidia.com/gpu on a, b"),
    "many-nodes-counted": (
        {},
        [node(f"n{i}") for i in range(5)],
        [],
        1,
        "5 free nvidia.com/gpu on n0, n1, n2 and 2 more nodes",
    ),
    # What holds a GPU: bound pods that have not finished, terminating ones included.
    "finished-pods-hold-nothing": ({}, [node()], [pod(phase="Succeeded"), pod(phase="Failed")], 1, "1 free"),
    "terminating-pod-still-holds-it": ({}, [node()], [pod(terminating=True)], 0, "1 of 1 nvidia.com/gpu requested"),
    "pending-unbound-pod-holds-nothing": ({}, [node()], [pod(on=None, phase="Pending")], 1, "1 free"),
    "pod-on-another-node": ({}, [node("a")], [pod("b")], 1, "1 free nvidia.com/gpu on a"),
}


@pytest.mark.parametrize("spec, nodes, pods, surges, message", CASES.values(), ids=CASES.keys())
def test_auto_surges_one_pod_only_where_a_free_gpu_is(spec, nodes, pods, surges, message):
    p = plan(nodes, pods, **spec)
    assert (p.max_surge, p.max_unavailable, p.auto) == (surges, 0 if surges else 1, True)
    assert message in p.message


# ---- where the pods may run: selectors, affinity, taints ----------------------------------------

A100 = {"nvidia.com/gpu.product": PRODUCT}
T4 = {"nvidia.com/gpu.product": "Tesla-T4"}
AFFINITY_POOL = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["infer"]}]}]
        }
    }
}
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
DEDICATED = {"key": "dedicated", "value": "ml", "effect": "NoSchedule"}
PLACES = {
    "product-label-matches": ({"resources": {"gpuProduct": PRODUCT}}, node(labels=A100), True, ""),
    "other-product": (
        {"resources": {"gpuProduct": PRODUCT}},
        node(labels=T4),
        False,
        f"no free nvidia.com/gpu on nodes matching nodeSelector {{nvidia.com/gpu.product: {PRODUCT}}} "
        "(node-a: label nvidia.com/gpu.product is 'Tesla-T4')",
    ),
    "product-label-missing": ({"resources": {"gpuProduct": PRODUCT}}, node(), False, "no label nvidia.com/gpu.product"),
    "node-selector": ({"scheduling": {"nodeSelector": {"pool": "infer"}}}, node(labels={"pool": "infer"}), True, ""),
    "node-selector-missed": ({"scheduling": {"nodeSelector": {"pool": "infer"}}}, node(), False, "no label pool"),
    "affinity-matches": ({"scheduling": {"affinity": AFFINITY_POOL}}, node(labels={"pool": "infer"}), True, ""),
    "affinity-missed": (
        {"scheduling": {"affinity": AFFINITY_POOL}},
        node(labels={"pool": "batch"}),
        False,
        "nodes matching the required node affinity (node-a: the required node affinity does not match)",
    ),
    "gpu-taint-tolerated-by-default": ({}, node(taints=[GPU_TAINT]), True, ""),
    "other-taint": ({}, node(taints=[DEDICATED]), False, "taint dedicated=ml:NoSchedule not tolerated"),
    "other-taint-tolerated": (
        {"scheduling": {"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml"}]}},
        node(taints=[DEDICATED]),
        True,
        "",
    ),
    "toleration-of-another-value": (
        {"scheduling": {"tolerations": [{"key": "dedicated", "value": "web", "effect": "NoSchedule"}]}},
        node(taints=[DEDICATED]),
        False,
        "nodes matching the tolerations (node-a: taint dedicated=ml:NoSchedule not tolerated)",
    ),
    "prefer-no-schedule-is-no-bar": ({}, node(taints=[{"key": "x", "effect": "PreferNoSchedule"}]), True, ""),
    "no-execute-taint": ({}, node(taints=[{"key": "x", "effect": "NoExecute"}]), False, "taint x:NoExecute"),
    "cordoned": ({}, node(unschedulable=True), False, "taint node.kubernetes.io/unschedulable:NoSchedule"),
}


@pytest.mark.parametrize("spec, the_node, fits, message", PLACES.values(), ids=PLACES.keys())
def test_only_nodes_the_pods_may_run_on_count(spec, the_node, fits, message):
    p = plan([the_node], **spec)
    assert p.max_surge == (1 if fits else 0)
    assert message in p.message


EXPRESSIONS = {
    "not-in": ({"key": "zone", "operator": "NotIn", "values": ["b"]}, {"zone": "a"}, True),
    "not-in-absent": ({"key": "zone", "operator": "NotIn", "values": ["b"]}, {}, True),
    "not-in-hit": ({"key": "zone", "operator": "NotIn", "values": ["a"]}, {"zone": "a"}, False),
    "exists": ({"key": "zone", "operator": "Exists"}, {"zone": "a"}, True),
    "does-not-exist": ({"key": "zone", "operator": "DoesNotExist"}, {"zone": "a"}, False),
    "gt": ({"key": "gpus", "operator": "Gt", "values": ["3"]}, {"gpus": "4"}, True),
    "lt": ({"key": "gpus", "operator": "Lt", "values": ["3"]}, {"gpus": "4"}, False),
    "gt-not-a-number": ({"key": "gpus", "operator": "Gt", "values": ["3"]}, {"gpus": "many"}, False),
}


@pytest.mark.parametrize("expression, labels, fits", EXPRESSIONS.values(), ids=EXPRESSIONS.keys())
def test_node_affinity_operators(expression, labels, fits):
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [expression]}]
            }
        }
    }
    assert plan([node(labels=labels)], scheduling={"affinity": affinity}).max_surge == (1 if fits else 0)


def test_affinity_terms_are_ored_and_match_fields_name_the_node():
    terms = [
        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["none"]}]},
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-b"]}]},
    ]
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}
    p = plan([node("node-a"), node("node-b")], scheduling={"affinity": affinity})
    assert (p.max_surge, p.message) == (1, "update surges 1 pod: 1 free nvidia.com/gpu on node-b")


# ---- the strategy, and the user's own values ----------------------------------------------------


def test_pods_without_gpus_always_surge_without_reading_the_cluster():
    p = plan(inventory=False, resources={"gpu": 0})
    assert (p.max_surge, p.max_unavailable, p.message) == (1, 0, "update surges 1 pod: the pods request no GPU")


def test_several_replicas_keep_one_unavailable_beside_the_surge():
    p = plan([node(gpus="4")], replicas=3)
    assert (p.max_surge, p.max_unavailable) == (1, 1)
    assert p.message == (
        "update surges 1 pod: 4 free nvidia.com/gpu on node-a; it takes up to 1 of 3 replicas offline at a time"
    )


def test_without_room_several_replicas_go_one_at_a_time():
    p = plan([node()], [pod()], replicas=3)
    assert (p.max_surge, p.max_unavailable) == (0, 1)
    assert p.message.startswith("update will take 1 of 3 replicas offline at a time: no free nvidia.com/gpu")


def test_an_explicit_max_unavailable_is_kept():
    p = plan([node()], rollout={"maxUnavailable": 1})
    assert (p.max_surge, p.max_unavailable) == (1, 1)
    p = plan([node()], [pod()], replicas=4, rollout={"maxUnavailable": "50%"})
    assert (p.max_surge, p.max_unavailable) == (0, "50%")
    assert p.message.startswith("update will take 2 of 4 replicas offline at a time")


def test_max_unavailable_zero_surges_and_waits_for_a_gpu_rather_than_drop_a_pod():
    p = plan([node()], [pod()], rollout={"maxUnavailable": 0})
    assert (p.max_surge, p.max_unavailable) == (1, 0)
    assert p.message.startswith("update surges 1 pod: it waits Pending for a free GPU")


def test_an_unreadable_cluster_counts_no_gpu_free_and_says_why():
    p = plan(error="403 nodes is forbidden")
    assert (p.max_surge, p.max_unavailable) == (0, 1)
    assert p.message == (
        "update will take 1 of 1 replicas offline: could not read nodes and pods to find a free nvidia.com/gpu "
        "(403 nodes is forbidden)"
    )


def test_offline_a_gpu_deployment_is_rendered_without_surge_and_says_the_operator_decides():
    p = plan(inventory=False)
    assert (p.max_surge, p.max_unavailable) == (0, 1)
    assert "decided by the operator when it applies an update" in p.message


def test_zero_replicas_replace_nothing():
    p = plan([node()], replicas=0)
    assert (p.max_surge, p.max_unavailable, p.message) == (0, 1, "no pods to replace: replicas is 0")


EXPLICIT = {
    "surge-0": ({"maxSurge": 0}, 1, (0, 1), "update will take 1 of 1 replicas offline (spec.rollout.maxSurge 0)"),
    "surge-1-one-replica": ({"maxSurge": 1}, 1, (1, 0), "update surges 1 pod (spec.rollout.maxSurge 1)"),
    "surge-percent": (
        {"maxSurge": "25%", "maxUnavailable": "25%"},
        4,
        ("25%", "25%"),
        "update surges 1 pod (spec.rollout.maxSurge 25%) and takes up to 1 of 4 replicas offline at a time",
    ),
}


@pytest.mark.parametrize("rollout, replicas, strategy, message", EXPLICIT.values(), ids=EXPLICIT.keys())
def test_explicit_values_are_used_as_written_without_reading_the_cluster(rollout, replicas, strategy, message):
    p = plan(inventory=False, replicas=replicas, rollout=rollout)
    assert ((p.max_surge, p.max_unavailable), p.message, p.auto) == (strategy, message, False)


def test_the_default_is_auto():
    assert api.Rollout().max_surge == "auto" and api.Rollout().max_unavailable is None


# ---- decided at an update, kept while in sync -------------------------------------------------


def live_deployment(**spec) -> tuple[dict, api.Rollout, dict]:
    target = make_target(**spec)
    template = render_pod_template(target, SETTINGS)
    decided = surge.plan_surge(target.spec.rollout, 1, template, surge.Inventory((node(),)))
    return render_deployment(target, SETTINGS, plan=decided), target.spec.rollout, template


def test_the_plan_is_rendered_into_the_deployment_and_read_back():
    deployment, _, _ = live_deployment()
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert surge.applied_plan(deployment) == surge.SurgePlan(
        1, 0, "update surges 1 pod: 1 free nvidia.com/gpu on node-a", auto=True
    )


def test_an_unchanged_template_keeps_the_applied_plan_whatever_the_gpus_do_now():
    deployment, rollout, template = live_deployment()
    assert surge.kept_plan(rollout, template, deployment) == surge.applied_plan(deployment)


def test_a_changed_template_is_an_update_and_decides_again():
    deployment, rollout, _ = live_deployment()
    changed = render_pod_template(make_target(runtime={"image": "rt:2"}), SETTINGS)
    assert surge.kept_plan(rollout, changed, deployment) is None


@pytest.mark.parametrize(
    "rollout",
    [{"maxSurge": 1}, {"maxUnavailable": 1}],
    ids=["switched-to-explicit", "max-unavailable-changed"],
)
def test_a_changed_rollout_decides_again(rollout):
    deployment, _, template = live_deployment()
    assert surge.kept_plan(api.Rollout.model_validate(rollout), template, deployment) is None


@pytest.mark.parametrize(
    "annotation",
    ["", "not json", '{"maxSurge": 1}', '{"auto": true, "maxSurge": [], "maxUnavailable": 0, "message": ""}'],
)
def test_a_missing_or_unreadable_annotation_decides_again(annotation):
    deployment, rollout, template = live_deployment()
    deployment["metadata"]["annotations"][surge.PLAN_ANNOTATION] = annotation
    assert surge.kept_plan(rollout, template, deployment) is None
    assert surge.kept_plan(rollout, template, None) is None


def test_a_field_removed_from_the_spec_is_an_update_too():
    """The new template is a subset of the live one, yet the pods are replaced: decide again."""
    toleration = {"key": "dedicated", "operator": "Exists"}
    deployment, rollout, _ = live_deployment(scheduling={"tolerations": [toleration]})
    without = render_pod_template(make_target(), SETTINGS)
    assert surge.kept_plan(rollout, without, deployment) is None


def test_a_hand_edit_of_the_live_template_that_the_apply_undoes_decides_again():
    deployment, rollout, template = live_deployment()
    deployment["spec"]["template"]["spec"]["containers"][0]["image"] = "edited:1"
    assert surge.kept_plan(rollout, template, deployment) is None
