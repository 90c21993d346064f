"""Specs the cluster would refuse, as a user writes them: refused before any child is applied,
reported under the spec's own field names, never retried until the spec changes, and never
breaking what already serves."""

from __future__ import annotations

import json

import pytest

from .support import wait_for
from .test_operator import apply, children, condition, cpu_model, make_pods_ready, status_of, writes_in

PEER = {"podSelector": {}}


def events_of(kctl, namespace: str, name: str) -> list[dict]:
    out = kctl("get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}", "-o", "json")
    return json.loads(out.stdout)["items"]


def refused(custom, namespace: str, name: str, generation: int = 1) -> dict:
    return wait_for(
        lambda: (
            (s := status_of(custom, namespace, name)).get("observedGeneration") == generation
            and condition(s, "Degraded").get("reason") == "InvalidSpec"
            and s
        ),
        20,
        f"generation {generation} of {name} refused",
    )


# name -> (metadata.name, spec patch, the spec field the message must name)
REFUSED = {
    # Only the API server knows these: each used to build the Deployment and fail on a later child,
    # or build nothing and say nothing.
    "peer-label-key": (
        "m",
        {"networkPolicy": {"allowFrom": [{"podSelector": {"matchLabels": {"a b": "x"}}}]}},
        "spec.networkPolicy.allowFrom[0].podSelector.matchLabels",
    ),
    "toleration": (
        "m",
        {"scheduling": {"tolerations": [{"key": "a", "operator": "Bogus"}]}},
        "spec.scheduling.tolerations[0].operator",
    ),
    "node-selector": ("m", {"scheduling": {"nodeSelector": {"a b": "x"}}}, "spec.scheduling.nodeSelector"),
    "priority-class": ("m", {"scheduling": {"priorityClassName": "Not_Valid"}}, "spec.scheduling.priorityClassName"),
    "affinity-typo": (
        "m",
        {"scheduling": {"affinity": {"nodeAffinity": {"requiredDuringScheduling": {}}}}},
        "spec.scheduling.affinity.nodeAffinity.requiredDuringScheduling",
    ),
    "hpa-behavior": (
        "m",
        {
            "autoscaling": {
                "enabled": True,
                "behavior": {"scaleUp": {"policies": [{"type": "Bogus", "value": 1, "periodSeconds": 1}]}},
            }
        },
        "spec.autoscaling.behavior.scaleUp.policies[0].type",
    ),
    # The operator's own checks, before anything is sent.
    "name-starts-with-a-digit": ("1model", {}, "metadata.name"),
    "name-with-a-dot": ("my.model", {}, "metadata.name"),
    "name-of-64": ("m" * 64, {}, "metadata.name"),
    "negative-cpu": ("m", {"resources": {"requests": {"cpu": "-1"}}}, "spec.resources.requests.cpu"),
    "request-above-limit": (
        "m",
        {"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}},
        "spec.resources.requests.cpu",
    ),
    "gpu-as-a-request": ("m", {"resources": {"requests": {"cpu": "1", "gpu": "1"}}}, "spec.resources.requests.gpu"),
    "negative-surge": ("m", {"rollout": {"maxSurge": -1}}, "spec.rollout.maxSurge"),
    "peer-cidr": (
        "m",
        {"networkPolicy": {"allowFrom": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}},
        "spec.networkPolicy.allowFrom[0].ipBlock.cidr",
    ),
    "peer-empty": ("m", {"networkPolicy": {"allowFrom": [{}]}}, "spec.networkPolicy.allowFrom[0]"),
    "peer-typo": (
        "m",
        {"networkPolicy": {"allowFrom": [{"podSelectr": {}}]}},
        "spec.networkPolicy.allowFrom[0].podSelectr",
    ),
    "env-duplicate": (
        "m",
        {"runtime": {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}},
        "spec.runtime.env[1].name",
    ),
    "env-clash": ("m", {"runtime": {"env": [{"name": "MODELDEPLOY_PORT", "value": "1"}]}}, "spec.runtime.env[0].name"),
    "env-number": ("m", {"runtime": {"env": [{"name": "A", "value": 5}]}}, "spec.runtime.env[0].value"),
    "env-unknown-key": ("m", {"runtime": {"env": [{"name": "A", "valeu": "1"}]}}, "spec.runtime.env[0].valeu"),
    "pdb-negative": ("m", {"podDisruptionBudget": {"minAvailable": -1}}, "spec.podDisruptionBudget.minAvailable"),
    "pdb-keeps-every-pod": (
        "m",
        {"replicas": 1, "podDisruptionBudget": {"minAvailable": 2}},
        "spec.podDisruptionBudget.minAvailable",
    ),
    "metric-target": (
        "m",
        {"autoscaling": {"enabled": True, "metrics": [{"name": "q", "targetAverageValue": "-1"}]}},
        "spec.autoscaling.metrics[0].targetAverageValue",
    ),
    "uri-without-host": ("m", {"model": {"uri": "https:///m.onnx", "sha256": "ab" * 32}}, "spec.model.uri"),
}


@pytest.mark.parametrize(("name", "patch", "field"), REFUSED.values(), ids=REFUSED.keys())
def test_a_spec_the_cluster_cannot_run_builds_nothing_and_names_the_spec_field(
    operator, namespace, kctl, custom, name, patch, field
):
    apply(kctl, namespace, cpu_model(name, **patch))
    status = refused(custom, namespace, name)
    degraded = condition(status, "Degraded")
    assert (status["phase"], degraded["status"], degraded["observedGeneration"]) == ("Degraded", "True", 1)
    assert f"{field}:" in degraded["message"], degraded["message"]
    assert "spec.template" not in degraded["message"] and "spec.ingress" not in degraded["message"]
    assert children(kctl, namespace) == {}, "nothing may be half-built"
    wait_for(
        lambda: [
            e
            for e in events_of(kctl, namespace, name)
            if (e["type"], e["reason"]) == ("Warning", "InvalidSpec") and field in e["message"]
        ],
        10,
        "a Warning event naming the field",
    )


def test_a_refused_update_keeps_the_last_good_revision_serving_and_says_so(
    operator, namespace, kctl, core, custom, apps
):
    apply(kctl, namespace, cpu_model("serving"))
    wait_for(lambda: make_pods_ready(core, namespace, "serving") == 1, 20, "a pod")
    wait_for(lambda: status_of(custom, namespace, "serving").get("phase") == "Ready", 20, "Ready")
    before = {
        kind: json.loads(kctl("get", kind, "serving", "-n", namespace, "-o", "json").stdout)["spec"]
        for kind in ("deployment", "networkpolicy", "poddisruptionbudget")
    }
    bad = {
        "scheduling": {"tolerations": [{"key": "a", "operator": "Bogus"}]},
        "networkPolicy": {"allowFrom": [{"podSelector": {"matchLabels": {"a b": "x"}}}]},
    }
    apply(kctl, namespace, cpu_model("serving", runtime={"batching": {"maxBatchSize": 2}}, **bad))
    status = refused(custom, namespace, "serving", generation=2)
    degraded = condition(status, "Degraded")
    assert "update to generation 2 refused" in degraded["message"]
    assert "spec.scheduling.tolerations[0].operator" in degraded["message"]
    assert "spec.networkPolicy.allowFrom[0].podSelector.matchLabels" in degraded["message"]
    assert "keeps revision 1" in condition(status, "Progressing")["message"]
    assert condition(status, "Ready")["status"] == "True", "the pods of revision 1 still serve"
    after = {
        kind: json.loads(kctl("get", kind, "serving", "-n", namespace, "-o", "json").stdout)["spec"] for kind in before
    }
    assert after == before, "no child of the refused generation may be applied"
    wait_for(
        lambda: any(e["reason"] == "InvalidSpec" for e in events_of(kctl, namespace, "serving")),
        10,
        "an InvalidSpec event",
    )

    # A second, different refusal is news too; a fixed spec is applied.
    apply(kctl, namespace, cpu_model("serving", scheduling={"priorityClassName": "Not_Valid"}))
    refused(custom, namespace, "serving", generation=3)
    wait_for(
        lambda: any("spec.scheduling.priorityClassName" in e["message"] for e in events_of(kctl, namespace, "serving")),
        10,
        "an event for the second refusal",
    )
    apply(kctl, namespace, cpu_model("serving", runtime={"batching": {"maxBatchSize": 2}}))
    wait_for(
        lambda: condition(status_of(custom, namespace, "serving"), "Degraded").get("status") == "False",
        20,
        "Degraded cleared by a fixed spec",
    )
    env = apps.read_namespaced_deployment("serving", namespace).spec.template.spec.containers[0].env
    assert {"MODELDEPLOY_MAX_BATCH_SIZE": "2"}.items() <= {e.name: e.value for e in env}.items()


@pytest.mark.parametrize(
    "patch",
    [
        {"runtime": {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}},  # our check
        {"scheduling": {"affinity": {"nodeAffinity": {"bogus": {}}}}},  # the server's 500
        {"scheduling": {"tolerations": [{"key": "a", "operator": "Bogus"}]}},  # the server's 422
    ],
    ids=["env-duplicate", "server-500", "server-422"],
)
def test_a_refused_spec_costs_no_writes_while_it_waits(operator, cluster, namespace, kctl, custom, patch):
    apply(kctl, namespace, cpu_model("stuck", **patch))
    refused(custom, namespace, "stuck")
    wait_for(lambda: events_of(kctl, namespace, "stuck"), 10, "the event")
    since = len(cluster.audited())
    reconciles = operator.metric("modeldeploy_operator_reconciles_total", result="ok")
    wait_for(
        lambda: operator.metric("modeldeploy_operator_reconciles_total", result="ok") >= reconciles + 3,
        20,
        "three more resyncs (every 3 s)",
    )
    assert writes_in(cluster, namespace, since) == []


def test_a_hand_edited_service_port_and_a_deleted_policy_are_restored(operator, namespace, kctl, core):
    apply(kctl, namespace, cpu_model("edited"))
    wait_for(lambda: len(children(kctl, namespace)) == 4, 20, "the children")
    kctl(
        "patch",
        "svc",
        "edited",
        "-n",
        namespace,
        "--type=json",
        "-p",
        '[{"op":"replace","path":"/spec/ports/0/port","value":9999}]',
    )
    kctl("delete", "networkpolicy", "edited", "-n", namespace)

    def ports() -> list[tuple[str, int]]:
        return sorted((p.name, p.port) for p in core.read_namespaced_service("edited", namespace).spec.ports)

    wait_for(
        lambda: ports() == [("grpc", 8081), ("http", 8080), ("metrics", 9091)],
        10,
        f"the ports restored (now {ports()})",
    )
    wait_for(lambda: "NetworkPolicy" in children(kctl, namespace), 10, "the NetworkPolicy recreated")


def test_an_env_var_added_by_hand_is_removed(operator, namespace, kctl, apps):
    apply(kctl, namespace, cpu_model("added"))
    wait_for(lambda: "Deployment" in children(kctl, namespace), 20, "the Deployment")
    kctl("set", "env", "deployment/added", "-n", namespace, "INJECTED=1")

    def names() -> set[str]:
        return {
            e.name for e in apps.read_namespaced_deployment("added", namespace).spec.template.spec.containers[0].env
        }

    wait_for(lambda: "INJECTED" not in names(), 10, "the injected variable removed")
    assert "MODELDEPLOY_PORT" in names()


def test_a_missing_secret_key_names_no_other_key(operator, namespace, kctl, core, custom):
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "tok"}, "stringData": {"database-password": "x", "api-key": "y"}}
    )
    apply(kctl, namespace, cpu_model("keyed", auth={"secretName": "tok", "secretKey": "nope"}))
    status = wait_for(
        lambda: (
            (s := status_of(custom, namespace, "keyed"))
            and condition(s, "Degraded").get("reason") == "AuthSecretInvalid"
            and s
        ),
        20,
        "AuthSecretInvalid",
    )
    events = wait_for(lambda: events_of(kctl, namespace, "keyed"), 10, "an event")
    seen = json.dumps(status) + json.dumps([e["message"] for e in events])
    assert "nope" in seen
    assert "database-password" not in seen and "api-key" not in seen
