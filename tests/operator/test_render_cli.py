"""`modeldeploy render -f CR.yaml`: prints, as YAML, exactly what the operator would apply, and
refuses a bad resource naming the field."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from modeldeploy_operator import api, naming
from modeldeploy_operator.drift import with_spec_hash
from modeldeploy_operator.render import Settings, Target, render_children
from modeldeploy_operator.render_cli import main
from modeldeploy_operator.validation import validate_spec
from operator_helpers import ROOT

# What the `modeldeploy` console script runs, started the same way wherever the scripts are installed.
MODELDEPLOY = [sys.executable, "-c", "import sys; from modeldeploy_cli import main; sys.exit(main())"]
DIGITS = ROOT / "examples" / "digits-cpu.yaml"
RESNET = ROOT / "examples" / "resnet50-gpu.yaml"


def render(tmp_path: Path, *docs: dict, args: tuple[str, ...] = ()) -> tuple[int, list[dict], str]:
    path = tmp_path / "cr.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return run(str(path), *args)


def run(*argv: str) -> tuple[int, list[dict], str]:
    """`modeldeploy render -f ARGV...` in this process: exit code, documents printed, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["-f", *argv])
    return code, [d for d in yaml.safe_load_all(out.getvalue()) if d], err.getvalue()


def resource(name: str = "m", **spec) -> dict:
    return {
        "apiVersion": "modeldeploy.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": "team-a"},
        "spec": {"model": {"uri": "/models/m.onnx"}, "resources": {"gpu": 0}, **spec},
    }


def test_the_command_prints_the_four_children_of_the_cpu_example():
    proc = subprocess.run(
        [*MODELDEPLOY, "render", "-f", str(DIGITS)], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    docs = list(yaml.safe_load_all(proc.stdout))
    assert [d["kind"] for d in docs] == ["Deployment", "Service", "NetworkPolicy", "PodDisruptionBudget"]
    assert {d["metadata"]["name"] for d in docs} == {"digits"}


def test_the_output_is_exactly_what_the_operator_applies():
    code, docs, err = run(str(DIGITS))
    assert (code, err) == (0, "")
    raw = yaml.safe_load(DIGITS.read_text())
    target = Target("digits", "default", "<uid>", api.ModelDeploymentSpec.model_validate(raw["spec"]))
    expected = [with_spec_hash(c.manifest) for c in render_children(target, Settings()) if c.manifest is not None]
    assert docs == expected
    assert all(naming.SPEC_HASH_ANNOTATION in d["metadata"]["annotations"] for d in docs)


def test_the_gpu_example_adds_the_autoscaler():
    code, docs, _ = run(str(RESNET))
    assert code == 0
    kinds = [d["kind"] for d in docs]
    assert kinds == ["Deployment", "Service", "NetworkPolicy", "HorizontalPodAutoscaler", "PodDisruptionBudget"]
    assert docs[3]["apiVersion"] == "autoscaling/v2"


def test_api_versions_and_runtime_image_can_be_chosen(tmp_path):
    code, docs, _ = render(
        tmp_path,
        resource(autoscaling={"enabled": True, "metrics": [{"name": "q", "targetAverageValue": "4"}]}),
        args=(
            "--hpa-api-version",
            "autoscaling/v2beta2",
            "--pdb-api-version",
            "policy/v1beta1",
            "--runtime-image",
            "registry.local/rt:1",
        ),
    )
    assert code == 0
    versions = {d["kind"]: d["apiVersion"] for d in docs}
    assert versions["HorizontalPodAutoscaler"] == "autoscaling/v2beta2"
    assert versions["PodDisruptionBudget"] == "policy/v1beta1"
    assert docs[0]["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.local/rt:1"


def test_every_resource_of_a_multi_document_file_is_rendered(tmp_path):
    code, docs, _ = render(tmp_path, resource("a"), resource("b", networkPolicy={"enabled": False}))
    assert code == 0
    assert [(d["metadata"]["name"], d["kind"]) for d in docs] == [
        ("a", "Deployment"),
        ("a", "Service"),
        ("a", "NetworkPolicy"),
        ("a", "PodDisruptionBudget"),
        ("b", "Deployment"),
        ("b", "Service"),
        ("b", "PodDisruptionBudget"),
    ]


def test_stdin(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(DIGITS.read_text()))
    code, docs, _ = run("-")
    assert code == 0
    assert len(docs) == 4


INVALID = {
    "schema": ({"model": {"uri": "ftp://bucket/m.onnx"}}, "spec.model.uri"),
    "unknown-field": ({"replica": 3}, "spec.replica"),
    "semantic": ({"model": {"uri": "https://e.com/m.onnx"}}, "spec.model.sha256: is required for an http(s) model URI"),
    "semantic-gpu": ({"runtime": {"precision": "fp16"}}, "spec.runtime.precision"),
}


@pytest.mark.parametrize("spec, message", INVALID.values(), ids=INVALID.keys())
def test_an_invalid_resource_exits_non_zero_naming_the_field(tmp_path, spec, message):
    code, docs, err = render(tmp_path, resource("bad", **spec))
    assert code == 1
    assert docs == []
    assert err.startswith("modeldeploy render: bad: ")
    assert message in err


def test_the_cli_reports_what_the_operator_would_report(tmp_path):
    raw = resource("bad", model={"uri": "https://e.com/m.onnx"}, runtime={"precision": "int8"})
    _, _, err = render(tmp_path, raw)
    problems = validate_spec(api.ModelDeploymentSpec.model_validate(raw["spec"]))
    assert [line.removeprefix("modeldeploy render: bad: ") for line in err.splitlines()] == [str(p) for p in problems]


def test_a_wrong_kind_is_refused(tmp_path):
    code, _, err = render(tmp_path, {**resource(), "kind": "Deployment"})
    assert code == 1
    assert "kind is 'Deployment', expected ModelDeployment" in err


def test_a_missing_file_exits_2(tmp_path):
    code, docs, err = run(str(tmp_path / "nope.yaml"))
    assert (code, docs) == (2, [])
    assert "cannot read" in err and "nope.yaml" in err


def test_a_file_that_is_not_yaml_exits_2(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("spec: [unclosed\n")
    code, _, err = run(str(path))
    assert code == 2
    assert "cannot read" in err
