"""Settings from environment variables and flags, and the messages that name what to fix."""

from __future__ import annotations

import pytest
from modeldeploy_runtime.config import ConfigError, load_config

BASE = {"MODELDEPLOY_MODEL_PATH": "/models/resnet.onnx", "MODELDEPLOY_MODEL_NAME": "resnet"}


def test_store_uris_need_no_sha256():
    config = load_config(
        [], {**BASE, "MODELDEPLOY_MODEL_PATH": "s3://models/m.onnx", "MODELDEPLOY_S3_ADDRESSING": "path"}
    )
    assert (config.model_path, config.model_sha256, config.model_format) == ("s3://models/m.onnx", "", "onnx")
    assert config.source_options().s3.addressing == "path"


def test_defaults_match_the_contract():
    config = load_config([], BASE)
    assert (config.model_format, config.backend, config.precision) == ("onnx", "onnxruntime", "fp32")
    assert (config.max_batch_size, config.max_queue_delay_us, config.max_queue_size) == (8, 0, 256)
    assert config.queue_timeout_us == 0
    assert (config.port, config.metrics_port, config.threads) == (8080, 0, 0)
    assert config.termination_log == "/dev/termination-log"
    assert config.cache_dir == "/var/cache/modeldeploy"
    assert config.max_body_bytes == 67108864
    assert (config.latency_budget_ms, config.latency_gate, config.warmup_requests) == (0.0, "enforce", 10)
    assert config.model_version == "1" and not config.require_gpu and config.auth_token == ""


def test_flags_override_environment():
    env = {**BASE, "MODELDEPLOY_PORT": "9000", "MODELDEPLOY_MAX_BATCH_SIZE": "4"}
    config = load_config(["--port", "9100", "--require-gpu"], env)
    assert config.port == 9100
    assert config.max_batch_size == 4
    assert config.require_gpu is True


def test_queue_timeout_from_environment_or_flag():
    assert load_config([], {**BASE, "MODELDEPLOY_QUEUE_TIMEOUT_US": "5000"}).queue_timeout_us == 5000
    assert load_config(["--queue-timeout-us", "200"], BASE).queue_timeout_us == 200
    with pytest.raises(ConfigError, match="MODELDEPLOY_QUEUE_TIMEOUT_US"):
        load_config([], {**BASE, "MODELDEPLOY_QUEUE_TIMEOUT_US": "-1"})


@pytest.mark.parametrize(
    ("path", "fmt", "backend"),
    [("/m/model.onnx", "onnx", "onnxruntime"), ("/m/model.engine", "tensorrt", "tensorrt"),
     ("/m/model.plan", "tensorrt", "tensorrt"), ("/m/model.tflite", "tflite", "litert"),
     ("/m/model.xml", "openvino", "openvino"), ("s3://b/ir/model.xml", "openvino", "openvino")],
)  # fmt: skip
def test_format_and_backend_follow_the_suffix(path, fmt, backend):
    config = load_config([], {**BASE, "MODELDEPLOY_MODEL_PATH": path})
    assert (config.model_format, config.backend) == (fmt, backend)


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"MODELDEPLOY_MODEL_PATH": ""}, ["MODELDEPLOY_MODEL_PATH", "--model"]),
        ({"MODELDEPLOY_MODEL_NAME": ""}, ["MODELDEPLOY_MODEL_NAME", "--name"]),
        ({"MODELDEPLOY_MAX_BATCH_SIZE": "eight"}, ["MODELDEPLOY_MAX_BATCH_SIZE", "whole number"]),
        ({"MODELDEPLOY_MAX_BATCH_SIZE": "0"}, ["MODELDEPLOY_MAX_BATCH_SIZE", "1 or more"]),
        ({"MODELDEPLOY_PORT": "70000"}, ["MODELDEPLOY_PORT", "65535"]),
        ({"MODELDEPLOY_PRECISION": "fp8"}, ["MODELDEPLOY_PRECISION", "fp32, fp16, int8"]),
        ({"MODELDEPLOY_LATENCY_GATE": "maybe"}, ["MODELDEPLOY_LATENCY_GATE", "enforce, warn"]),
        ({"MODELDEPLOY_REQUIRE_GPU": "perhaps"}, ["MODELDEPLOY_REQUIRE_GPU", "true or false"]),
        ({"MODELDEPLOY_LATENCY_BUDGET_MS": "-1"}, ["MODELDEPLOY_LATENCY_BUDGET_MS", "0 or more"]),
        ({"MODELDEPLOY_MODEL_PATH": "https://h/m.onnx"}, ["MODELDEPLOY_MODEL_SHA256", "required"]),
        ({"MODELDEPLOY_MODEL_SHA256": "abc"}, ["MODELDEPLOY_MODEL_SHA256", "64 hex digits"]),
        ({"MODELDEPLOY_MODEL_PATH": "ftp://b/m.onnx"}, ["MODELDEPLOY_MODEL_PATH", "http(s)://", "s3://"]),
        ({"MODELDEPLOY_MODEL_PATH": "s3://b/"}, ["MODELDEPLOY_MODEL_PATH", "SCHEME://BUCKET/KEY"]),
        ({"MODELDEPLOY_MODEL_PATH": "gs://m.onnx"}, ["MODELDEPLOY_MODEL_PATH", "SCHEME://BUCKET/KEY"]),
        (
            {"MODELDEPLOY_MODEL_PATH": "s3://b/m.onnx", "MODELDEPLOY_S3_ENDPOINT": "minio:9000"},
            ["MODELDEPLOY_S3_ENDPOINT", "https://HOST:PORT"],
        ),
        (
            {"MODELDEPLOY_MODEL_PATH": "s3://b/m.onnx", "MODELDEPLOY_S3_ADDRESSING": "dns"},
            ["MODELDEPLOY_S3_ADDRESSING", "path"],
        ),
        ({"MODELDEPLOY_MODEL_PATH": "/m/model.bin"}, ["MODELDEPLOY_MODEL_FORMAT", "onnx, tensorrt, tflite or openvino"]),
        *(({"MODELDEPLOY_MODEL_PATH": "/m/model.xml", "MODELDEPLOY_BACKEND": backend},
           ["MODELDEPLOY_BACKEND", f"is {backend!r}", "OpenVINO IR", "set it to openvino or auto"])
          for backend in ("onnxruntime", "litert", "tensorrt")),
        ({"MODELDEPLOY_MODEL_FORMAT": "openvino"}, ["MODELDEPLOY_MODEL_PATH", "NAME.xml", "NAME.bin"]),
        ({"MODELDEPLOY_MODEL_PATH": "/m/model.xml", "MODELDEPLOY_BACKEND": "auto", "MODELDEPLOY_PRECISION": "fp16"},
         ["MODELDEPLOY_PRECISION", "fp32 or bf16"]),
        ({"MODELDEPLOY_PRECISION": "bf16"}, ["MODELDEPLOY_PRECISION", "MODELDEPLOY_BACKEND to openvino"]),
        ({"MODELDEPLOY_BACKEND": "openvino", "MODELDEPLOY_PRECISION": "fp16"}, ["MODELDEPLOY_PRECISION", "fp32 or bf16"]),
        ({"MODELDEPLOY_BACKEND": "litert"}, ["MODELDEPLOY_BACKEND", "onnxruntime or openvino"]),
        ({"MODELDEPLOY_MODEL_PATH": "/m/model.tflite", "MODELDEPLOY_BACKEND": "openvino"},
         ["MODELDEPLOY_BACKEND", "litert"]),
        ({"MODELDEPLOY_BACKEND": "tensorrt"}, ["MODELDEPLOY_BACKEND", "modeldeploy optimize"]),
        ({"MODELDEPLOY_MODEL_NAME": "a/b"}, ["MODELDEPLOY_MODEL_NAME", "'/'"]),
        ({"MODELDEPLOY_METRICS_PORT": "8080"}, ["MODELDEPLOY_METRICS_PORT", "another port"]),
        ({"MODELDEPLOY_LATENCY_BUDGET_MS": "50", "MODELDEPLOY_WARMUP_REQUESTS": "0"},
         ["MODELDEPLOY_WARMUP_REQUESTS", "1 or more"]),
    ],
)  # fmt: skip
def test_invalid_settings_name_the_variable_and_the_fix(env, names):
    with pytest.raises(ConfigError) as err:
        load_config([], {**BASE, **env})
    for name in names:
        assert name in str(err.value)


def test_url_with_sha256_is_accepted_and_lowercased():
    sha = "AB" * 32
    config = load_config([], {**BASE, "MODELDEPLOY_MODEL_PATH": "https://h/m.onnx", "MODELDEPLOY_MODEL_SHA256": sha})
    assert config.is_url and config.model_sha256 == sha.lower()


def test_repr_hides_the_token():
    config = load_config(["--auth-token", "s3cret"], BASE)
    assert "s3cret" not in repr(config)
    assert config.auth_token == "s3cret"


def test_file_uri_is_a_path():
    config = load_config([], {**BASE, "MODELDEPLOY_MODEL_PATH": "file:///opt/models/digits.onnx"})
    assert config.model_path == "/opt/models/digits.onnx" and not config.is_url


@pytest.mark.parametrize("backend", ["openvino", "auto"])
def test_bf16_on_openvino_or_auto_is_accepted(backend):
    config = load_config([], {**BASE, "MODELDEPLOY_BACKEND": backend, "MODELDEPLOY_PRECISION": "bf16"})
    assert (config.backend, config.precision) == (backend, "bf16")


def test_grpc_is_off_unless_a_port_is_named_and_that_port_must_be_free_of_the_others():
    assert load_config([], BASE).grpc_port == 0
    assert load_config([], {**BASE, "MODELDEPLOY_GRPC_PORT": "8081"}).grpc_port == 8081
    for env in (
        {"MODELDEPLOY_GRPC_PORT": "8080"},
        {"MODELDEPLOY_GRPC_PORT": "9091", "MODELDEPLOY_METRICS_PORT": "9091"},
    ):
        with pytest.raises(
            ConfigError, match=r"MODELDEPLOY_GRPC_PORT \(flag --grpc-port\) is \d+, a port the HTTP or metrics"
        ):
            load_config([], {**BASE, **env})
    with pytest.raises(ConfigError, match="MODELDEPLOY_GRPC_PORT"):
        load_config([], {**BASE, "MODELDEPLOY_GRPC_PORT": "70000"})
