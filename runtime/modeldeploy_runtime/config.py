"""Runtime settings: environment variables (how the operator configures the container), each
overridable by the CLI flag of the same name, validated in one place so that every mistake is
reported with the variable or flag to change and how.

The table of settings is the contract in ``docs/architecture.md``; keep them in step. The module is
long because it is that whole table, one declaration per setting with its parsing and its error:
split, the contract would be in several places.
"""

from __future__ import annotations

import argparse
import os
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import modeldeploy_contract as contract
import modeldeploy_contract.sources as sources_contract
from modeldeploy_contract.engines import DEFAULT_BACKEND, SERVES
from modeldeploy_contract.openvino_ir import is_ir


class ConfigError(ValueError):
    """A setting is missing or invalid. The message names the env var and flag and the fix."""


@dataclass(frozen=True)
class Setting:
    field: str
    env: str
    flag: str
    kind: str  # "str", "int", "float", "bool", or "choice"
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None


SETTINGS: tuple[Setting, ...] = (
    Setting("model_path", "MODELDEPLOY_MODEL_PATH", "--model", "str", None,
            "model file path, or an http(s)://, s3:// or gs:// URI downloaded once into the cache dir"),
    Setting("model_sha256", "MODELDEPLOY_MODEL_SHA256", "--sha256", "str", "",
            "hex sha256 the model file must have (required for http(s) URLs)"),
    Setting("model_name", "MODELDEPLOY_MODEL_NAME", "--name", "str", None, "served model name"),
    Setting("model_version", "MODELDEPLOY_MODEL_VERSION", "--version", "str", "1", "served version"),
    Setting("model_format", "MODELDEPLOY_MODEL_FORMAT", "--format", "choice", "",
            "model format (default: from the file suffix)", choices=("onnx", "tensorrt", "tflite", "openvino")),
    Setting("backend", "MODELDEPLOY_BACKEND", "--backend", "choice", "",
            "inference backend (default: from the format)", choices=("onnxruntime", "tensorrt", "openvino", "litert", "auto")),
    Setting("precision", "MODELDEPLOY_PRECISION", "--precision", "choice", "fp32",
            "precision: fp16/int8 for the TensorRT execution provider, bf16 on OpenVINO (CPUs with bf16 instructions)",
            choices=("fp32", "fp16", "int8", "bf16")),
    Setting("require_gpu", "MODELDEPLOY_REQUIRE_GPU", "--require-gpu", "bool", False,
            "refuse to start unless a GPU provider really works"),
    Setting("max_batch_size", "MODELDEPLOY_MAX_BATCH_SIZE", "--max-batch-size", "int", 8,
            "most requests merged into one batch (1 = no merging)", minimum=1),
    Setting("max_queue_delay_us", "MODELDEPLOY_MAX_QUEUE_DELAY_US", "--max-queue-delay-us", "int", 0,
            "longest wait for more requests to fill a batch (0 = greedy)", minimum=0),
    Setting("max_queue_size", "MODELDEPLOY_MAX_QUEUE_SIZE", "--max-queue-size", "int", 256,
            "requests waiting at most; past it 503 + Retry-After", minimum=1),
    Setting("queue_timeout_us", "MODELDEPLOY_QUEUE_TIMEOUT_US", "--queue-timeout-us", "int", 0,
            "longest a request may wait in the queue; past it 503 + Retry-After (0 = no limit)", minimum=0),
    Setting("latency_budget_ms", "MODELDEPLOY_LATENCY_BUDGET_MS", "--latency-budget-ms", "float", 0.0,
            "p95 latency budget checked after warm-up (0 = no gate)", minimum=0),
    Setting("latency_gate", "MODELDEPLOY_LATENCY_GATE", "--latency-gate", "choice", "enforce",
            "what an exceeded budget does", choices=("enforce", "warn")),
    Setting("warmup_requests", "MODELDEPLOY_WARMUP_REQUESTS", "--warmup-requests", "int", 10,
            "warm-up inferences before ready", minimum=0),
    Setting("golden_set_path", "MODELDEPLOY_GOLDEN_SET_PATH", "--golden-set", "str", "",
            "golden set (.npz of inputs and expected outputs) checked after the latency gate: a path or a "
            "URL, fetched as the model is (empty = no check)"),
    Setting("golden_set_sha256", "MODELDEPLOY_GOLDEN_SET_SHA256", "--golden-set-sha256", "str", "",
            "hex sha256 the golden set file must have (required for URLs)"),
    Setting("golden_set_max_abs_error", "MODELDEPLOY_GOLDEN_SET_MAX_ABS_ERROR", "--golden-set-max-abs-error",
            "float", None, "largest absolute difference from the golden outputs (empty = not checked)", minimum=0),
    Setting("golden_set_max_rel_error", "MODELDEPLOY_GOLDEN_SET_MAX_REL_ERROR", "--golden-set-max-rel-error",
            "float", None, "largest relative difference from the golden outputs (empty = not checked, or 0.01 "
            "on outputs without top-1 when no abs error is set either)", minimum=0),
    Setting("golden_set_min_top1_agreement", "MODELDEPLOY_GOLDEN_SET_MIN_TOP1_AGREEMENT",
            "--golden-set-min-top1-agreement", "float", 0.99,
            "least fraction of golden inputs whose top-1 class matches, on classification outputs", minimum=0),
    Setting("port", "MODELDEPLOY_PORT", "--port", "int", 8080, "HTTP port", minimum=0),
    Setting("metrics_port", "MODELDEPLOY_METRICS_PORT", "--metrics-port", "int", 0,
            "a second port serving only /metrics (0 = none)", minimum=0),
    Setting("grpc_port", contract.GRPC_PORT_ENV, "--grpc-port", "int", 0,
            "port of the v2 gRPC API and grpc.health.v1 (0 = off; the operator sets 8081)", minimum=0),
    Setting("host", "MODELDEPLOY_HOST", "--host", "str", "0.0.0.0", "address to listen on"),
    Setting("auth_token", "MODELDEPLOY_AUTH_TOKEN", "--auth-token", "str", "",
            "bearer token required on inference and metadata (empty = no auth)"),
    Setting("termination_log", "MODELDEPLOY_TERMINATION_LOG", "--termination-log", "str",
            "/dev/termination-log", "where the reason for a failed start is written"),
    Setting("cache_dir", "MODELDEPLOY_CACHE_DIR", "--cache-dir", "str", "/var/cache/modeldeploy",
            "downloads and TensorRT engine cache"),
    # s3:// and gs:// models (sources/); credentials are the SDKs' own AWS_* and
    # GOOGLE_APPLICATION_CREDENTIALS variables.
    Setting("s3_endpoint", sources_contract.S3_ENDPOINT_ENV, "--s3-endpoint", "str", "",
            "S3 endpoint URL for s3:// models, e.g. http://minio.minio:9000 (default: AWS)"),
    Setting("s3_region", sources_contract.S3_REGION_ENV, "--s3-region", "str", "",
            "S3 region of the bucket (default: the SDK's, AWS_REGION)"),
    Setting("s3_addressing", sources_contract.S3_ADDRESSING_ENV, "--s3-addressing", "choice", "",
            "S3 addressing style: path for most MinIO and Ceph setups (default auto)",
            choices=sources_contract.S3_ADDRESSING),
    Setting("gcs_endpoint", sources_contract.GCS_ENDPOINT_ENV, "--gcs-endpoint", "str", "",
            "Cloud Storage endpoint for gs:// models, e.g. an emulator (default: Google's)"),
    Setting("threads", "MODELDEPLOY_THREADS", "--threads", "int", 0,
            "inference threads (0 = from the cgroup CPU quota)", minimum=0),
    Setting("drain_delay_s", "MODELDEPLOY_DRAIN_DELAY_S", "--drain-delay-s", "float", 0.0,
            "seconds a SIGTERM keeps serving, readiness off, while load balancers stop sending (0 = none)",
            minimum=0),
    Setting("max_body_bytes", "MODELDEPLOY_MAX_BODY_BYTES", "--max-body-bytes", "int", 64 * 1024 * 1024,
            "largest request body; past it 413", minimum=1),
    Setting("log_level", "MODELDEPLOY_LOG_LEVEL", "--log-level", "choice", "info",
            "log level", choices=("debug", "info", "warning", "error")),
)  # fmt: skip

_BY_FIELD = {s.field: s for s in SETTINGS}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class RuntimeConfig:
    model_path: str
    model_name: str
    model_sha256: str = ""
    model_version: str = "1"
    model_format: str = "onnx"
    backend: str = "onnxruntime"
    precision: str = "fp32"
    require_gpu: bool = False
    max_batch_size: int = 8
    max_queue_delay_us: int = 0
    max_queue_size: int = 256
    queue_timeout_us: int = 0
    latency_budget_ms: float = 0.0
    latency_gate: str = "enforce"
    warmup_requests: int = 10
    golden_set_path: str = ""
    golden_set_sha256: str = ""
    golden_set_max_abs_error: float | None = None
    golden_set_max_rel_error: float | None = None
    golden_set_min_top1_agreement: float = 0.99
    port: int = 8080
    metrics_port: int = 0
    grpc_port: int = 0
    host: str = "0.0.0.0"
    auth_token: str = ""
    termination_log: str = "/dev/termination-log"
    cache_dir: str = "/var/cache/modeldeploy"
    s3_endpoint: str = ""
    s3_region: str = ""
    s3_addressing: str = ""
    gcs_endpoint: str = ""
    threads: int = 0
    drain_delay_s: float = 0.0
    max_body_bytes: int = 64 * 1024 * 1024
    log_level: str = "info"

    @property
    def is_url(self) -> bool:
        return self.model_path.startswith(("http://", "https://"))

    def source_options(self):
        from .sources import GcsOptions, S3Options, SourceOptions

        return SourceOptions(
            s3=S3Options(self.s3_endpoint, self.s3_region, self.s3_addressing), gcs=GcsOptions(self.gcs_endpoint)
        )

    def __repr__(self) -> str:  # never print the token
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        if shown["auth_token"]:
            shown["auth_token"] = "***"
        return "RuntimeConfig(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"


def _where(s: Setting) -> str:
    return f"{s.env} (flag {s.flag})"


def _parse(s: Setting, raw: str) -> Any:
    raw = raw.strip()
    if s.kind == "str":
        return raw
    if s.kind == "bool":
        low = raw.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ConfigError(f"{_where(s)} is {raw!r}; set it to true or false")
    if s.kind == "choice":
        low = raw.lower()
        if low and low not in s.choices:
            raise ConfigError(f"{_where(s)} is {raw!r}; set it to one of: {', '.join(s.choices)}")
        return low
    if not raw and s.default is None:
        return None  # an optional number left empty
    try:
        value = int(raw) if s.kind == "int" else float(raw)
    except ValueError:
        what = "a whole number" if s.kind == "int" else "a number"
        raise ConfigError(f"{_where(s)} is {raw!r}; set it to {what}") from None
    if s.minimum is not None and value < s.minimum:
        raise ConfigError(f"{_where(s)} is {raw}; set it to {s.minimum:g} or more")
    return value


class _Parser(argparse.ArgumentParser):
    """Command-line mistakes are configuration errors like any other: they reach the termination
    log (a kubelet shows it) instead of only stderr. A stray `serve` from an image whose
    ENTRYPOINT already says `serve` once made every pod crash-loop with nothing to read."""

    def error(self, message: str):
        raise ConfigError(f"command line: {message}; run `modeldeploy-runtime serve --help` for the flags")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="modeldeploy-runtime serve",
        description="Serve one model over the Open Inference Protocol v2 (REST). Every flag can also "
        "be set by the environment variable shown; the flag wins.",
    )
    for s in SETTINGS:
        if s.kind == "bool":
            parser.add_argument(
                s.flag,
                dest=s.field,
                nargs="?",
                const="true",
                default=None,
                metavar="BOOL",
                help=f"{s.help} [env {s.env}]",
            )
        else:
            optional = s.default is None and s.kind in ("int", "float")
            default = (
                "default none"
                if optional
                else "required"
                if s.default is None
                else f"default {s.default}"
                if s.default != ""
                else "default none"
            )
            parser.add_argument(
                s.flag,
                dest=s.field,
                default=None,
                metavar="|".join(s.choices) if s.choices else s.field.upper(),
                help=f"{s.help} [env {s.env}; {default}]",
            )
    return parser


def _suffix_format(path: str) -> str | None:
    tail = path.split("?", 1)[0].lower()
    if tail.endswith(".onnx"):
        return "onnx"
    if tail.endswith((".engine", ".plan")):
        return "tensorrt"
    if tail.endswith(".tflite"):
        return "tflite"
    if tail.endswith(".xml"):
        return "openvino"
    return None


def load_config(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> RuntimeConfig:
    """Settings from ``env`` (default ``os.environ``) overridden by ``argv`` flags."""
    env = os.environ if env is None else env
    args = build_parser().parse_args(list(argv or []))
    values: dict[str, Any] = {}
    for s in SETTINGS:
        raw = getattr(args, s.field)
        if raw is None:
            raw = env.get(s.env)
        values[s.field] = s.default if raw is None else _parse(s, str(raw))
    return validate(values)


def validate(values: dict[str, Any]) -> RuntimeConfig:
    for key in ("model_path", "model_name"):
        if not values.get(key):
            raise ConfigError(f"{_where(_BY_FIELD[key])} is not set; {_BY_FIELD[key].help} is required")
    name = values["model_name"]
    if "/" in name or name.strip() != name:
        raise ConfigError(f"{_where(_BY_FIELD['model_name'])} is {name!r}; use a name without '/' or spaces")
    if "/" in values["model_version"] or not values["model_version"]:
        raise ConfigError(
            f"{_where(_BY_FIELD['model_version'])} is {values['model_version']!r}; use a version without '/' such as 1"
        )
    for key in ("port", "metrics_port", "grpc_port"):
        if values[key] > 65535:
            raise ConfigError(f"{_where(_BY_FIELD[key])} is {values[key]}; use a port from 1 to 65535")
    if values["metrics_port"] and values["metrics_port"] == values["port"]:
        raise ConfigError(
            f"{_where(_BY_FIELD['metrics_port'])} equals the HTTP port; "
            "use another port, or 0 to serve /metrics on the HTTP port only"
        )
    if values["grpc_port"] and values["grpc_port"] in (values["port"], values["metrics_port"]):
        raise ConfigError(
            f"{_where(_BY_FIELD['grpc_port'])} is {values['grpc_port']}, a port the HTTP or metrics server "
            "listens on; use another port, or 0 for no gRPC"
        )
    path = values["model_path"]
    if path.startswith("file://"):  # the form ModelDeployment specs use for paths in the image
        path = values["model_path"] = urllib.parse.urlparse(path).path
    is_url = path.startswith(("http://", "https://"))
    in_store = path.startswith(tuple(f"{scheme}://" for scheme in sources_contract.SCHEMES))
    if "://" in path and not (is_url or in_store):
        raise ConfigError(
            f"{_where(_BY_FIELD['model_path'])} is {path!r}; give a file path, an http(s):// URL, "
            "s3://BUCKET/KEY or gs://BUCKET/KEY"
        )
    if in_store:
        bucket, _, key = path.partition("://")[2].partition("/")
        if not bucket or not key or key.endswith("/"):
            raise ConfigError(
                f"{_where(_BY_FIELD['model_path'])} is {path!r}; name the object as SCHEME://BUCKET/KEY, "
                "e.g. s3://models/resnet50/model.onnx"
            )
    for key in ("s3_endpoint", "gcs_endpoint"):
        endpoint = values[key]
        if endpoint and not (endpoint.startswith(("http://", "https://")) and urllib.parse.urlparse(endpoint).hostname):
            raise ConfigError(f"{_where(_BY_FIELD[key])} is {endpoint!r}; give a URL such as https://HOST:PORT")
    sha = values["model_sha256"].lower()
    if sha and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha)):
        raise ConfigError(
            f"{_where(_BY_FIELD['model_sha256'])} is {sha!r}; give 64 hex digits (the output of sha256sum)"
        )
    if is_url and not sha:
        raise ConfigError(
            f"{_where(_BY_FIELD['model_sha256'])} is required when the model is a URL; "
            "set it to the file's sha256 (sha256sum FILE)"
        )
    values["model_sha256"] = sha
    fmt = values["model_format"] or _suffix_format(path)
    if not fmt:
        raise ConfigError(
            f"{_where(_BY_FIELD['model_format'])} is not set and {path!r} has no known suffix "
            "(.onnx, .engine, .plan, .tflite, .xml); set it to onnx, tensorrt, tflite or openvino"
        )
    values["model_format"] = fmt
    backend = values["backend"] or DEFAULT_BACKEND[fmt]
    if fmt == "tensorrt" and backend != "tensorrt":
        raise ConfigError(
            f"{_where(_BY_FIELD['backend'])} is {backend!r} but the model is a TensorRT "
            "engine; set it to tensorrt or leave it unset"
        )
    if fmt == "onnx" and backend == "tensorrt":
        raise ConfigError(
            f"{_where(_BY_FIELD['backend'])} is tensorrt but the model is ONNX; build an engine "
            "with `modeldeploy optimize`, or set it to onnxruntime (which uses the TensorRT "
            "execution provider when a GPU is present)"
        )
    if fmt == "openvino" and backend not in SERVES[fmt]:
        raise ConfigError(
            f"{_where(_BY_FIELD['backend'])} is {backend!r} but the model is an OpenVINO IR (.xml + .bin), "
            "which only OpenVINO reads; set it to openvino or auto, or leave it unset (or serve the ONNX model "
            "the IR was converted from)"
        )
    if fmt == "openvino" and not is_ir(path):
        raise ConfigError(
            f"{_where(_BY_FIELD['model_path'])} is {path!r}; an OpenVINO IR is read from NAME.xml with its "
            "weights in NAME.bin beside it: give the path or URI of the .xml file"
        )
    if backend not in SERVES[fmt]:
        raise ConfigError(
            f"{_where(_BY_FIELD['backend'])} is {backend!r} but the model is {fmt}; set it to "
            f"{' or '.join(SERVES[fmt])} or leave it unset"
        )
    values["backend"] = backend
    precision = values["precision"]
    if precision == "bf16" and backend not in ("openvino", "auto"):
        raise ConfigError(
            f"{_where(_BY_FIELD['precision'])} is bf16, which only the openvino backend serves (on CPUs with "
            f"bf16 instructions); set MODELDEPLOY_BACKEND to openvino, or the precision to fp32"
        )
    engine = "openvino" if fmt == "openvino" else backend  # auto on an IR is OpenVINO
    if precision == "fp16" and engine in ("openvino", "litert"):
        raise ConfigError(
            f"{_where(_BY_FIELD['precision'])} is fp16, which the {engine} backend does not serve on the CPU; "
            "set it to fp32" + (" or bf16" if engine == "openvino" else "")
        )
    _validate_golden_set(values)
    if values["latency_budget_ms"] > 0 and values["warmup_requests"] < 1:
        raise ConfigError(
            f"{_where(_BY_FIELD['warmup_requests'])} is 0 but a latency budget is set; set it to 1 or more "
            "(the gate measures the warm-up requests), or set MODELDEPLOY_LATENCY_BUDGET_MS to 0"
        )
    return RuntimeConfig(**values)


def _validate_golden_set(values: dict[str, Any]) -> None:
    """The golden set's location is checked as far as the model's is; which sources exist is
    fetch.py's to say, since the golden set is fetched through it."""
    path = values["golden_set_path"]
    if path.startswith("file://"):
        path = values["golden_set_path"] = urllib.parse.urlparse(path).path
    sha = values["golden_set_sha256"].lower()
    if sha and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha)):
        raise ConfigError(
            f"{_where(_BY_FIELD['golden_set_sha256'])} is {sha!r}; give 64 hex digits (the output of sha256sum)"
        )
    if path.startswith(("http://", "https://")) and not sha:
        raise ConfigError(
            f"{_where(_BY_FIELD['golden_set_sha256'])} is required when the golden set is a URL; "
            "set it to the file's sha256 (sha256sum FILE)"
        )
    values["golden_set_sha256"] = sha
    top1 = values["golden_set_min_top1_agreement"]
    if top1 > 1:
        raise ConfigError(
            f"{_where(_BY_FIELD['golden_set_min_top1_agreement'])} is {top1:g}; give a fraction from 0 to 1, e.g. 0.99"
        )
