"""What the real-node tests do as a user would: kubectl and helm against the node's API server,
JSON out, and v2 requests to a Service's ClusterIP (through kube-proxy) from this machine."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from e2e.support import ROOT, wait_for

sys.path.insert(0, str(ROOT / "hack"))
import chart  # noqa: E402

HELM = chart.helm_binary()
EXAMPLE = ROOT / "examples" / "digits-cpu.yaml"


@dataclass
class Cluster:
    kubeconfig: Path

    def kubectl(self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120) -> str:
        proc = subprocess.run(
            ["kubectl", f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True, text=True, input=input, timeout=timeout,
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr or proc.stdout}")
        return proc.stdout

    def helm(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [str(HELM), f"--kubeconfig={self.kubeconfig}", *args], capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed: {proc.stderr or proc.stdout}")
        return proc

    def get(self, kind: str, name: str = "", namespace: str = "", selector: str = "") -> dict:
        args = ["get", kind, *([name] if name else []), "-o", "json"]
        if namespace:
            args += ["-n", namespace]
        if selector:
            args += ["-l", selector]
        return json.loads(self.kubectl(*args))

    def status(self, namespace: str, name: str) -> dict:
        return self.get("modeldeployment", name, namespace).get("status") or {}

    def pods(self, namespace: str, name: str) -> list[dict]:
        items = self.get("pods", namespace=namespace, selector=f"modeldeploy.dev/name={name}")["items"]
        return [p for p in items if not p["metadata"].get("deletionTimestamp")]

    def ready_pods(self, namespace: str, name: str, image: str | None = None) -> list[dict]:
        return [
            p
            for p in self.pods(namespace, name)
            if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
            and (image is None or p["spec"]["containers"][0]["image"] == image)
        ]

    def deployment_image(self, namespace: str, name: str) -> str:
        return self.get("deployment", name, namespace)["spec"]["template"]["spec"]["containers"][0]["image"]

    def cluster_ip(self, namespace: str, name: str) -> str:
        return self.get("service", name, namespace)["spec"]["clusterIP"]

    def events(self, namespace: str, name: str) -> list[dict]:
        items = self.get("events", namespace=namespace)["items"]
        return [
            e for e in items if e["involvedObject"]["name"] == name and e["involvedObject"]["kind"] == "ModelDeployment"
        ]

    def wait_phase(self, namespace: str, name: str, phase: str, timeout: float, generation: int | None = None) -> dict:
        def reached():
            s = self.status(namespace, name)
            if generation is not None and s.get("observedGeneration") != generation:
                return None
            return s if s.get("phase") == phase else None

        return wait_for(reached, timeout, f"{namespace}/{name} phase {phase}", interval=0.5)


def digit(i: int) -> tuple[list[float], int]:
    """The i-th handwritten digit of scikit-learn's set (raw 8x8 pixels 0..16) and its label."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.data[i].tolist(), int(digits.target[i])


def infer(host: str, pixels: list[float], port: int = 8080, conn: http.client.HTTPConnection | None = None):
    """A v2 JSON inference of the digits model; (status, body)."""
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": pixels}]})
    own = conn is None
    conn = conn or http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("POST", "/v2/models/digits/infer", body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        if own:
            conn.close()


def label_of(body: bytes) -> int:
    outputs = {o["name"]: o for o in json.loads(body)["outputs"]}
    return outputs["label"]["data"][0]
