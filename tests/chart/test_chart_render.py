"""What `helm template` produces: valid Kubernetes objects, and the operator set up as values say."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest
import yaml
from chart_helpers import CHART, NAMESPACE, NON_DEFAULT_VALUES, RELEASE, ROOT, by_kind, one

CRD_FILE = "modeldeploy.dev_modeldeployments.yaml"
# The oldest Kubernetes the validation targets and the newest kubernetes-validate knows.
K8S_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
# Custom resources with no schema in kubernetes-validate; test_servicemonitor checks this one.
NOT_IN_KUBERNETES_SCHEMAS = {("monitoring.coreos.com/v1", "ServiceMonitor")}


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(
    "values",
    [
        None,
        NON_DEFAULT_VALUES,
        {"serviceAccount": {"create": False, "name": "ops"}, "rbac": {"create": False}},
    ],
    ids=["defaults", "non-defaults", "no-sa-no-rbac"],
)
def test_every_object_validates_strictly(render, values, version):
    docs = render(values).docs()
    assert docs
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in NOT_IN_KUBERNETES_SCHEMAS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} invalid for {version} at {path}: {exc.message}")


def test_helm_test_pod_is_rendered_as_a_test_hook(render):
    docs = render().docs()
    pods = by_kind(docs, "Pod")
    assert len(pods) == 1
    pod = pods[0]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    script = container["args"][0]
    service = one(docs, "Service")["metadata"]["name"]
    # The Service's environment variables first (no cluster DNS needed), its DNS name otherwise.
    env_host = service.upper().replace("-", "_") + "_SERVICE_HOST"
    assert f'os.environ.get("{env_host}") or "{service}.{NAMESPACE}.svc"' in script
    assert ":8081/healthz" in script and ":9090/metrics" in script
    # No other image to pull: the operator's own, which has Python.
    assert container["command"] == ["python", "-c"]
    assert container["image"] == one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    compile(script, "helm-test", "exec")


def test_deployment_defaults(render):
    dep = one(render().docs(), "Deployment")
    spec = dep["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == "ghcr.io/modeldeploy/operator:0.1.0"
    assert c["args"] == ["--all-namespaces"]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env == {
        "MODELDEPLOY_RUNTIME_IMAGE": "ghcr.io/modeldeploy/runtime:0.1.0",
        "MODELDEPLOY_RESYNC_SECONDS": "30",
        "MODELDEPLOY_METRICS_PORT": "9090",
        "MODELDEPLOY_HEALTH_PORT": "8081",
        "MODELDEPLOY_LOG_LEVEL": "info",
        "MODELDEPLOY_OPERATOR_NAMESPACE": NAMESPACE,
        "MODELDEPLOY_OPERATOR_POD_LABELS": f"app.kubernetes.io/name=modeldeploy-operator,app.kubernetes.io/instance={RELEASE}",
    }
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": 9090, "health": 8081}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert pod["serviceAccountName"] == "mdep-modeldeploy-operator"
    assert pod["automountServiceAccountToken"] is True


def test_deployment_is_hardened(render):
    pod = one(render().docs(), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = pod["containers"][0]["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    # A read-only root needs a writable /tmp for Python and the client libraries.
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    (tmp,) = [v for v in pod["volumes"] if v["name"] == mounts["/tmp"]]
    assert "emptyDir" in tmp


def test_deployment_follows_non_default_values(render):
    docs = render(NON_DEFAULT_VALUES).docs()
    dep = one(docs, "Deployment")
    assert dep["metadata"]["name"] == "md"
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == "registry.example.com:5000/ml/modeldeploy-operator@sha256:" + "ab" * 32
    assert c["imagePullPolicy"] == "Always"
    assert c["args"] == ["--namespace", "team-a", "--namespace", "team-b"]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["MODELDEPLOY_RUNTIME_IMAGE"] == "registry.example.com:5000/ml/modeldeploy-runtime:0.1.0"
    assert env["MODELDEPLOY_RESYNC_SECONDS"] == "15"
    assert env["MODELDEPLOY_LOG_LEVEL"] == "debug"
    assert env["MODELDEPLOY_METRICS_PORT"] == "19090" and env["MODELDEPLOY_HEALTH_PORT"] == "18081"
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"metrics": 19090, "health": 18081}
    assert pod["serviceAccountName"] == "modeldeploy"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"] == NON_DEFAULT_VALUES["tolerations"]
    assert pod["affinity"] == NON_DEFAULT_VALUES["affinity"]
    tmpl_meta = dep["spec"]["template"]["metadata"]
    assert tmpl_meta["annotations"] == {"example.com/team": "ml-platform"}
    assert tmpl_meta["labels"]["team"] == "ml-platform"
    # The selector stays the stable pair, whatever extra pod labels say.
    assert dep["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "modeldeploy-operator",
        "app.kubernetes.io/instance": "mdep",
    }
    sa = one(docs, "ServiceAccount")
    assert sa["metadata"]["name"] == "modeldeploy"
    assert sa["metadata"]["annotations"] == NON_DEFAULT_VALUES["serviceAccount"]["annotations"]


def test_tag_defaults_to_app_version_and_can_be_set(render):
    image = one(render({"image": {"tag": "0.2.0"}}).docs(), "Deployment")["spec"]["template"]["spec"]
    assert image["containers"][0]["image"] == "ghcr.io/modeldeploy/operator:0.2.0"


def test_existing_service_account_is_used_and_not_created(render):
    docs = render({"serviceAccount": {"create": False, "name": "ops"}}).docs()
    assert not by_kind(docs, "ServiceAccount")
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "ops"
    for binding in by_kind(docs, "ClusterRoleBinding"):  # the operator's, and the GPU inventory's
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "ops", "namespace": NAMESPACE}]


def test_service_fronts_metrics_and_health_of_the_operator_pod(render):
    docs = render().docs()
    svc = one(docs, "Service")
    dep = one(docs, "Deployment")
    assert svc["spec"]["type"] == "ClusterIP"
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    container_ports = {p["name"] for p in dep["spec"]["template"]["spec"]["containers"][0]["ports"]}
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in svc["spec"]["ports"]}
    assert ports == {"metrics": (9090, "metrics"), "health": (8081, "health")}
    assert {t for _, t in ports.values()} <= container_ports


def test_servicemonitor_is_optional_and_selects_the_metrics_service(render):
    assert not by_kind(render().docs(), "ServiceMonitor")
    docs = render(NON_DEFAULT_VALUES).docs()
    sm = one(docs, "ServiceMonitor")
    svc = one(docs, "Service")
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint == {"port": "metrics", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s"}
    assert "metrics" in {p["name"] for p in svc["spec"]["ports"]}


def test_crd_is_the_generated_one_kept_on_uninstall(render):
    crd = one(render().docs(), "CustomResourceDefinition")
    generated = yaml.safe_load((ROOT / "crds" / CRD_FILE).read_text())
    assert crd["spec"] == generated["spec"]
    assert crd["metadata"]["name"] == generated["metadata"]["name"]
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"


def test_chart_copy_of_the_crd_equals_crds_folder():
    chart_copy = CHART / "files" / "crds" / CRD_FILE
    assert chart_copy.read_text() == (ROOT / "crds" / CRD_FILE).read_text(), (
        f"{chart_copy.relative_to(ROOT)} differs from crds/{CRD_FILE}: run `make crds`"
    )


def test_crd_can_be_left_out_or_deleted_on_uninstall(render):
    assert not by_kind(render({"crds": {"install": False}}).docs(), "CustomResourceDefinition")
    crd = one(render({"crds": {"keep": False}}).docs(), "CustomResourceDefinition")
    assert "helm.sh/resource-policy" not in crd["metadata"].get("annotations", {})


def test_missing_crd_file_fails_with_the_fix(render, tmp_path):
    import shutil

    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    (chart / "files" / "crds" / CRD_FILE).unlink()
    result = render(None, chart=chart)
    assert result.returncode != 0
    assert "make crds" in result.stderr and "crds.install=false" in result.stderr
    assert render({"crds": {"install": False}}, chart=chart).returncode == 0


def test_grafana_dashboard_configmap(render):
    assert not by_kind(render().docs(), "ConfigMap")
    cm = one(render(NON_DEFAULT_VALUES).docs(), "ConfigMap")
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["labels"]["team"] == "ml-platform"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "ML"}
    shipped = json.loads(cm["data"]["modeldeploy.json"])
    assert shipped == json.loads((CHART / "dashboards" / "modeldeploy.json").read_text())


def test_grafana_label_cannot_be_overridden_away(render):
    cm = one(
        render({"grafana": {"dashboard": {"enabled": True, "labels": {"grafana_dashboard": "0"}}}}).docs(),
        "ConfigMap",
    )
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_every_object_is_labelled_for_the_release(render):
    for doc in render(NON_DEFAULT_VALUES).docs():
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "mdep", doc["kind"]
        assert labels["app.kubernetes.io/name"] == "modeldeploy-operator", doc["kind"]
