"""Paths, values and small helpers shared by the chart tests (conftest.py holds the fixtures)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "modeldeploy-operator"
RELEASE = "mdep"
NAMESPACE = "mdep-system"


@dataclass
class HelmResult:
    returncode: int
    stdout: str
    stderr: str

    def docs(self) -> list[dict]:
        assert self.returncode == 0, self.stderr
        return [d for d in yaml.safe_load_all(self.stdout) if d]


def run_helm(helm: Path, *args: str, values: dict | None = None, tmp_path: Path | None = None) -> HelmResult:
    """Runs helm with `values` written to a file, as a user's `-f my-values.yaml` would be."""
    cmd = [str(helm), *args]
    if values is not None:
        assert tmp_path is not None
        vf = tmp_path / f"values-{len(list(tmp_path.glob('values-*.yaml')))}.yaml"
        vf.write_text(yaml.safe_dump(values))
        cmd += ["-f", str(vf)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    return HelmResult(proc.returncode, proc.stdout, proc.stderr)


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str) -> dict:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


# Every value set to something other than its default, so each branch of each template renders.
NON_DEFAULT_VALUES = {
    "fullnameOverride": "md",
    "image": {
        "repository": "registry.example.com:5000/ml/modeldeploy-operator",
        "tag": "0.1.0-rc1",
        "digest": "sha256:" + "ab" * 32,
        "pullPolicy": "Always",
    },
    "imagePullSecrets": [{"name": "regcred"}],
    "runtime": {"image": "registry.example.com:5000/ml/modeldeploy-runtime:0.1.0"},
    "watch": {"allNamespaces": False, "namespaces": ["team-a", "team-b"]},
    "logLevel": "debug",
    "resyncSeconds": 15,
    "crds": {"install": True, "keep": False},
    "serviceAccount": {
        "create": True,
        "name": "modeldeploy",
        "annotations": {"iam.gke.io/gcp-service-account": "md@p.iam.gserviceaccount.com"},
    },
    "rbac": {"create": True},
    "podAnnotations": {"example.com/team": "ml-platform"},
    "podLabels": {"team": "ml-platform"},
    "resources": {"requests": {"cpu": "200m", "memory": "256Mi"}, "limits": {"cpu": 1, "memory": "1Gi"}},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "system", "effect": "NoSchedule"}],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "node-role", "operator": "In", "values": ["system"]}]}
                ]
            }
        }
    },
    "priorityClassName": "system-cluster-critical",
    "health": {"port": 18081},
    "metrics": {
        "port": 19090,
        "service": {"type": "LoadBalancer", "annotations": {"prometheus.io/scrape": "true"}},
        "serviceMonitor": {
            "enabled": True,
            "interval": "15s",
            "scrapeTimeout": "10s",
            "labels": {"release": "kube-prometheus-stack"},
        },
    },
    "grafana": {
        "dashboard": {
            "enabled": True,
            "namespace": "monitoring",
            "labels": {"team": "ml-platform"},
            "annotations": {"grafana_folder": "ML"},
        }
    },
    "tests": {"image": "registry.example.com:5000/python:3.11"},
}
