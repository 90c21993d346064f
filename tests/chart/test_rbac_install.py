"""The chart's RBAC is enough, proven on a real API server.

A second local control plane runs with `--authorization-mode=RBAC`. The chart is installed into it
with admin credentials, then the real operator runs with nothing but the chart's ServiceAccount
token, with the args and env the chart's Deployment gives it, and reconciles examples. The API
server's audit log says who made each request and what it answered, so "no request was denied"
is checked on the server's side, not only in the operator's log.

`helm test` cannot run here: the local control plane has no scheduler and no kubelet, so the test
pod (like the operator's own pod) never starts. The operator runs as a process instead.
"""

from __future__ import annotations

import base64
import copy
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest
import yaml
from chart_helpers import CHART, ROOT, run_helm
from modeldeploy_operator.naming import OPERATOR_NAME
from test_chart_rbac import CLUSTER_SCOPED, NAMESPACED, NEVER

sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "hack"))
from e2e.support import GROUP, PLURAL, VERSION, Operator, set_pod_ready, wait_for  # noqa: E402
from localcluster import LocalCluster  # noqa: E402

pytestmark = [
    pytest.mark.cluster,
    # The admin kubeconfig of the throwaway cluster skips TLS verification; the operator's does not.
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),
]

RELEASE = "modeldeploy-operator"  # contains the chart name, so it is also the ServiceAccount's name
RELEASE_NS = "modeldeploy-system"
SA_USER = f"system:serviceaccount:{RELEASE_NS}:{RELEASE}"
EXAMPLE = ROOT / "examples" / "digits-cpu.yaml"
CHILDREN = "deployments,services,networkpolicies,poddisruptionbudgets,horizontalpodautoscalers"
ALL_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")


def kubectl(kubeconfig: Path, *args: str, input: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", *args], capture_output=True, text=True, input=input, timeout=30
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {proc.stderr}")
    return proc.stdout


class AuditTail:
    """The ServiceAccount's requests as the API server audited them, from the moment it was made."""

    def __init__(self, log: Path):
        self.log, self.offset, self.seen = log, log.stat().st_size if log.exists() else 0, []

    def requests(self) -> list[dict]:
        with self.log.open("rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]  # the server may be halfway through a line
        self.offset += len(complete)
        for line in complete.decode().splitlines():
            event = json.loads(line)
            if event["user"]["username"] == SA_USER and event["stage"] == "ResponseComplete":
                self.seen.append(event)
        return self.seen

    def denied(self) -> list[str]:
        return [describe(e) for e in self.requests() if e["responseStatus"]["code"] == 403]

    def writes(self) -> set[str]:
        return {describe(e) for e in self.requests() if e["verb"] in ("create", "patch", "update", "delete")}


def describe(event: dict) -> str:
    ref = event.get("objectRef") or {}
    resource = "/".join(filter(None, (ref.get("resource"), ref.get("subresource"))))
    return f"{event['verb']} {resource or event['requestURI']} in {ref.get('namespace') or 'the cluster'}"


class Installed:
    """The chart installed in the RBAC cluster, and everything a test needs to drive it."""

    def __init__(self, cluster: LocalCluster, helm: Path, workdir: Path):
        self.cluster, self.helm, self.workdir = cluster, helm, workdir
        config = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=config)
        self.api = kubernetes.client.ApiClient(config)
        self.core = kubernetes.client.CoreV1Api(self.api)
        self.custom = kubernetes.client.CustomObjectsApi(self.api)
        self.operators: list[Operator] = []

    def kubectl(self, *args: str, **kw) -> str:
        return kubectl(self.cluster.kubeconfig, *args, **kw)

    def install(self, values: dict) -> dict:
        """`helm upgrade --install` with admin credentials; returns the operator's container spec."""
        result = run_helm(
            self.helm,
            "upgrade",
            "--install",
            RELEASE,
            str(CHART),
            "--namespace",
            RELEASE_NS,
            "--create-namespace",
            "--kubeconfig",
            str(self.cluster.kubeconfig),
            values={"resyncSeconds": 5, **values},
            tmp_path=self.workdir,
        )
        assert result.returncode == 0, f"helm install failed: {result.stderr}"
        wait_for(self.crd_served, 30, "the chart's CRD to be served")
        deployment = json.loads(self.kubectl("get", "deployment", RELEASE, "-n", RELEASE_NS, "-o", "json"))
        return deployment["spec"]["template"]["spec"]["containers"][0]

    def crd_served(self) -> bool:
        try:
            self.kubectl("get", "modeldeployments", "-A")
        except AssertionError:
            return False
        return True

    def service_account_kubeconfig(self) -> Path:
        """A kubeconfig holding only the token and CA the chart's ServiceAccount would get in its pod."""

        def token_secret() -> dict | None:
            secrets = self.core.list_namespaced_secret(
                RELEASE_NS, field_selector="type=kubernetes.io/service-account-token"
            )
            for s in secrets.items:
                if (s.metadata.annotations or {}).get("kubernetes.io/service-account.name") == RELEASE and s.data:
                    return s.data
            return None

        data = wait_for(token_secret, 20, f"the token Secret of ServiceAccount {RELEASE}")
        path = self.workdir / "service-account.kubeconfig"
        cluster = {"server": self.cluster.server, "certificate-authority-data": data["ca.crt"]}
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "sa",
                    "clusters": [{"name": "local", "cluster": cluster}],
                    "users": [{"name": "sa", "user": {"token": base64.b64decode(data["token"]).decode()}}],
                    "contexts": [{"name": "sa", "context": {"cluster": "local", "user": "sa"}}],
                }
            )
        )
        return path

    def run_operator(self, container: dict) -> tuple[Operator, AuditTail]:
        """The operator with the ServiceAccount's token and the args and env of the chart's Deployment."""
        audit = AuditTail(self.cluster.audit_log)
        log_dir = Path(tempfile.mkdtemp(prefix="operator-", dir=self.workdir))
        op = ChartOperator(self.service_account_kubeconfig(), log_dir, container)
        self.operators.append(op)
        return op.start(), audit

    def namespace(self, name: str) -> str:
        self.core.create_namespace({"metadata": {"name": name}})
        return name

    def apply(self, namespace: str, manifest: dict | Path) -> None:
        text = manifest.read_text() if isinstance(manifest, Path) else json.dumps(manifest)
        self.kubectl("apply", "-n", namespace, "-f", "-", input=text)

    def status(self, namespace: str, name: str) -> dict:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name).get("status") or {}

    def children(self, namespace: str) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for item in json.loads(self.kubectl("get", CHILDREN, "-n", namespace, "-o", "json"))["items"]:
            found.setdefault(item["kind"], []).append(item["metadata"]["name"])
        return found

    def play_kubelet(self, namespace: str, name: str) -> int:
        pods = self.core.list_namespaced_pod(namespace, label_selector=f"modeldeploy.dev/name={name}").items
        for pod in pods:
            set_pod_ready(self.core, pod)
        return len(pods)

    def can_i(self, verb: str, resource: str, namespace: str | None = None) -> bool:
        """`kubectl auth can-i` as the ServiceAccount, through impersonation, as an admin would check."""
        resource, _, sub = resource.partition("/")  # for can-i, TYPE/NAME names an object, not a subresource
        where = ["-n", namespace] if namespace else ["--all-namespaces"]
        flags = [f"--subresource={sub}"] if sub else []
        out = self.kubectl("auth", "can-i", verb, resource, *flags, f"--as={SA_USER}", *where, check=False)
        return out.strip() == "yes"

    def stop_operators(self) -> None:
        for op in self.operators:
            op.stop()


class ChartOperator(Operator):
    """`Operator` started with the container args of the chart's Deployment instead of `--all-namespaces`."""

    def __init__(self, kubeconfig: Path, log_dir: Path, container: dict):
        env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
        # The chart's ports are fixed; here several processes share one machine.
        env.pop("MODELDEPLOY_METRICS_PORT")
        env.pop("MODELDEPLOY_HEALTH_PORT")
        super().__init__(kubeconfig, log_dir, extra_env=env, args=container["args"])


@pytest.fixture(scope="module")
def chart(helm: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    cluster = LocalCluster(tmp_path_factory.mktemp("rbac-cluster"), authorization="RBAC")
    try:
        cluster.start()
    except (RuntimeError, TimeoutError) as exc:
        cluster.stop()
        pytest.fail(f"the local control plane (RBAC) could not start: {exc}")
    installed = Installed(cluster, helm, tmp_path_factory.mktemp("rbac-install"))
    try:
        yield installed
    finally:
        installed.stop_operators()
        cluster.stop()


@pytest.fixture
def operators(chart: Installed) -> Iterator[Installed]:
    """The installed chart; operators started through it stop when the test ends."""
    yield chart
    chart.stop_operators()
    chart.operators.clear()


def wait_reconciled(chart: Installed, audit: AuditTail, op: Operator, namespace: str, name: str, phase: str) -> dict:
    """Waits for `phase` in status; fails at once, naming the request, if the server denied any."""

    def check() -> dict | None:
        denied = audit.denied()
        assert not denied, f"the API server denied the operator: {denied}\n{op.log_tail()}"
        status = chart.status(namespace, name)
        return status if status.get("phase") == phase else None

    return wait_for(check, 20, f"{namespace}/{name} to be {phase}")


def refusals(op: Operator) -> list[str]:
    """Lines of the operator's log that tell of a request the API server refused."""
    return [line for line in op.log_tail(10_000_000).splitlines() if "(403)" in line or "forbidden" in line.lower()]


def test_service_account_token_is_enough_to_reconcile_in_every_namespace(operators: Installed):
    container = operators.install({})
    assert container["args"] == ["--all-namespaces"]
    op, audit = operators.run_operator(container)
    ns = operators.namespace("models")
    operators.core.create_namespaced_secret(ns, {"metadata": {"name": "digits-token"}, "stringData": {"token": "s3"}})
    operators.apply(ns, EXAMPLE)
    secured = yaml.safe_load(EXAMPLE.read_text())
    secured["metadata"]["name"] = "digits-secured"
    secured["spec"]["auth"] = {"secretName": "digits-token"}
    operators.apply(ns, secured)

    for name in ("digits", "digits-secured"):
        status = wait_reconciled(operators, audit, op, ns, name, "Progressing")
        assert status["observedGeneration"] == 1
        wait_for(lambda n=name: operators.play_kubelet(ns, n) == 2, 20, f"the pods of {name}")
        status = wait_reconciled(operators, audit, op, ns, name, "Ready")
        assert status["ready"] == "2/2"
    found = operators.children(ns)
    assert {kind: sorted(names) for kind, names in found.items()} == {
        kind: ["digits", "digits-secured"] for kind in ("Deployment", "Service", "NetworkPolicy", "PodDisruptionBudget")
    }
    env = json.loads(operators.kubectl("get", "deployment", "digits-secured", "-n", ns, "-o", "json"))
    env = env["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {
        "name": "MODELDEPLOY_AUTH_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "digits-token", "key": "token"}},
    } in env

    events = json.loads(operators.kubectl("get", "events", "-n", ns, "-o", "json"))["items"]
    ours = {(e["involvedObject"]["name"], e["reason"]) for e in events if e["source"].get("component") == OPERATOR_NAME}
    assert {name for name, _ in ours} == {"digits", "digits-secured"}, ours

    # Everything came from the ServiceAccount and nothing was refused, as the server saw it.
    assert audit.denied() == []
    writes = audit.writes()
    for expected in (
        f"patch deployments in {ns}",
        f"patch services in {ns}",
        f"patch networkpolicies in {ns}",
        f"patch poddisruptionbudgets in {ns}",
        f"patch modeldeployments/status in {ns}",
        f"create events in {ns}",
    ):
        assert expected in writes, f"{expected!r} not among the ServiceAccount's writes: {sorted(writes)}"
    assert f"get secrets in {ns}" in {describe(e) for e in audit.requests()}
    assert refusals(op) == [], op.log_tail()


def test_service_account_may_do_exactly_what_the_operator_needs(operators: Installed):
    operators.install({})
    ns = "default"
    # What a user would check: the operator's own verbs yes, anything beyond them no.
    assert operators.can_i("patch", "modeldeployments.modeldeploy.dev/status", ns)
    assert operators.can_i("get", "secrets", ns)
    assert operators.can_i("create", "events", ns)
    assert operators.can_i("watch", "pods", ns)
    assert operators.can_i("patch", "modeldeployments.modeldeploy.dev/status")  # in every namespace
    assert not operators.can_i("list", "secrets")
    for verb, resource in [
        ("delete", "secrets"),
        ("list", "secrets"),
        ("patch", "pods/status"),
        ("create", "pods"),
        ("delete", "modeldeployments.modeldeploy.dev"),
        ("update", "modeldeployments.modeldeploy.dev/status"),
        ("patch", "deployments.apps/scale"),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ]:
        assert not operators.can_i(verb, resource, ns), f"the operator's ServiceAccount may {verb} {resource}"

    # Every verb on every resource it touches, and on a few it must not, asked of the authorizer.
    authz = kubernetes.client.AuthorizationV1Api(operators.api)
    groups = ["system:serviceaccounts", f"system:serviceaccounts:{RELEASE_NS}", "system:authenticated"]
    untouched = {
        ("", "configmaps"),
        ("", "pods/exec"),
        ("", "pods/log"),
        ("", "pods/status"),
        ("", "serviceaccounts/token"),
        ("apps", "deployments/scale"),
    }
    granted = {**NAMESPACED, **CLUSTER_SCOPED, **{key: set() for key in untouched | NEVER}}
    cluster_scoped = set(CLUSTER_SCOPED) | {("", "namespaces"), ("apiextensions.k8s.io", "customresourcedefinitions")}
    wrong = []
    for (group, resource), verbs in granted.items():
        name, _, sub = resource.partition("/")
        for verb in ALL_VERBS:
            review = authz.create_subject_access_review(
                {
                    "spec": {
                        "user": SA_USER,
                        "groups": groups,
                        "resourceAttributes": {
                            "group": group,
                            "resource": name,
                            "subresource": sub,
                            "verb": verb,
                            "namespace": "" if (group, resource) in cluster_scoped else ns,
                        },
                    }
                }
            )
            if review.status.allowed != (verb in verbs):
                wrong.append(f"{verb} {group}/{resource}: {'allowed' if review.status.allowed else 'denied'}")
    assert wrong == []


def test_a_missing_permission_is_caught(operators: Installed):
    """Without `patch` on modeldeployments/status, the same check that passes above fails at once."""
    container = operators.install({})
    rbac = kubernetes.client.RbacAuthorizationV1Api(operators.api)
    role = rbac.read_cluster_role(RELEASE)
    original = copy.deepcopy(role.rules)
    for rule in role.rules:
        if rule.resources == ["modeldeployments/status"]:
            rule.verbs = [v for v in rule.verbs if v != "patch"]
    rbac.replace_cluster_role(RELEASE, role)
    try:
        assert not operators.can_i("patch", "modeldeployments.modeldeploy.dev/status")
        assert operators.can_i("patch", "modeldeployments.modeldeploy.dev")
        op, audit = operators.run_operator(container)
        ns = operators.namespace("regression")
        operators.apply(ns, EXAMPLE)
        with pytest.raises(AssertionError, match=f"patch modeldeployments/status in {ns}"):
            wait_reconciled(operators, audit, op, ns, "digits", "Progressing")
        assert "Deployment" in operators.children(ns), "everything but status still works"
        assert operators.status(ns, "digits") == {}
        wait_for(lambda: refusals(op), 10, "the operator to log the refusal")
    finally:
        role = rbac.read_cluster_role(RELEASE)
        role.rules = original
        rbac.replace_cluster_role(RELEASE, role)


def test_a_credentials_secret_the_operator_may_not_read_is_reported_not_retried(operators: Installed):
    """Without `get` on secrets, an s3:// model naming a Secret ends Degraded with the field and
    the fix, and nothing is built; the operator keeps running."""
    container = operators.install({})
    rbac = kubernetes.client.RbacAuthorizationV1Api(operators.api)
    role = rbac.read_cluster_role(RELEASE)
    original = copy.deepcopy(role.rules)
    role.rules = [r for r in role.rules if "secrets" not in r.resources]
    rbac.replace_cluster_role(RELEASE, role)
    try:
        wait_for(lambda: not operators.can_i("get", "secrets", "default"), 10, "the secrets rule to be gone")
        op, _ = operators.run_operator(container)
        ns = operators.namespace("unreadable-secret")
        operators.core.create_namespaced_secret(
            ns, {"metadata": {"name": "s3"}, "stringData": {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}}
        )
        model = yaml.safe_load(EXAMPLE.read_text())
        model["spec"]["model"] = {
            "uri": "s3://models/digits.onnx",
            "s3": {"endpoint": "http://127.0.0.1:9"},
            "credentials": {"secretName": "s3"},
        }
        operators.apply(ns, model)
        status = wait_for(
            lambda: operators.status(ns, "digits").get("phase") == "Degraded" and operators.status(ns, "digits"),
            20,
            "Degraded",
        )
        degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
        assert degraded["reason"] == "ModelSourceSecretInvalid"
        assert (
            "spec.model.credentials.secretName: the operator may not read Secret 's3' (HTTP 403)" in degraded["message"]
        )
        assert "grant its ServiceAccount `get` on secrets" in degraded["message"]
        assert "Deployment" not in operators.children(ns)
        assert op.proc.poll() is None, op.log_tail()
    finally:
        role = rbac.read_cluster_role(RELEASE)
        role.rules = original
        rbac.replace_cluster_role(RELEASE, role)


def test_namespaced_install_reconciles_only_its_namespaces(operators: Installed):
    watched, other = operators.namespace("team-a"), operators.namespace("team-b")
    container = operators.install({"watch": {"allNamespaces": False, "namespaces": [watched]}})
    assert container["args"] == ["--namespace", watched]
    assert operators.can_i("create", "deployments.apps", watched)
    assert not operators.can_i("create", "deployments.apps", other)
    assert not operators.can_i("list", "modeldeployments.modeldeploy.dev", other)

    op, audit = operators.run_operator(container)
    operators.apply(other, EXAMPLE)
    operators.apply(watched, EXAMPLE)
    status = wait_reconciled(operators, audit, op, watched, "digits", "Progressing")
    assert status["observedGeneration"] == 1
    assert "Deployment" in operators.children(watched)

    # The unwatched namespace: left alone, and never even asked about.
    assert operators.children(other) == {}
    assert operators.status(other, "digits") == {}
    assert not [d for d in map(describe, audit.requests()) if d.endswith(f" in {other}")]
    assert audit.denied() == []
    assert refusals(op) == [], op.log_tail()


def _rule_id(key: tuple[str, str]) -> str:
    return f"{key[0] or 'core'}/{key[1]}"


@pytest.mark.parametrize("removed", sorted(NAMESPACED), ids=_rule_id)
def test_every_rule_is_used(operators: Installed, removed: tuple[str, str]):
    """Take any one rule away and the operator is refused something it does, as the server saw it:
    no rule is granted for nothing."""
    container = operators.install({})
    rbac = kubernetes.client.RbacAuthorizationV1Api(operators.api)
    role = rbac.read_cluster_role(RELEASE)
    original = copy.deepcopy(role.rules)
    group, resource = removed
    role.rules = [r for r in role.rules if not (group in r.api_groups and resource in r.resources)]
    assert len(role.rules) == len(original) - 1
    rbac.replace_cluster_role(RELEASE, role)
    try:
        wait_for(
            lambda: not operators.can_i(sorted(NAMESPACED[removed])[0], _can_i_name(removed), "default"),
            10,
            f"the rule for {resource} to be gone",
        )
        op, audit = operators.run_operator(container)
        ns = operators.namespace(f"without-{resource.replace('/', '-')}")
        operators.core.create_namespaced_secret(ns, {"metadata": {"name": "tok"}, "stringData": {"token": "s3"}})
        everything = yaml.safe_load(EXAMPLE.read_text())
        everything["spec"]["auth"] = {"secretName": "tok"}
        everything["spec"]["autoscaling"] = {"enabled": True, "maxReplicas": 3}
        operators.apply(ns, everything)
        denied = wait_for(
            lambda: [d for d in audit.denied() if d.split()[1] == resource], 20, f"a refused request on {resource}"
        )
        assert denied
    finally:
        role = rbac.read_cluster_role(RELEASE)
        role.rules = original
        rbac.replace_cluster_role(RELEASE, role)


def _can_i_name(key: tuple[str, str]) -> str:
    group, resource = key
    name, _, sub = resource.partition("/")
    return f"{name}.{group}/{sub}" if sub else (f"{name}.{group}" if group else name)
