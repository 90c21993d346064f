"""What the API server refuses: which answers are permanent, and which spec field each refused
child field comes from. The answers are the ones a 1.20 API server gives to the children of the
specs below (server-side apply with dryRun=All)."""

from __future__ import annotations

import copy
import json

import pytest
from modeldeploy_operator.fieldmap import refusal_problems, spec_field
from modeldeploy_operator.handlers import retry_delay
from modeldeploy_operator.kube import Cause, Kube, Refused, refusal
from modeldeploy_operator.render import render_children
from modeldeploy_operator.render.deployment import runtime_env
from operator_helpers import NAME, SETTINGS, UID, make_target

CPU = {"resources": {"gpu": 0}}


def status_body(code: int, message: str, causes: list[dict] | None = None, reason: str = "Invalid") -> str:
    body = {"kind": "Status", "status": "Failure", "message": message, "reason": reason, "code": code}
    if causes is not None:
        body["details"] = {"causes": causes}
    return json.dumps(body)


# ---- which answers are permanent ------------------------------------------------------------------


def test_a_422_is_refused_with_its_causes():
    body = status_body(
        422,
        'NetworkPolicy.networking.k8s.io "m" is invalid: ...',
        [
            {
                "reason": "FieldValueInvalid",
                "message": 'Invalid value: "10.0.0.0/33": not a valid CIDR',
                "field": "spec.ingress[0].from[0].ipBlock.cidr",
            }
        ],
    )
    refused = refusal(422, body)
    assert refused is not None and refused.status == 422
    assert refused.causes == [
        Cause("spec.ingress[0].from[0].ipBlock.cidr", 'Invalid value: "10.0.0.0/33": not a valid CIDR')
    ]


@pytest.mark.parametrize(
    ("message", "causes"),
    [
        (
            'failed to create typed patch object: .spec.template.spec.containers[name="runtime"].env: '
            'duplicate entries for key [name="A"]',
            [Cause('spec.template.spec.containers[name="runtime"].env', 'duplicate entries for key [name="A"]')],
        ),
        (
            "failed to create typed patch object: errors:\n  .spec.ingress[0].from[0].podSelectr: field not declared"
            " in schema\n  .spec.ingress[0].from[0].x: field not declared in schema",
            [
                Cause("spec.ingress[0].from[0].podSelectr", "field not declared in schema"),
                Cause("spec.ingress[0].from[0].x", "field not declared in schema"),
            ],
        ),
    ],
    ids=["duplicate-env", "unknown-fields"],
)
def test_a_500_that_says_the_object_does_not_fit_the_schema_is_refused(message, causes):
    refused = refusal(500, status_body(500, message, reason="InternalError"))
    assert refused is not None
    assert refused.causes == causes


@pytest.mark.parametrize("code", [409, 429, 503, 504])
def test_conflicts_throttling_and_a_busy_server_are_not_refusals(code):
    assert refusal(code, status_body(code, "try again", reason="Conflict")) is None


def test_a_500_that_says_nothing_of_the_object_is_not_a_refusal():
    assert refusal(500, status_body(500, "etcdserver: request timed out", reason="InternalError")) is None
    assert refusal(500, "<html>bad gateway</html>") is None


@pytest.mark.parametrize("code", [401, 403, 404])
def test_access_and_absence_are_not_refusals_of_the_object(code):
    assert refusal(code, status_body(code, "no", reason="Forbidden")) is None


def test_a_400_without_causes_keeps_the_servers_message():
    refused = refusal(400, status_body(400, "Deployment in version v1 cannot be handled", reason="BadRequest"))
    assert refused is not None and refused.causes == [] and "cannot be handled" in refused.message


@pytest.mark.parametrize(("retry", "delay"), [(0, 1), (1, 2), (3, 8), (6, 60), (50, 60)])
def test_transient_errors_back_off_to_a_minute(retry, delay):
    assert retry_delay(retry) == delay


# ---- which spec field a child field comes from ----------------------------------------------------

ENV = {"runtime": {"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}, **CPU}
METRICS = {
    "resources": {"requests": {"cpu": "1"}},
    "autoscaling": {
        "enabled": True,
        "targetCpuUtilizationPercentage": 70,
        "metrics": [{"name": "zeta", "targetAverageValue": "1"}, {"name": "alpha", "targetAverageValue": "1"}],
    },
}

FIELDS = {
    "cidr": (
        {"networkPolicy": {"allowFrom": [{"ipBlock": {"cidr": "x"}}]}},
        "NetworkPolicy",
        "spec.ingress[0].from[0].ipBlock.cidr",
        "spec.networkPolicy.allowFrom[0].ipBlock.cidr",
    ),
    "metrics-peer": (
        {"networkPolicy": {"allowMetricsFrom": [{}, {}]}},
        "NetworkPolicy",
        "spec.ingress[1].from[1]",
        "spec.networkPolicy.allowMetricsFrom[1]",
    ),
    "metrics-peer-alone": (
        {"networkPolicy": {"allowFrom": [], "allowMetricsFrom": [{}]}},
        "NetworkPolicy",
        "spec.ingress[0].from[0]",
        "spec.networkPolicy.allowMetricsFrom[0]",
    ),
    "unknown-peer-key": (
        {"networkPolicy": {"allowFrom": [{}]}},
        "NetworkPolicy",
        "spec.ingress[0].from[0].podSelectr",
        "spec.networkPolicy.allowFrom[0].podSelectr",
    ),
    "service-name": ({}, "Service", "metadata.name", "metadata.name"),
    "env-by-index": (
        ENV,
        "Deployment",
        f"spec.template.spec.containers[0].env[{len(runtime_env(make_target(**CPU))) + 1}].value",
        "spec.runtime.env[1].value",
    ),
    "env-by-key": (
        ENV,
        "Deployment",
        'spec.template.spec.containers[name="runtime"].env[name="A"].value',
        "spec.runtime.env[0].value",
    ),
    "request": (
        {},
        "Deployment",
        "spec.template.spec.containers[0].resources.requests[gpu]",
        "spec.resources.requests.gpu",
    ),
    "gpu-limit": (
        {},
        "Deployment",
        "spec.template.spec.containers[0].resources.limits[nvidia.com/gpu]",
        "spec.resources.gpu",
    ),
    "surge": ({}, "Deployment", "spec.strategy.rollingUpdate.maxSurge", "spec.rollout.maxSurge"),
    "deadline": ({}, "Deployment", "spec.progressDeadlineSeconds", "spec.rollout.progressDeadlineSeconds"),
    "toleration": (
        {},
        "Deployment",
        "spec.template.spec.tolerations[0].operator",
        "spec.scheduling.tolerations[0].operator",
    ),
    "node-selector": ({}, "Deployment", "spec.template.spec.nodeSelector", "spec.scheduling.nodeSelector"),
    "gpu-product": (
        {},
        "Deployment",
        "spec.template.spec.nodeSelector[nvidia.com/gpu.product]",
        "spec.resources.gpuProduct",
    ),
    "priority": ({}, "Deployment", "spec.template.spec.priorityClassName", "spec.scheduling.priorityClassName"),
    "affinity": (
        {},
        "Deployment",
        "spec.template.spec.affinity.nodeAffinity.bogus",
        "spec.scheduling.affinity.nodeAffinity.bogus",
    ),
    "image": ({}, "Deployment", "spec.template.spec.containers[0].image", "spec.runtime.image"),
    "cache-claim": (
        {},
        "Deployment",
        "spec.template.spec.volumes[1].persistentVolumeClaim.claimName",
        "spec.runtime.cache.claimName",
    ),
    "hpa-max": (METRICS, "HorizontalPodAutoscaler", "spec.maxReplicas", "spec.autoscaling.maxReplicas"),
    "hpa-behavior": (
        METRICS,
        "HorizontalPodAutoscaler",
        "spec.behavior.scaleUp.policies[0].type",
        "spec.autoscaling.behavior.scaleUp.policies[0].type",
    ),
    "hpa-cpu": (
        METRICS,
        "HorizontalPodAutoscaler",
        "spec.metrics[0].resource.target.averageUtilization",
        "spec.autoscaling.targetCpuUtilizationPercentage",
    ),
    "hpa-sorted-metric": (
        METRICS,
        "HorizontalPodAutoscaler",
        "spec.metrics[1].pods.target.averageValue",
        "spec.autoscaling.metrics[1].targetAverageValue",
    ),
    "pdb-min": ({}, "PodDisruptionBudget", "spec.minAvailable", "spec.podDisruptionBudget.minAvailable"),
}


@pytest.mark.parametrize(("spec", "kind", "child", "expected"), FIELDS.values(), ids=FIELDS.keys())
def test_a_child_field_is_named_as_the_spec_field_it_comes_from(spec, kind, child, expected):
    assert spec_field(kind, child, make_target(**spec)) == expected


def test_the_env_the_operator_renders_is_not_the_users():
    assert spec_field("Deployment", "spec.template.spec.containers[0].env[0].value", make_target(**ENV)) is None


def test_the_default_peer_is_not_the_users():
    assert spec_field("NetworkPolicy", "spec.ingress[0].from[0]", make_target()) is None


def test_a_refusal_becomes_problems_of_spec_fields():
    target = make_target(networkPolicy={"allowFrom": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]})
    refused = Refused(422, "invalid", [Cause("spec.ingress[0].from[0].ipBlock.cidr", 'Invalid value: "10.0.0.0/33"')])
    (problem,) = refusal_problems("NetworkPolicy", refused, target)
    assert problem.field == "spec.networkPolicy.allowFrom[0].ipBlock.cidr"
    assert "spec.ingress" not in str(problem)
    assert '"10.0.0.0/33"' in problem.message


def test_a_field_the_spec_does_not_have_is_still_reported():
    refused = Refused(422, "invalid", [Cause("spec.template.spec.hostname", "Invalid value")])
    (problem,) = refusal_problems("Deployment", refused, make_target())
    assert problem.field == "spec"
    assert "Deployment" in problem.message and "Invalid value" in problem.message


def test_the_same_cause_twice_is_one_problem():
    cause = Cause("spec.template.spec.containers[0].resources.requests[gpu]", "Invalid value")
    assert len(refusal_problems("Deployment", Refused(422, "x", [cause, cause]), make_target())) == 1


# ---- the apply layer with a refusing API server ---------------------------------------------------


class RefusingKube(Kube):
    """The apply layer over a fake API server that refuses the kinds in `refuse`; `refuse_merged`
    kinds are refused only merged with what is live (under their own name), as a hand edit does."""

    def __init__(self, refuse: set[str] = frozenset(), refuse_merged: set[str] = frozenset()):
        super().__init__(client=None)
        self.refuse, self.refuse_merged, self.calls = set(refuse), set(refuse_merged), []
        self.repaired: set[str] = set()

    def apply(self, manifest, field_manager="modeldeploy-operator", *, dry_run=False):
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        self.calls.append(("dry-run" if dry_run else "apply", kind, name))
        merged_refused = kind in self.refuse_merged and name == NAME and kind not in self.repaired
        if kind in self.refuse or merged_refused:
            raise Refused(422, f"{kind} is invalid", [Cause("spec.ports[2].name", 'Duplicate value: "http"')])
        return manifest

    def json_patch(self, api_version, kind, namespace, name, ops):
        self.calls.append(("json-patch", kind, name))
        self.repaired.add(kind)


def rendered(**spec) -> tuple[list, dict]:
    children = render_children(make_target(**spec), SETTINGS)
    return children, {c.kind: None for c in children}


def test_a_refused_child_does_not_stop_the_others():
    kube = RefusingKube(refuse={"Service"})
    children, live = rendered()
    with pytest.raises(Refused) as refused:
        kube.sync_children(children, live, UID)
    assert refused.value.kind == "Service"
    assert ("apply", "NetworkPolicy", NAME) in kube.calls and ("apply", "PodDisruptionBudget", NAME) in kube.calls


def test_dry_run_judges_every_child_and_writes_nothing():
    kube = RefusingKube(refuse={"NetworkPolicy"})
    children, live = rendered()
    refused = kube.dry_run_children(children, live)
    assert set(refused) == {"NetworkPolicy"}
    assert {call[0] for call in kube.calls} == {"dry-run"}
    assert {call[1] for call in kube.calls} == {c.kind for c in children if c.manifest is not None}


def test_a_child_refused_only_merged_with_a_hand_edit_is_judged_as_new_and_repaired():
    kube = RefusingKube(refuse_merged={"Service"})
    children, _ = rendered()
    service = next(c for c in children if c.kind == "Service")
    live_service = copy.deepcopy(service.manifest)
    live_service["spec"]["ports"][0]["port"] = 9999
    live = {"Service": live_service}
    assert kube.dry_run_children([service], live) == {}, "the spec's Service is fine"
    assert [c[0] for c in kube.calls] == ["dry-run", "dry-run"] and kube.calls[1][2] != NAME
    kube.calls.clear()
    kube.sync_children([service], live, UID)
    assert [c[0] for c in kube.calls] == ["apply", "json-patch", "apply"]


def test_a_refusal_no_list_repair_explains_is_raised():
    kube = RefusingKube(refuse={"Service"})
    children, _ = rendered()
    service = next(c for c in children if c.kind == "Service")
    live = copy.deepcopy(service.manifest)
    live["spec"]["type"] = "NodePort"
    with pytest.raises(Refused):
        kube.sync_children([service], {"Service": live}, UID)
