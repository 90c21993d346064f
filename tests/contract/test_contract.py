"""The seam between the operator and the runtime image, read from both sides.

The rendered container is composed with each runtime image's ENTRYPOINT and CMD exactly as a
kubelet composes them, and the result must be a command line the runtime's own CLI accepts, with
the rendered environment, as the uid the image runs as. Every prefix the runtime writes to its
termination log must be one the operator classifies.
"""

from __future__ import annotations

import modeldeploy_contract as contract
import pytest
import yaml
from dockerfile import ROOT, args_of, exec_form, stages
from modeldeploy_operator import api, observe
from modeldeploy_operator.render import Settings, Target
from modeldeploy_operator.render.deployment import render_container, render_pod_template
from modeldeploy_runtime import cli, errors
from modeldeploy_runtime.config import load_config

RUNTIME_TARGETS = ("runtime", "runtime-cpu")


def kubelet_argv(entrypoint: list[str] | None, cmd: list[str] | None, container: dict) -> list[str]:
    """What a kubelet runs: `command` replaces the ENTRYPOINT and drops the CMD; `args` alone
    replaces the CMD; neither keeps both (Kubernetes' "Define a Command" rules)."""
    if "command" in container:
        return list(container["command"]) + list(container.get("args", []))
    return list(entrypoint or []) + list(container.get("args", cmd or []))


def digits_target() -> Target:
    doc = yaml.safe_load((ROOT / "examples" / "digits-cpu.yaml").read_text())
    return Target("digits", "default", "uid", api.ModelDeploymentSpec.model_validate(doc["spec"]))


@pytest.mark.parametrize("target", RUNTIME_TARGETS)
def test_the_kubelet_runs_serve_exactly_once(target):
    stage = stages()[target]
    argv = kubelet_argv(
        exec_form(stage, "ENTRYPOINT"), exec_form(stage, "CMD"), render_container(digits_target(), Settings())
    )
    assert argv == [*contract.ENTRYPOINT, *contract.SERVE_ARGS]


@pytest.mark.parametrize("target", RUNTIME_TARGETS)
def test_the_image_alone_serves_too(target):
    """`docker run IMAGE` (no args) runs the same command the operator's pods run."""
    stage = stages()[target]
    assert kubelet_argv(exec_form(stage, "ENTRYPOINT"), exec_form(stage, "CMD"), {}) == [
        *contract.ENTRYPOINT,
        *contract.SERVE_ARGS,
    ]


def test_the_runtime_cli_accepts_the_rendered_command_and_environment():
    container = render_container(digits_target(), Settings())
    argv = kubelet_argv(list(contract.ENTRYPOINT), None, container)
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    # The dispatch the console script does, then the settings the server would start with.
    assert argv[1:2] == list(contract.SERVE_ARGS)
    config = load_config(argv[2:], env=env)
    assert config.model_path == "/opt/modeldeploy/models/digits-mlp.onnx"
    assert (config.port, config.metrics_port, config.cache_dir) == (
        contract.HTTP_PORT,
        contract.METRICS_PORT,
        contract.CACHE_MOUNT,
    )
    assert config.termination_log == contract.TERMINATION_LOG


def test_a_command_line_the_runtime_refuses_is_written_where_the_kubelet_reads_it(tmp_path, monkeypatch):
    """The old image ran `modeldeploy-runtime serve serve`: argparse exited 2 with nothing in the
    termination log, and the operator could only say CrashLoopBackOff."""
    log = tmp_path / "termination-log"
    monkeypatch.setenv("MODELDEPLOY_TERMINATION_LOG", str(log))
    assert cli.main(["serve", "serve"]) == 2
    message = log.read_text()
    assert message.startswith(f"{contract.INVALID_CONFIGURATION}: command line: unrecognized arguments: serve")
    pod = observe.PodState(name="p", template_hash="h", ready=False, restarts=1, terminated_message=message)
    assert observe.pod_failure(pod, crash_loop_restarts=3).reason == "InvalidRuntimeConfig"


def test_every_env_name_the_operator_renders_is_a_runtime_setting():
    from modeldeploy_runtime.config import SETTINGS

    known = {s.env for s in SETTINGS}
    spec = api.ModelDeploymentSpec.model_validate({"model": {"uri": "/m.onnx"}, "auth": {"secretName": "t"}})
    rendered = {e["name"] for e in render_container(Target("m", "ns", "uid", spec), Settings())["env"]}
    assert rendered <= known, rendered - known


@pytest.mark.parametrize("target", RUNTIME_TARGETS)
def test_the_pod_runs_as_the_user_the_image_was_built_for(target):
    (user,) = args_of(stages()[target], "USER")
    pod = render_pod_template(digits_target(), Settings())["spec"]
    container = pod["containers"][0]
    assert user == f"{contract.UID}:{contract.GID}"
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (contract.UID, contract.GID)
    assert (container["securityContext"]["runAsUser"], container["securityContext"]["runAsGroup"]) == (
        contract.UID,
        contract.GID,
    )
    # The cache volume the pod mounts is the directory the image made writable for that user.
    runs = " ".join(args_of(stages()[target], "RUN"))
    assert f"chown {contract.UID}:{contract.GID} {contract.CACHE_MOUNT}" in runs
    assert {"name": "cache", "mountPath": contract.CACHE_MOUNT} in container["volumeMounts"]


@pytest.mark.parametrize("target", RUNTIME_TARGETS)
def test_the_image_exposes_the_ports_the_pod_names(target):
    exposed = {int(p) for p in " ".join(args_of(stages()[target], "EXPOSE")).split()}
    ports = {p["name"]: p["containerPort"] for p in render_container(digits_target(), Settings())["ports"]}
    assert ports == {"http": contract.HTTP_PORT, "metrics": contract.METRICS_PORT}
    assert set(ports.values()) <= exposed


@pytest.mark.parametrize("error", errors.StartupError.__subclasses__())
def test_each_termination_message_the_runtime_writes_is_classified_by_the_operator(error):
    message = error("details").termination_message
    pod = observe.PodState(name="p", template_hash="h", ready=False, restarts=1, terminated_message=message)
    failure = observe.pod_failure(pod, crash_loop_restarts=3)
    assert failure is not None and failure.reason == contract.TERMINATION_REASONS[error.prefix]
    assert failure.message == message


def test_every_startup_error_has_a_prefix_of_its_own():
    prefixes = [error.prefix for error in errors.StartupError.__subclasses__()]
    assert len(prefixes) == len(set(prefixes)) and set(prefixes) == set(contract.TERMINATION_REASONS)
