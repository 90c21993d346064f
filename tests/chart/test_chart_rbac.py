"""The operator gets exactly the API permissions it uses: no more (least privilege), no fewer."""

from __future__ import annotations

import re

import pytest
from chart_helpers import CHART, NAMESPACE, by_kind, one

# (apiGroup, resource) -> verbs, as the operator and kopf use them (see templates/rbac.yaml).
NAMESPACED = {
    ("modeldeploy.dev", "modeldeployments"): {"get", "list", "watch", "patch"},
    ("modeldeploy.dev", "modeldeployments/status"): {"get", "patch"},
    ("apps", "deployments"): {"list", "watch", "create", "patch"},
    ("apps", "replicasets"): {"list", "watch"},
    ("", "pods"): {"list", "watch"},
    ("", "services"): {"list", "watch", "create", "patch"},
    ("networking.k8s.io", "networkpolicies"): {"list", "watch", "create", "patch", "delete"},
    ("autoscaling", "horizontalpodautoscalers"): {"list", "watch", "create", "patch", "delete"},
    ("policy", "poddisruptionbudgets"): {"list", "watch", "create", "patch", "delete"},
    ("", "secrets"): {"get"},
    ("", "events"): {"create"},
}
# The GPU inventory of maxSurge auto, in a ClusterRole of its own (rbac.gpuInventory): list only.
INVENTORY = {("", "nodes"): {"list"}, ("", "pods"): {"list"}}
# The only cluster-scoped kind: kopf's scanning of CRDs and namespaces is switched off.
CLUSTER_SCOPED: dict[tuple[str, str], set[str]] = {("", "nodes"): {"list"}}
INVENTORY_SUFFIX = "-gpu-inventory"  # of the inventory's ClusterRole and binding
# Granted once and never used: none of these may come back.
NEVER = {
    ("events.k8s.io", "events"),
    ("", "namespaces"),
    ("apiextensions.k8s.io", "customresourcedefinitions"),
}
WATCH_TEAMS = {"watch": {"allNamespaces": False, "namespaces": ["team-a", "team-b"]}}


def grants(rules: list[dict]) -> dict[tuple[str, str], set[str]]:
    """Flattens rules to (group, resource) -> verbs, refusing wildcards and duplicate grants."""
    out: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, f"unexpected rule fields: {rule}"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                assert "*" not in (group, resource) and "*" not in rule["verbs"], f"wildcard in {rule}"
                key = (group, resource)
                assert key not in out, f"{key} granted twice"
                out[key] = set(rule["verbs"])
    return out


def assert_bound(binding: dict, role: dict, sa_name: str) -> None:
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": role["kind"],
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa_name, "namespace": NAMESPACE}]


def split(docs: list[dict], kind: str) -> tuple[list[dict], list[dict]]:
    """(the operator's, the GPU inventory's) objects of `kind`."""
    found = by_kind(docs, kind)
    inventory = [d for d in found if d["metadata"]["name"].endswith(INVENTORY_SUFFIX)]
    return [d for d in found if d not in inventory], inventory


def assert_inventory(docs: list[dict], sa: str) -> None:
    (role,), (binding,) = split(docs, "ClusterRole")[1], split(docs, "ClusterRoleBinding")[1]
    assert grants(role["rules"]) == INVENTORY
    assert_bound(binding, role, sa)


def test_all_namespaces_is_one_cluster_role_with_exactly_the_operators_permissions(render):
    docs = render().docs()
    assert not by_kind(docs, "Role") and not by_kind(docs, "RoleBinding")
    (role,), (binding,) = split(docs, "ClusterRole")[0], split(docs, "ClusterRoleBinding")[0]
    assert grants(role["rules"]) == NAMESPACED
    sa = one(docs, "ServiceAccount")["metadata"]["name"]
    assert_bound(binding, role, sa)
    assert_inventory(docs, sa)
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == sa


def test_namespace_list_gets_a_role_per_namespace_and_only_the_gpu_inventory_cluster_wide(render):
    docs = render(WATCH_TEAMS).docs()
    sa = one(docs, "ServiceAccount")["metadata"]["name"]
    assert split(docs, "ClusterRole")[0] == [] and split(docs, "ClusterRoleBinding")[0] == []
    assert_inventory(docs, sa)
    assert not by_kind(render({**WATCH_TEAMS, "rbac": {"gpuInventory": False}}).docs(), "ClusterRole")
    roles = {r["metadata"]["namespace"]: r for r in by_kind(docs, "Role")}
    bindings = {b["metadata"]["namespace"]: b for b in by_kind(docs, "RoleBinding")}
    assert set(roles) == set(bindings) == {"team-a", "team-b"}
    for ns, role in roles.items():
        assert grants(role["rules"]) == NAMESPACED, ns
        assert_bound(bindings[ns], role, sa)


@pytest.mark.parametrize("values", [{}, WATCH_TEAMS], ids=["all-namespaces", "namespaces"])
def test_rbac_create_false_renders_no_rbac(render, values):
    docs = render({**values, "rbac": {"create": False}}).docs()
    for kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
        assert not by_kind(docs, kind)
    assert one(docs, "ServiceAccount")


def test_every_rule_says_why():
    lines = (CHART / "templates" / "rbac.yaml").read_text().splitlines()
    rule_lines = [i for i, line in enumerate(lines) if re.match(r"^- apiGroups:", line)]
    assert len(rule_lines) == len(NAMESPACED) + len(INVENTORY)
    for i in rule_lines:
        assert lines[i - 1].startswith("# "), f"rule at templates/rbac.yaml:{i + 1} has no comment above it"
