"""The Deployment the operator renders: the runtime container as docs/architecture.md promises it,
scheduling on GPUs, the model volume, hardening, probes and the rollout strategy."""

from __future__ import annotations

import re

import modeldeploy_contract as contract
import pytest
from modeldeploy_operator import surge
from modeldeploy_operator.render import Settings, render_deployment, render_pod_template
from operator_helpers import ROOT, SETTINGS, env_of, make_target

SHA = "ab" * 32
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def deployment_of(**spec) -> dict:
    return render_deployment(make_target(**spec), SETTINGS)


def pod_spec(**spec) -> dict:
    return deployment_of(**spec)["spec"]["template"]["spec"]


def container(**spec) -> dict:
    (c,) = pod_spec(**spec)["containers"]
    return c


def env(**spec) -> dict[str, dict]:
    return env_of(deployment_of(**spec))


def env_value(name: str, **spec) -> str | None:
    var = env(**spec).get(name)
    return None if var is None else var.get("value")


# ---- GPUs and scheduling ---------------------------------------------------------------------


@pytest.mark.parametrize("gpus", [1, 2, 8])
def test_gpu_limit_is_a_string_of_the_gpu_count(gpus):
    limits = container(resources={"gpu": gpus})["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == str(gpus)


def test_gpu_limit_sits_beside_the_cpu_and_memory_limits():
    resources = container(resources={"gpu": 1, "requests": {"cpu": "2"}, "limits": {"cpu": "4", "memory": "8Gi"}})[
        "resources"
    ]
    assert resources == {"requests": {"cpu": "2"}, "limits": {"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "1"}}


def test_cpu_only_pods_ask_for_no_gpu_and_tolerate_no_gpu_taint():
    pod = pod_spec(resources={"gpu": 0, "limits": {"cpu": "1"}})
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"]["limits"]
    assert "tolerations" not in pod


def test_gpu_pods_tolerate_the_nvidia_gpu_taint_by_default():
    assert pod_spec(resources={"gpu": 1})["tolerations"] == [GPU_TOLERATION]


@pytest.mark.parametrize(
    "model, runtime, gpus",
    [
        ({"format": "onnx"}, {}, "1"),
        ({"format": "onnx"}, {"backend": "auto"}, "1"),
        ({"format": "tflite", "uri": "pvc://models/m/model.tflite"}, {}, None),
        ({"format": "onnx"}, {"backend": "litert"}, None),
        ({"format": "onnx"}, {"backend": "openvino"}, None),
        ({"format": "openvino", "uri": "pvc://models/ir/model.xml"}, {}, None),
        ({"format": "onnx"}, {"backend": "auto", "precision": "bf16"}, None),
    ],
    ids=["onnx", "auto", "tflite", "litert", "openvino", "ir", "bf16"],
)
def test_an_unset_gpu_count_is_none_for_the_cpu_engines_and_one_otherwise(model, runtime, gpus):
    pod = pod_spec(model=model, runtime=runtime)
    (c,) = pod["containers"]
    assert c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu") == gpus
    assert env_of({"spec": {"template": {"spec": pod}}})["MODELDEPLOY_REQUIRE_GPU"]["value"] == (
        "true" if gpus else "false"
    )
    assert ("tolerations" in pod) == bool(gpus)


def test_a_gpu_count_that_is_set_is_kept_whatever_the_engine():
    limits = container(model={"format": "onnx"}, runtime={"backend": "openvino"}, resources={"gpu": 1})["resources"]
    assert limits["limits"]["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in container(resources={"gpu": 0}).get("resources", {}).get("limits", {})


def test_a_user_toleration_for_the_gpu_taint_replaces_the_default():
    mine = {"key": "nvidia.com/gpu", "operator": "Equal", "value": "a100", "effect": "NoExecute"}
    assert pod_spec(resources={"gpu": 1}, scheduling={"tolerations": [mine]})["tolerations"] == [mine]


def test_other_user_tolerations_are_kept_beside_the_default():
    mine = {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}
    assert pod_spec(resources={"gpu": 1}, scheduling={"tolerations": [mine]})["tolerations"] == [mine, GPU_TOLERATION]


def test_gpu_product_becomes_a_node_selector_beside_the_users_own():
    pod = pod_spec(
        resources={"gpu": 1, "gpuProduct": "NVIDIA-A100-SXM4-80GB"},
        scheduling={"nodeSelector": {"topology.kubernetes.io/zone": "eu-west-1a"}},
    )
    assert pod["nodeSelector"] == {
        "topology.kubernetes.io/zone": "eu-west-1a",
        "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
    }


def test_no_node_selector_when_neither_product_nor_labels_are_given():
    assert "nodeSelector" not in pod_spec()


def test_affinity_priority_class_and_pull_secrets_pass_through():
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["yes"]}]}]
            }
        }
    }
    pod = pod_spec(
        scheduling={"affinity": affinity, "priorityClassName": "inference"},
        runtime={"imagePullSecrets": ["regcred", "mirror"]},
    )
    assert pod["affinity"] == affinity
    assert pod["priorityClassName"] == "inference"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}, {"name": "mirror"}]


@pytest.mark.parametrize("gpus, expected", [(0, "false"), (1, "true")])
def test_require_gpu_follows_the_gpu_count(gpus, expected):
    assert env_value("MODELDEPLOY_REQUIRE_GPU", resources={"gpu": gpus}) == expected


@pytest.mark.parametrize("gpus, require, expected", [(1, False, "false"), (0, True, "true")])
def test_require_gpu_can_be_set_apart_from_the_gpu_count(gpus, require, expected):
    """A pod holding a GPU may still serve on the CPU (requireGpu false), with its GPU limit kept."""
    spec = {"resources": {"gpu": gpus}, "runtime": {"requireGpu": require}}
    assert env_value("MODELDEPLOY_REQUIRE_GPU", **spec) == expected
    assert container(**spec)["resources"].get("limits", {}).get("nvidia.com/gpu") == (str(gpus) if gpus else None)


# ---- where the model comes from -----------------------------------------------------------------


def test_pvc_uri_mounts_the_claim_read_only_and_points_the_runtime_into_it():
    pod = pod_spec(model={"uri": "pvc://models/resnet50/model.onnx"})
    assert {"name": "models", "persistentVolumeClaim": {"claimName": "models", "readOnly": True}} in pod["volumes"]
    mounts = pod["containers"][0]["volumeMounts"]
    assert {"name": "models", "mountPath": contract.MODELS_MOUNT, "readOnly": True} in mounts
    assert env_value("MODELDEPLOY_MODEL_PATH", model={"uri": "pvc://models/resnet50/model.onnx"}) == (
        "/mnt/models/resnet50/model.onnx"
    )


@pytest.mark.parametrize(
    "uri, path",
    [
        ("file:///opt/modeldeploy/models/digits.onnx", "/opt/modeldeploy/models/digits.onnx"),
        ("/opt/models/m.plan", "/opt/models/m.plan"),
        ("https://example.com/models/m.onnx", "https://example.com/models/m.onnx"),
        ("http://models.internal:8000/m.onnx?v=3", "http://models.internal:8000/m.onnx?v=3"),
    ],
    ids=["file", "absolute-path", "https", "http"],
)
def test_non_pvc_uris_need_no_volume(uri, path):
    spec = {"model": {"uri": uri, "sha256": SHA}}
    pod = pod_spec(**spec)
    assert env_value("MODELDEPLOY_MODEL_PATH", **spec) == path
    assert "models" not in {v["name"] for v in pod["volumes"]}
    assert "models" not in {m["name"] for m in pod["containers"][0]["volumeMounts"]}


def test_sha256_is_passed_to_the_runtime_when_set():
    assert env_value("MODELDEPLOY_MODEL_SHA256", model={"uri": "https://e.com/m.onnx", "sha256": SHA}) == SHA


def test_no_sha256_env_when_unset():
    assert "MODELDEPLOY_MODEL_SHA256" not in env()


def test_served_name_defaults_to_the_resource_name():
    assert env_value("MODELDEPLOY_MODEL_NAME") == "m"
    assert env_value("MODELDEPLOY_MODEL_NAME", model={"name": "resnet"}) == "resnet"


@pytest.mark.parametrize(
    "model, runtime, backend",
    [
        ({"format": "onnx"}, {}, "onnxruntime"),
        ({"format": "tensorrt"}, {}, "tensorrt"),
        ({"format": "onnx"}, {"backend": "onnxruntime", "precision": "fp16"}, "onnxruntime"),
        ({"format": "tflite"}, {}, "litert"),
        ({"format": "onnx"}, {"backend": "openvino", "precision": "bf16"}, "openvino"),
        ({"format": "openvino", "uri": "pvc://models/ir/model.xml"}, {}, "openvino"),
    ],
    ids=["onnx-default", "engine-default", "explicit", "tflite-default", "openvino", "ir-default"],
)
def test_backend_defaults_from_the_model_format(model, runtime, backend):
    assert env_value("MODELDEPLOY_BACKEND", model=model, runtime=runtime) == backend


def test_bf16_on_openvino_reaches_the_container():
    values = {k: v.get("value") for k, v in env(runtime={"backend": "openvino", "precision": "bf16"}).items()}
    assert (values["MODELDEPLOY_BACKEND"], values["MODELDEPLOY_PRECISION"]) == ("openvino", "bf16")


def test_runtime_knobs_reach_the_container_as_documented_env():
    e = env(
        runtime={
            "precision": "fp16",
            "threads": 4,
            "batching": {"maxBatchSize": 32, "maxQueueDelayMicroseconds": 2000, "maxQueueSize": 64},
            "latencyBudget": {"p95Milliseconds": 12.5, "warmupRequests": 50, "gate": "warn"},
        }
    )
    values = {k: v.get("value") for k, v in e.items()}
    assert values["MODELDEPLOY_PRECISION"] == "fp16"
    assert values["MODELDEPLOY_THREADS"] == "4"
    assert values["MODELDEPLOY_MAX_BATCH_SIZE"] == "32"
    assert values["MODELDEPLOY_MAX_QUEUE_DELAY_US"] == "2000"
    assert values["MODELDEPLOY_MAX_QUEUE_SIZE"] == "64"
    assert values["MODELDEPLOY_LATENCY_BUDGET_MS"] == "12.5"
    assert values["MODELDEPLOY_WARMUP_REQUESTS"] == "50"
    assert values["MODELDEPLOY_LATENCY_GATE"] == "warn"
    assert values["MODELDEPLOY_PORT"] == "8080"
    assert values["MODELDEPLOY_METRICS_PORT"] == "9091"


def test_queue_timeout_is_rendered_only_when_set():
    """Unset, the env stays as it was, so that existing Deployments are not rolled for it."""
    assert "MODELDEPLOY_QUEUE_TIMEOUT_US" not in env()
    timed = env(runtime={"batching": {"queueTimeoutMicroseconds": 5000}})
    assert timed["MODELDEPLOY_QUEUE_TIMEOUT_US"]["value"] == "5000"


def test_every_rendered_runtime_env_is_a_documented_contract():
    documented = set(
        re.findall(r"^\| `(MODELDEPLOY_[A-Z0-9_]+)` \| `--", (ROOT / "docs/architecture.md").read_text(), re.M)
    )
    assert documented, "the runtime env table of docs/architecture.md was not found"
    golden = {"uri": "https://e.com/g.npz", "sha256": SHA, "maxAbsError": 0.1, "maxRelError": 0.1}
    rendered = env(
        model={"uri": "https://e.com/m.onnx", "sha256": SHA, "goldenSet": golden},
        auth={"secretName": "tok"},
        runtime={"threads": 2},
    )
    assert set(rendered) - documented == set()


# ---- env: never an empty value -----------------------------------------------------------------

SPECS_FOR_ENV = {
    "defaults": {},
    "cpu": {"resources": {"gpu": 0}},
    "no-budget": {"runtime": {"latencyBudget": {"p95Milliseconds": 0, "warmupRequests": 0}}},
    "url": {"model": {"uri": "https://e.com/m.onnx", "sha256": SHA}},
    "auth": {"auth": {"secretName": "tok"}},
    "golden-set": {"model": {"uri": "/m.onnx", "goldenSet": {"uri": "/g.npz"}}},
}


@pytest.mark.parametrize("spec", SPECS_FOR_ENV.values(), ids=SPECS_FOR_ENV.keys())
def test_no_env_var_is_rendered_with_an_empty_value(spec):
    # The API server drops `value: ""`; a rendered one would look like drift on every resync.
    assert [name for name, var in env(**spec).items() if var.get("value") == ""] == []


def test_a_user_env_var_with_an_empty_value_is_not_rendered_empty():
    e = env(runtime={"env": [{"name": "EXTRA", "value": ""}]})
    assert e.get("EXTRA", {}).get("value") != ""


def test_user_env_comes_after_the_operators_own():
    e = list(env(runtime={"env": [{"name": "OMP_NUM_THREADS", "value": "2"}]}))
    assert e[-1] == "OMP_NUM_THREADS"
    assert e.index("MODELDEPLOY_MODEL_PATH") < e.index("OMP_NUM_THREADS")


# ---- auth --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "auth, key", [({"secretName": "tok"}, "token"), ({"secretName": "tok", "secretKey": "bearer"}, "bearer")]
)
def test_auth_token_comes_from_the_secret_never_inline(auth, key):
    var = env(auth=auth)["MODELDEPLOY_AUTH_TOKEN"]
    assert var == {"name": "MODELDEPLOY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {"name": "tok", "key": key}}}


def test_no_auth_env_without_auth():
    assert "MODELDEPLOY_AUTH_TOKEN" not in env()


# ---- hardening, probes, ports, volumes -------------------------------------------------------------


def test_container_is_hardened():
    sc = container()["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}


def test_pod_is_hardened_and_never_mounts_an_api_token():
    pod = pod_spec()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False


def test_read_only_root_still_has_writable_tmp_and_cache():
    c = container()
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts["/tmp"] == "tmp"
    assert mounts[contract.CACHE_MOUNT] == "cache"
    assert env_value("MODELDEPLOY_CACHE_DIR") == contract.CACHE_MOUNT


@pytest.mark.parametrize(
    "cache, volume",
    [
        ({}, {"name": "cache", "emptyDir": {}}),
        ({"claimName": "trt"}, {"name": "cache", "persistentVolumeClaim": {"claimName": "trt"}}),
    ],
    ids=["emptyDir", "pvc"],
)
def test_cache_volume(cache, volume):
    assert volume in pod_spec(runtime={"cache": cache})["volumes"]


@pytest.mark.parametrize("probe, path", [("readinessProbe", "/v2/health/ready"), ("livenessProbe", "/v2/health/live")])
def test_probes_use_the_v2_health_endpoints_on_the_http_port(probe, path):
    c = container()
    assert c[probe]["httpGet"] == {"path": path, "port": "http"}
    assert {"name": "http", "containerPort": 8080, "protocol": "TCP"} in c["ports"]


def test_metrics_port_is_named_and_announced_to_prometheus():
    template = deployment_of()["spec"]["template"]
    assert {"name": "metrics", "containerPort": 9091, "protocol": "TCP"} in template["spec"]["containers"][0]["ports"]
    assert template["metadata"]["annotations"]["prometheus.io/port"] == "9091"


def test_termination_message_falls_back_to_logs():
    # The operator classifies failed starts by the termination message (docs/architecture.md).
    assert container()["terminationMessagePolicy"] == "FallbackToLogsOnError"


@pytest.mark.parametrize(
    "runtime, settings, image",
    [
        ({}, Settings(), Settings().runtime_image),
        ({}, Settings(runtime_image="registry.local/runtime:9"), "registry.local/runtime:9"),
        ({"image": "mine:1"}, Settings(runtime_image="registry.local/runtime:9"), "mine:1"),
    ],
    ids=["default", "operator-setting", "spec"],
)
def test_runtime_image(runtime, settings, image):
    c = render_deployment(make_target(runtime=runtime), settings)["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == image


def test_image_pull_policy_only_when_given():
    assert "imagePullPolicy" not in container()
    assert container(runtime={"imagePullPolicy": "Always"})["imagePullPolicy"] == "Always"


# ---- strategy, replicas, pause ------------------------------------------------------------------


def test_rollout_defaults_never_ask_for_an_extra_gpu():
    strategy = deployment_of()["spec"]["strategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}


def test_rollout_settings_pass_through():
    spec = deployment_of(rollout={"maxSurge": "25%", "maxUnavailable": 0, "progressDeadlineSeconds": 120})["spec"]
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": "25%", "maxUnavailable": 0}
    assert spec["progressDeadlineSeconds"] == 120


@pytest.mark.parametrize("replicas", [0, 1, 5])
def test_replicas_are_set_without_autoscaling(replicas):
    assert deployment_of(replicas=replicas)["spec"]["replicas"] == replicas


def test_replicas_are_left_to_the_hpa_when_autoscaling():
    spec = deployment_of(replicas=5, autoscaling={"enabled": True}, resources={"requests": {"cpu": "1"}})["spec"]
    assert "replicas" not in spec


def test_paused_only_when_asked():
    assert "paused" not in deployment_of()["spec"]
    assert deployment_of(rollout={"paused": True})["spec"]["paused"] is True


# ---- the pod template override (rollback) -------------------------------------------------------


def test_a_given_pod_template_is_used_verbatim():
    target = make_target(replicas=3)
    known_good = render_pod_template(make_target(runtime={"image": "runtime:good"}), SETTINGS)
    out = render_deployment(target, SETTINGS, known_good)
    assert out["spec"]["template"] == known_good
    # ...while the rest of the Deployment still follows the current spec.
    assert out["spec"]["replicas"] == 3
    from_spec = render_deployment(target, SETTINGS)

    def unplanned(meta: dict) -> dict:  # the update plan names the template it was decided for
        return {**meta, "annotations": {k: v for k, v in meta["annotations"].items() if k != surge.PLAN_ANNOTATION}}

    assert unplanned(out["metadata"]) == unplanned(from_spec["metadata"])
    assert {k: v for k, v in out["spec"].items() if k != "template"} == {
        k: v for k, v in from_spec["spec"].items() if k != "template"
    }


def test_deployment_template_is_the_rendered_pod_template():
    target = make_target()
    assert render_deployment(target, SETTINGS)["spec"]["template"] == render_pod_template(target, SETTINGS)
