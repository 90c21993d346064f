"""Every child together (same input, same output; owned; labelled) and the Service, NetworkPolicy,
HorizontalPodAutoscaler and PodDisruptionBudget each on its own."""

from __future__ import annotations

import json

import modeldeploy_contract as contract
import pytest
from modeldeploy_operator import api
from modeldeploy_operator.render import (
    Settings,
    Target,
    render_autoscaler,
    render_children,
    render_disruption_budget,
    render_network_policy,
    render_service,
)
from modeldeploy_operator.versions import ApiVersions
from operator_helpers import BASE_SPEC, EVERYTHING_ON, NAME, NAMESPACE, SETTINGS, UID, make_target, merged

CHILD_KINDS = ["Deployment", "Service", "NetworkPolicy", "HorizontalPodAutoscaler", "PodDisruptionBudget"]


def children(**spec) -> dict[str, dict | None]:
    return {c.kind: c.manifest for c in render_children(make_target(**spec), SETTINGS)}


# ---- all children -------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [{}, EVERYTHING_ON], ids=["defaults", "everything-on"])
def test_same_input_gives_byte_identical_output(spec):
    # Two targets parsed separately from equal (but not shared) dicts: no hidden state, no ordering luck.
    first = render_children(make_target(**spec), SETTINGS)
    second = render_children(
        Target(
            NAME,
            NAMESPACE,
            UID,
            api.ModelDeploymentSpec.model_validate(json.loads(json.dumps(merged(BASE_SPEC, spec)))),
        ),
        SETTINGS,
    )
    assert json.dumps([c.manifest for c in first]) == json.dumps([c.manifest for c in second])


def test_rendering_does_not_mutate_the_spec():
    target = make_target(**EVERYTHING_ON)
    before = target.spec.model_dump()
    render_children(target, SETTINGS)
    assert target.spec.model_dump() == before


def test_every_kind_is_listed_with_none_for_switched_off_children():
    rendered = render_children(make_target(), SETTINGS)
    assert [c.kind for c in rendered] == CHILD_KINDS
    assert {c.kind for c in rendered if c.manifest is None} == {"HorizontalPodAutoscaler"}


@pytest.mark.parametrize(
    "spec, off",
    [
        ({"autoscaling": {"enabled": False}}, "HorizontalPodAutoscaler"),
        ({"networkPolicy": {"enabled": False}}, "NetworkPolicy"),
        ({"podDisruptionBudget": {"enabled": False}}, "PodDisruptionBudget"),
    ],
    ids=["hpa", "networkpolicy", "pdb"],
)
def test_a_child_switched_off_renders_none(spec, off):
    spec = merged(EVERYTHING_ON, spec)
    rendered = children(**spec)
    assert rendered[off] is None
    assert all(m is not None for kind, m in rendered.items() if kind != off)


@pytest.mark.parametrize("kind", CHILD_KINDS)
def test_every_child_is_owned_by_the_resource_as_its_controller(kind):
    manifest = children(**EVERYTHING_ON)[kind]
    assert manifest["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "modeldeploy.dev/v1alpha1",
            "kind": "ModelDeployment",
            "name": NAME,
            "uid": UID,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


@pytest.mark.parametrize("kind", CHILD_KINDS)
def test_every_child_is_named_labelled_and_namespaced_like_the_resource(kind):
    meta = children(**EVERYTHING_ON)[kind]["metadata"]
    assert (meta["name"], meta["namespace"]) == (NAME, NAMESPACE)
    assert meta["labels"] == {
        "app.kubernetes.io/name": "modeldeploy-runtime",
        "app.kubernetes.io/instance": NAME,
        "app.kubernetes.io/managed-by": "modeldeploy-operator",
        "modeldeploy.dev/name": NAME,
    }


def test_every_selector_selects_the_pods_of_this_resource_only():
    rendered = children(**EVERYTHING_ON)
    pod_labels = rendered["Deployment"]["spec"]["template"]["metadata"]["labels"]
    selectors = {
        "Deployment": rendered["Deployment"]["spec"]["selector"]["matchLabels"],
        "Service": rendered["Service"]["spec"]["selector"],
        "NetworkPolicy": rendered["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"],
        "PodDisruptionBudget": rendered["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
    }
    for kind, selector in selectors.items():
        assert selector == {"modeldeploy.dev/name": NAME}, kind
        assert selector.items() <= pod_labels.items(), kind
    other = render_children(make_target(name="other"), SETTINGS)[0].manifest
    assert other["spec"]["selector"]["matchLabels"] != selectors["Deployment"]


@pytest.mark.parametrize(
    "versions", [ApiVersions(), ApiVersions(hpa="autoscaling/v2beta2", pdb="policy/v1beta1")], ids=["ga", "beta"]
)
def test_optional_children_use_the_chosen_api_versions(versions):
    rendered = render_children(make_target(**EVERYTHING_ON), Settings(api_versions=versions))
    by_kind = {c.kind: c for c in rendered}
    for kind, version in (("HorizontalPodAutoscaler", versions.hpa), ("PodDisruptionBudget", versions.pdb)):
        assert by_kind[kind].api_version == version
        assert by_kind[kind].manifest["apiVersion"] == version


# ---- Service ------------------------------------------------------------------------------------


def test_service_exposes_the_inference_and_metrics_ports_by_name():
    spec = render_service(make_target())["spec"]
    assert spec["type"] == "ClusterIP"
    assert spec["ports"] == [
        {"name": "http", "port": contract.HTTP_PORT, "targetPort": "http", "protocol": "TCP"},
        {"name": "metrics", "port": contract.METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"},
        {"name": "grpc", "port": 8081, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "grpc"},
    ]


GRPC_OFF = {"runtime": {"grpc": {"enabled": False}}}


def test_grpc_switched_off_leaves_no_grpc_port_anywhere():
    rendered = children(**GRPC_OFF)
    assert [p["name"] for p in rendered["Service"]["spec"]["ports"]] == ["http", "metrics"]
    container = rendered["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert [p["name"] for p in container["ports"]] == ["http", "metrics"]
    assert "MODELDEPLOY_GRPC_PORT" not in {e["name"] for e in container["env"]}
    assert rendered["NetworkPolicy"]["spec"]["ingress"] == [{"from": [{"podSelector": {}}], "ports": HTTP_ONLY}]


def test_grpc_on_by_default_on_the_pod_with_the_runtime_told_its_port():
    container = children()["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "grpc", "containerPort": 8081, "protocol": "TCP"} in container["ports"]
    assert {"name": "MODELDEPLOY_GRPC_PORT", "value": "8081"} in container["env"]


def test_grpc_switch_is_in_the_spec_and_the_crd_as_a_boolean_defaulting_to_true():
    assert api.ModelDeploymentSpec.model_validate({"model": {"uri": "pvc://m/x.onnx"}}).runtime.grpc.enabled is True
    with pytest.raises(ValueError):
        api.ModelDeploymentSpec.model_validate({"model": {"uri": "pvc://m/x.onnx"}, "runtime": {"grpc": {"on": True}}})


# ---- NetworkPolicy --------------------------------------------------------------------------------

FRONTEND = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "frontend"}}}
MONITORING = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
HTTP_ONLY = [{"protocol": "TCP", "port": "http"}]
INFERENCE = [{"protocol": "TCP", "port": "http"}, {"protocol": "TCP", "port": "grpc"}]  # REST and gRPC
METRICS_ONLY = [{"protocol": "TCP", "port": "metrics"}]


def ingress(**policy) -> list[dict]:
    manifest = render_network_policy(make_target(networkPolicy=policy))
    assert manifest["spec"]["policyTypes"] == ["Ingress"]
    return manifest["spec"]["ingress"]


def test_network_policy_default_admits_the_same_namespace_on_the_inference_ports_only():
    assert ingress() == [{"from": [{"podSelector": {}}], "ports": INFERENCE}]


def test_network_policy_admits_only_the_declared_callers():
    assert ingress(allowFrom=[FRONTEND]) == [{"from": [FRONTEND], "ports": INFERENCE}]


def test_empty_allow_from_admits_no_caller():
    assert ingress(allowFrom=[]) == []


def test_metrics_scrapers_reach_the_metrics_port_only():
    assert ingress(allowFrom=[FRONTEND], allowMetricsFrom=[MONITORING]) == [
        {"from": [FRONTEND], "ports": INFERENCE},
        {"from": [MONITORING], "ports": METRICS_ONLY},
    ]


def test_metrics_scrapers_without_callers():
    assert ingress(allowFrom=[], allowMetricsFrom=[MONITORING]) == [{"from": [MONITORING], "ports": METRICS_ONLY}]


def test_network_policy_ports_name_real_container_ports():
    rendered = children(**EVERYTHING_ON)
    port_names = {p["name"] for p in rendered["Deployment"]["spec"]["template"]["spec"]["containers"][0]["ports"]}
    policy_ports = {p["port"] for rule in rendered["NetworkPolicy"]["spec"]["ingress"] for p in rule["ports"]}
    assert policy_ports == {"http", "grpc", "metrics"}
    assert policy_ports <= port_names


# ---- HorizontalPodAutoscaler --------------------------------------------------------------------

CPU_REQUEST = {"resources": {"requests": {"cpu": "1"}}}


def hpa(**autoscaling) -> dict | None:
    return render_autoscaler(make_target(autoscaling=autoscaling, **CPU_REQUEST), SETTINGS)


def test_no_hpa_unless_enabled():
    assert hpa(minReplicas=2, maxReplicas=5) is None


def test_hpa_scales_the_deployment_between_min_and_max():
    spec = hpa(enabled=True, minReplicas=2, maxReplicas=5)["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME}
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 5)


def test_hpa_without_metrics_keeps_the_hpa_default():
    # Kubernetes then scales on 80% CPU utilisation; rendering nothing keeps the diff empty.
    assert "metrics" not in hpa(enabled=True)["spec"]


def test_hpa_cpu_target():
    assert hpa(enabled=True, targetCpuUtilizationPercentage=65)["spec"]["metrics"] == [
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 65}}}
    ]


def test_hpa_pod_metrics_are_sorted_by_name_after_cpu():
    metrics = hpa(**EVERYTHING_ON["autoscaling"])["spec"]["metrics"]
    assert [m["type"] for m in metrics] == ["Resource", "Pods", "Pods"]
    assert [m["pods"]["metric"]["name"] for m in metrics[1:]] == [
        "modeldeploy_inflight_requests",
        "modeldeploy_queue_depth",
    ]
    assert metrics[1]["pods"]["target"] == {"type": "AverageValue", "averageValue": "500m"}


def test_reordering_the_metrics_changes_nothing():
    forward = EVERYTHING_ON["autoscaling"]
    backward = {**forward, "metrics": list(reversed(forward["metrics"]))}
    assert hpa(**forward) == hpa(**backward)


def test_hpa_behavior_passes_through():
    behavior = {
        "scaleDown": {
            "stabilizationWindowSeconds": 600,
            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
        }
    }
    assert hpa(enabled=True, behavior=behavior)["spec"]["behavior"] == behavior
    assert "behavior" not in hpa(enabled=True)["spec"]


# ---- PodDisruptionBudget --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "budget, expected",
    [
        ({}, {"maxUnavailable": 1}),
        ({"maxUnavailable": 2}, {"maxUnavailable": 2}),
        ({"maxUnavailable": "30%"}, {"maxUnavailable": "30%"}),
        ({"minAvailable": 1}, {"minAvailable": 1}),
        ({"minAvailable": "50%"}, {"minAvailable": "50%"}),
    ],
    ids=["default", "max-int", "max-percent", "min-int", "min-percent"],
)
def test_pdb_budget(budget, expected):
    spec = render_disruption_budget(make_target(podDisruptionBudget=budget), SETTINGS)["spec"]
    assert spec == {"selector": {"matchLabels": {"modeldeploy.dev/name": NAME}}, **expected}
