"""Drift: a live child is left alone when it holds what we render (whatever the API server added or
canonicalised), and re-applied when the render changed or someone edited a field we own."""

from __future__ import annotations

import copy

import pytest
from modeldeploy_operator import naming
from modeldeploy_operator.drift import is_subset, list_repairs, needs_apply, replicas_handover, with_spec_hash
from modeldeploy_operator.render import render_children
from operator_helpers import EVERYTHING_ON, SETTINGS, make_target, merged


def desired(kind: str = "Deployment", **spec) -> dict:
    manifest = next(c.manifest for c in render_children(make_target(**spec), SETTINGS) if c.kind == kind)
    return with_spec_hash(manifest)


def as_served(manifest: dict) -> dict:
    """The object as a GET returns it after an apply: server-set metadata, defaults and status on top."""
    live = merged(
        manifest,
        {
            "metadata": {
                "uid": "c0ffee",
                "resourceVersion": "4711",
                "generation": 1,
                "creationTimestamp": "2024-01-01T00:00:00Z",
                "labels": {"team": "added-by-someone-else"},
                "annotations": {"deployment.kubernetes.io/revision": "1"},
                "managedFields": [{"manager": "modeldeploy-operator", "operation": "Apply"}],
            },
            "status": {"observedGeneration": 1, "replicas": 1},
        },
    )
    if manifest["kind"] == "Deployment":
        pod = live["spec"]["template"]["spec"]
        pod.update({"dnsPolicy": "ClusterFirst", "restartPolicy": "Always", "schedulerName": "default-scheduler"})
        pod["containers"][0].update({"terminationMessagePath": "/dev/termination-log"})
        live["spec"]["template"]["metadata"]["creationTimestamp"] = None
    return live


def edited(manifest: dict, *path, value) -> dict:
    out = copy.deepcopy(manifest)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


# ---- in sync --------------------------------------------------------------------------------------


def test_a_missing_child_needs_applying():
    assert needs_apply(desired(), None)


@pytest.mark.parametrize(
    "kind", ["Deployment", "Service", "NetworkPolicy", "HorizontalPodAutoscaler", "PodDisruptionBudget"]
)
def test_a_child_as_served_after_apply_is_in_sync(kind):
    want = desired(kind, **EVERYTHING_ON)
    assert not needs_apply(want, as_served(want))


@pytest.mark.parametrize(
    "ours, stored",
    [("1000m", "1"), ("2048Mi", "2Gi"), ("0.5", "500m"), ("1Gi", "1073741824"), ("1e3", "1k")],
)
def test_quantities_canonicalised_by_the_server_are_not_drift(ours, stored):
    want = desired(resources={"gpu": 0, "requests": {"cpu": ours}, "limits": {"memory": ours}})
    live = as_served(want)
    container = live["spec"]["template"]["spec"]["containers"][0]
    container["resources"] = {"requests": {"cpu": stored}, "limits": {"memory": stored}}
    assert not needs_apply(want, live)


def test_fields_we_leave_unset_are_ignored():
    assert is_subset({"a": 1, "b": None}, {"a": 1})


# ---- drift ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ours", "stored"), [("1", "2"), ("500m", "5"), ("1Gi", "1G")])
def test_a_different_quantity_is_drift(ours, stored):
    want = desired(resources={"gpu": 0, "limits": {"cpu": ours}})
    live = edited(
        as_served(want), "spec", "template", "spec", "containers", 0, "resources", "limits", "cpu", value=stored
    )
    assert needs_apply(want, live)


@pytest.mark.parametrize(
    "path, value",
    [
        (("spec", "replicas"), 7),
        (("spec", "template", "spec", "containers", 0, "image"), "evil:latest"),
        (("spec", "template", "spec", "containers", 0, "securityContext", "runAsNonRoot"), False),
        (("spec", "strategy", "rollingUpdate", "maxSurge"), "25%"),
        (("metadata", "labels", naming.NAME_LABEL), "someone-else"),
    ],
    ids=["replicas", "image", "hardening", "strategy", "label"],
)
def test_a_hand_edited_field_is_drift_even_with_the_same_spec_hash(path, value):
    want = desired()
    live = edited(as_served(want), *path, value=value)
    assert (
        live["metadata"]["annotations"][naming.SPEC_HASH_ANNOTATION]
        == want["metadata"]["annotations"][naming.SPEC_HASH_ANNOTATION]
    )
    assert needs_apply(want, live)


def test_a_field_deleted_by_hand_is_drift():
    want = desired()
    live = as_served(want)
    del live["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    assert needs_apply(want, live)


@pytest.mark.parametrize("change", ["added", "removed"])
def test_a_list_that_changed_length_is_drift(change):
    want = desired()
    live = as_served(want)
    env = live["spec"]["template"]["spec"]["containers"][0]["env"]
    if change == "added":
        env.append({"name": "DEBUG", "value": "1"})
    else:
        env.pop()
    assert needs_apply(want, live)


def test_a_changed_render_is_applied_through_the_spec_hash():
    # A field we stopped setting (paused) is still live; only the hash shows the render changed.
    before = desired(rollout={"paused": True})
    after = desired()
    live = as_served(before)
    assert is_subset(after, {**live, "metadata": {**live["metadata"], "annotations": after["metadata"]["annotations"]}})
    assert needs_apply(after, live)


def test_a_live_child_without_our_hash_is_applied():
    want = desired()
    live = as_served(want)
    del live["metadata"]["annotations"][naming.SPEC_HASH_ANNOTATION]
    assert needs_apply(want, live)


@pytest.mark.parametrize(
    ("ours", "live"), [({"a": 1}, [1]), ([1], {"a": 1}), ("http", "metrics"), (1, 2), ({"a": 1}, {})]
)
def test_shapes_and_values_that_differ_are_not_a_subset(ours, live):
    assert not is_subset(ours, live)


# ---- the spec hash ------------------------------------------------------------------------------------


def test_spec_hash_follows_content_not_key_order():
    manifest = render_children(make_target(), SETTINGS)[0].manifest
    reordered = dict(reversed(list(manifest.items())))
    assert with_spec_hash(manifest)["metadata"]["annotations"] == with_spec_hash(reordered)["metadata"]["annotations"]
    other = render_children(make_target(replicas=2), SETTINGS)[0].manifest
    assert with_spec_hash(other)["metadata"]["annotations"] != with_spec_hash(manifest)["metadata"]["annotations"]


def test_with_spec_hash_leaves_its_input_alone():
    manifest = render_children(make_target(), SETTINGS)[0].manifest
    before = copy.deepcopy(manifest)
    with_spec_hash(manifest)
    assert manifest == before


# ---- fields the API server omits when empty ----------------------------------------------------------


def test_deny_all_network_policy_as_stored_is_in_sync():
    want = desired("NetworkPolicy", networkPolicy={"allowFrom": []})
    live = as_served(want)
    del live["spec"]["ingress"]  # what a GET returns for an empty ingress list
    assert not needs_apply(want, live)


def test_user_env_with_an_empty_value_as_stored_is_in_sync():
    want = desired(runtime={"env": [{"name": "EXTRA", "value": ""}]})
    live = as_served(want)
    env = live["spec"]["template"]["spec"]["containers"][0]["env"]
    env[-1] = {"name": "EXTRA"}  # what a GET returns for an empty value
    assert not needs_apply(want, live)


def _deployment(replicas=None, managers=()):
    spec = {} if replicas is None else {"replicas": replicas}
    fields = [
        {"manager": name, "operation": op, "fieldsV1": {"f:spec": {"f:replicas": {}} if owns else {"f:template": {}}}}
        for name, op, owns in managers
    ]
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "m", "namespace": "ns", "managedFields": fields}, "spec": spec}  # fmt: skip


def test_switching_autoscaling_on_hands_the_live_replicas_over():
    live = _deployment(3, [("modeldeploy-operator", "Apply", True)])
    handover = replicas_handover(_deployment(), live)
    assert handover == {"apiVersion": "apps/v1", "kind": "Deployment",
                        "metadata": {"name": "m", "namespace": "ns"}, "spec": {"replicas": 3}}  # fmt: skip


@pytest.mark.parametrize(
    ("desired", "live"),
    [
        (_deployment(2), _deployment(3, [("modeldeploy-operator", "Apply", True)])),  # we still set replicas
        (_deployment(), _deployment(3, [("kube-controller-manager", "Update", True)])),  # already the HPA's
        (_deployment(), _deployment(3, [("modeldeploy-operator", "Apply", False)])),  # handed over before
        (_deployment(), None),  # nothing live yet
    ],
)
def test_no_handover_when_there_is_nothing_to_hand_over(desired, live):
    assert replicas_handover(desired, live) is None


# ---- lists server-side apply cannot put right ---------------------------------------------------

SERVICE_PORTS = [
    {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"},
    {"name": "metrics", "port": 9091, "targetPort": "metrics", "protocol": "TCP"},
]


def test_a_port_edited_by_hand_replaces_the_port_list():
    desired = {"spec": {"type": "ClusterIP", "ports": SERVICE_PORTS}}
    live = {"spec": {"type": "ClusterIP", "clusterIP": "10.0.0.7", "ports": copy.deepcopy(SERVICE_PORTS)}}
    live["spec"]["ports"][0]["port"] = 9999
    assert list_repairs(desired, live) == [{"op": "replace", "path": "/spec/ports", "value": SERVICE_PORTS}]


def test_an_entry_added_by_hand_replaces_the_innermost_list_only():
    env = [{"name": "A", "value": "1"}]
    desired = {"spec": {"template": {"spec": {"containers": [{"name": "runtime", "image": "i", "env": env}]}}}}
    live = copy.deepcopy(desired)
    live["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "B", "value": "2"})
    assert list_repairs(desired, live) == [
        {"op": "replace", "path": "/spec/template/spec/containers/0/env", "value": env}
    ]


def test_lists_that_match_need_no_repair():
    desired = {"metadata": {"labels": {"a/b": "c"}}, "spec": {"ports": SERVICE_PORTS}}
    live = {"metadata": {"labels": {"a/b": "c", "x": "y"}}, "spec": {"ports": copy.deepcopy(SERVICE_PORTS)}}
    assert list_repairs(desired, live) == []
