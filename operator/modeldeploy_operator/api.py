"""The ModelDeployment API: spec and status as pydantic models.

These models are the source of truth: the CRD in `crds/` is generated from them (`crd.py`), the
descriptions become `kubectl explain`, and the operator parses every resource through them. It is
one module, long as the API is, so that it reads top to bottom as the CRD does.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.alias_generators import to_camel

GROUP = "modeldeploy.dev"
VERSION = "v1alpha1"
KIND = "ModelDeployment"
PLURAL = "modeldeployments"
SINGULAR = "modeldeployment"
SHORT_NAMES = ["mdep"]

# Free-form Kubernetes objects (affinity, tolerations, env, HPA behavior) are passed through as
# written; the API server validates them when the child is applied.
PRESERVE = {"x-kubernetes-preserve-unknown-fields": True, "type": "object"}
INT_OR_STRING = {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]}
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
# The grammar of resource.Quantity; the sign and the range are the operator's to check.
QUANTITY = (
    r"^[+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
INT32_MAX = 2**31 - 1  # Kubernetes stores these counts as int32
Quantity = Annotated[str, StringConstraints(pattern=QUANTITY)]


class Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class StrEnum(str, enum.Enum):
    def __str__(self) -> str:
        return self.value


class ModelFormat(StrEnum):
    ONNX = "onnx"
    TENSORRT = "tensorrt"
    TFLITE = "tflite"
    OPENVINO = "openvino"


class Backend(StrEnum):
    ONNXRUNTIME = "onnxruntime"
    TENSORRT = "tensorrt"
    OPENVINO = "openvino"
    LITERT = "litert"
    AUTO = "auto"


# Engines that run on the CPU alone: a pod serving with one of them gets no GPU unless asked.
CPU_BACKENDS = (Backend.OPENVINO, Backend.LITERT)


class Precision(StrEnum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"
    BF16 = "bf16"


class LatencyGate(StrEnum):
    ENFORCE = "enforce"
    WARN = "warn"


# Bucket names as the stores allow them (S3: 3-63 lowercase letters, digits, '.', '-'; GCS also '_').
S3_BUCKET = r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"
GCS_BUCKET = r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]"
ENDPOINT = r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[^\s]*)?$"


class S3Addressing(StrEnum):
    AUTO = "auto"
    PATH = "path"
    VIRTUAL = "virtual"


class S3Settings(Model):
    endpoint: str | None = Field(
        default=None,
        description=(
            "Endpoint URL of an S3-compatible store, e.g. `http://minio.minio.svc:9000`. Unset: AWS S3 of `region`."
        ),
        pattern=ENDPOINT,
        max_length=2048,
    )
    region: str | None = Field(
        default=None,
        description="Region of the bucket, e.g. `eu-west-1`. MinIO and Ceph accept any (often `us-east-1`).",
        pattern=r"^[a-z0-9][a-z0-9-]{0,30}[a-z0-9]$",
    )
    addressing: S3Addressing | None = Field(
        default=None,
        description=(
            "`path` (http://ENDPOINT/BUCKET/KEY, what most MinIO and Ceph setups need), `virtual` "
            "(http://BUCKET.ENDPOINT/KEY) or `auto` (the SDK's choice, the default)."
        ),
    )


class GcsSettings(Model):
    endpoint: str | None = Field(
        default=None,
        description="Endpoint URL of the Cloud Storage JSON API, e.g. an emulator. Unset: Google's.",
        pattern=ENDPOINT,
        max_length=2048,
    )


class SourceCredentials(Model):
    secret_name: str = Field(
        description=(
            "Secret in the resource's namespace. For s3://: keys `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` "
            "(and `AWS_SESSION_TOKEN` for temporary credentials). For gs://: key `key.json`, a service "
            "account's JSON key."
        ),
        pattern=DNS_SUBDOMAIN,
        max_length=253,
    )


class GoldenSet(Model):
    uri: str = Field(
        description=(
            "Where the golden set is: an `.npz` of inputs (`input:<name>`) and the outputs a trusted model gave "
            "for them (`output:<name>`), written by `modeldeploy validate MODEL --write-golden PATH`. The same "
            "forms as `spec.model.uri`: `pvc://CLAIM/path`, `file:///path` or `/path` in the image, `https://...`, "
            "`s3://BUCKET/KEY` or `gs://BUCKET/KEY` (read with the model's store settings and credentials)."
        ),
        pattern=(
            r"^(pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?/.+|file:///.+|/.+|https?://.+"
            rf"|s3://{S3_BUCKET}/[^/].*[^/]|s3://{S3_BUCKET}/[^/]|gs://{GCS_BUCKET}/[^/].*[^/]|gs://{GCS_BUCKET}/[^/])$"
        ),
        max_length=2048,
    )
    sha256: str | None = Field(
        default=None,
        description="Hex SHA-256 of the file. Required for http(s) URIs; checked before use.",
        pattern=r"^[a-f0-9]{64}$",
    )
    max_abs_error: float | None = Field(
        default=None,
        ge=0,
        description="Largest absolute difference allowed between an output and its golden value. Unset: not checked.",
    )
    max_rel_error: float | None = Field(
        default=None,
        ge=0,
        description=(
            "Largest relative difference allowed (where the golden value is at least 0.1% of the output's largest). "
            "Unset: not checked, except on outputs without top-1 when maxAbsError is unset too, which get 0.01."
        ),
    )
    min_top1_agreement: float = Field(
        default=0.99,
        ge=0,
        le=1,
        description=(
            "Least fraction of golden inputs whose top-1 class (argmax over the last axis of float scores "
            "[N, classes], or equal integer labels) matches the golden one."
        ),
    )


class ModelSource(Model):
    uri: str = Field(
        description=(
            "Where the model file is. `pvc://CLAIM/path/in/claim` mounts a PersistentVolumeClaim read-only; "
            "`file:///path` or `/path` is a path inside the runtime image; `https://...` (or `http://`) is "
            "downloaded once per pod and checked against `sha256`. `s3://BUCKET/KEY` (AWS S3, MinIO, Ceph: see `s3`) "
            "and `gs://BUCKET/KEY` (Google Cloud Storage) are downloaded once per pod into the cache volume, "
            "resumably, with the credentials of `credentials` or the pod's identity (`serviceAccountName`)."
        ),
        pattern=(
            r"^(pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?/.+|file:///.+|/.+|https?://.+"
            rf"|s3://{S3_BUCKET}/[^/].*[^/]|s3://{S3_BUCKET}/[^/]|gs://{GCS_BUCKET}/[^/].*[^/]|gs://{GCS_BUCKET}/[^/])$"
        ),
        max_length=2048,
    )
    sha256: str | None = Field(
        default=None,
        description=(
            "Hex SHA-256 of the model file. Required for http(s) URIs; checked before serving. Optional for s3:// "
            "and gs://, whose downloads are also checked against the store's own checksum when it keeps one "
            "(S3 ChecksumSHA256, GCS md5/crc32c). For an OpenVINO IR it is the .xml file's; the .bin is checked "
            "against the store's checksum only."
        ),
        pattern=r"^[a-f0-9]{64}$",
    )
    format: ModelFormat = Field(
        default=ModelFormat.ONNX,
        description=(
            "`onnx` for an ONNX model, `tensorrt` for a serialized TensorRT engine (GPU only), "
            "`tflite` for a LiteRT (TensorFlow Lite) model, `openvino` for an OpenVINO IR: the URI names "
            "NAME.xml and NAME.bin (the weights) lies beside it; served by backend openvino (or auto)."
        ),
    )
    name: str | None = Field(
        default=None,
        description="Name the model is served under in the v2 API (`/v2/models/NAME`). Defaults to the resource name.",
        pattern=r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$",
    )
    version: str = Field(default="1", description="Version served in the v2 API.", pattern=r"^[a-zA-Z0-9_.-]{1,32}$")
    s3: S3Settings | None = Field(default=None, description="Where and how to reach the store of an s3:// URI.")
    gcs: GcsSettings | None = Field(default=None, description="Where to reach the store of a gs:// URI.")
    credentials: SourceCredentials | None = Field(
        default=None,
        description=(
            "Credentials for an s3:// or gs:// URI, from a Secret. Unset: the pod's identity (IRSA, GKE workload "
            "identity) through spec.serviceAccountName, or anonymous access to a public bucket."
        ),
    )
    golden_set: GoldenSet | None = Field(
        default=None,
        description=(
            "Inputs with expected outputs the model must reproduce, within the tolerances, after warm-up and the "
            "latency gate before a pod becomes ready. A pod that disagrees exits with `golden set mismatch`, which "
            "the operator treats as a failed rollout."
        ),
    )


class Batching(Model):
    max_batch_size: int = Field(
        default=8,
        ge=1,
        le=1024,
        description="Most requests merged into one batch (Triton's max_batch_size). 1 disables batching.",
    )
    max_queue_delay_microseconds: int = Field(
        default=0,
        ge=0,
        le=1_000_000,
        description=(
            "Longest time a request waits for others to join its batch. 0 batches greedily: whatever is "
            "queued when the model is free, so a lone request never waits."
        ),
    )
    max_queue_size: int = Field(
        default=256,
        ge=1,
        le=100_000,
        description="Requests queued per pod before the server answers 503 with Retry-After.",
    )
    queue_timeout_microseconds: int = Field(
        default=0,
        ge=0,
        le=60_000_000,
        description=(
            "Longest time a request may wait in the queue before its batch runs; past it the server "
            "answers 503 with Retry-After (Triton's default_queue_policy with REJECT). 0 means no limit."
        ),
    )


class LatencyBudget(Model):
    p95_milliseconds: float = Field(
        default=0,
        ge=0,
        description=(
            "p95 inference latency the model must meet after warm-up before the pod becomes ready. "
            "0 disables the gate. A pod that misses it exits with `latency budget exceeded`, which the "
            "operator treats as a failed rollout."
        ),
    )
    warmup_requests: int = Field(default=10, ge=0, le=10_000, description="Warm-up inferences run before ready.")
    gate: LatencyGate = Field(
        default=LatencyGate.ENFORCE,
        description="`enforce`: a missed budget stops the pod. `warn`: log it and serve anyway.",
    )


class CacheVolume(Model):
    claim_name: str | None = Field(
        default=None,
        description=(
            "PersistentVolumeClaim for the download and TensorRT engine cache, so restarts do not download "
            "or rebuild. An emptyDir when unset."
        ),
        pattern=DNS_SUBDOMAIN,
    )


class GrpcApi(Model):
    enabled: bool = Field(
        default=True,
        description=(
            "Serve the Open Inference Protocol v2 gRPC API (`inference.GRPCInferenceService`, as "
            "`tritonclient.grpc` calls it) and `grpc.health.v1` on port 8081 next to REST: a `grpc` port on "
            "the pod and the Service (`appProtocol: grpc`), admitted by the NetworkPolicy like the REST port. "
            "false: REST only."
        ),
    )


class Runtime(Model):
    image: str | None = Field(
        default=None,
        description="Runtime image. Defaults to the operator's configured runtime image.",
        min_length=1,
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        default=None, description="Always, IfNotPresent or Never."
    )
    image_pull_secrets: list[str] = Field(default_factory=list, description="Names of Secrets used to pull the image.")
    backend: Backend | None = Field(
        default=None,
        description=(
            "`onnxruntime`, `tensorrt`, `openvino` (ONNX models and OpenVINO IR on the CPU; needed for bf16), `litert` "
            "(tflite models) or `auto` (an ONNX model on a CPU-only pod: ONNX Runtime and OpenVINO are timed at "
            "warm-up and the faster one that agrees with ONNX Runtime serves; the choice is in model metadata). "
            "Defaults to `onnxruntime` for ONNX models, `tensorrt` for engines, `litert` for tflite, `openvino` "
            "for OpenVINO IR."
        ),
    )
    precision: Precision = Field(
        default=Precision.FP32,
        description=(
            "fp32, fp16 or int8: precision of the TensorRT execution provider when an ONNX model runs on a GPU. "
            "Engines carry their own precision. For INT8 on CPU, quantize the model with `modeldeploy optimize`. "
            "bf16: backend openvino on a CPU with AVX512_BF16 or AMX_BF16 instructions; refused at startup elsewhere."
        ),
    )
    batching: Batching = Field(default_factory=Batching, description="Dynamic batching.")
    latency_budget: LatencyBudget = Field(
        default_factory=LatencyBudget, description="Warm-up and the readiness latency gate."
    )
    threads: int = Field(
        default=0, ge=0, le=256, description="Inference threads per pod; 0 sizes them from the CPU limit."
    )
    cache: CacheVolume = Field(default_factory=CacheVolume, description="Cache volume for downloads and engines.")
    grpc: GrpcApi = Field(default_factory=GrpcApi, description="The v2 gRPC API on port 8081.")
    require_gpu: bool | None = Field(
        default=None,
        description=(
            "Refuse to start unless a GPU execution provider really works. Defaults to true when "
            "`resources.gpu` is above 0; false lets a pod that holds a GPU serve on the CPU instead."
        ),
    )
    env: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Extra environment variables for the runtime container (Kubernetes EnvVar objects).",
        json_schema_extra={"items": PRESERVE},
    )


class Resources(Model):
    gpu: int | None = Field(
        default=None,
        ge=0,
        le=16,
        description=(
            "NVIDIA GPUs per pod (`nvidia.com/gpu`). 0 serves on CPU. Unset: 0 for the CPU engines (backend "
            "`openvino` or `litert`, a `tflite` or `openvino` model, precision `bf16`), else 1."
        ),
    )
    gpu_product: str | None = Field(
        default=None,
        description=(
            "GPU model to schedule on, as NVIDIA GPU Feature Discovery labels nodes (`nvidia.com/gpu.product`), "
            "e.g. `NVIDIA-A100-SXM4-80GB`. See `kubectl get nodes -L nvidia.com/gpu.product`."
        ),
        max_length=63,
        pattern=LABEL_VALUE,
    )
    requests: dict[str, Quantity] = Field(
        default_factory=dict, description="CPU and memory requests, e.g. `{cpu: '2', memory: 4Gi}`."
    )
    limits: dict[str, Quantity] = Field(
        default_factory=dict, description="CPU and memory limits. The GPU limit comes from `gpu`."
    )


class Scheduling(Model):
    node_selector: dict[str, str] = Field(default_factory=dict, description="Extra node selector labels.")
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list,
        description=(
            "Pod tolerations. When GPUs are requested, a toleration for the `nvidia.com/gpu` taint is added "
            "unless one is given here."
        ),
        json_schema_extra={"items": PRESERVE},
    )
    affinity: dict[str, Any] | None = Field(
        default=None, description="Pod affinity (Kubernetes Affinity).", json_schema_extra=PRESERVE
    )
    priority_class_name: str | None = Field(default=None, description="PriorityClass of the pods.")


class PodsMetric(Model):
    name: str = Field(
        description="Per-pod metric name served by a metrics adapter, e.g. `modeldeploy_inflight_requests`."
    )
    target_average_value: str = Field(
        description="Target average per pod, as a quantity, e.g. `4` or `500m`.", pattern=QUANTITY
    )


class Autoscaling(Model):
    enabled: bool = Field(
        default=False,
        description="Create a HorizontalPodAutoscaler; `replicas` is then ignored, and switching this on keeps the running replica count for the HPA to start from.",
    )
    min_replicas: int = Field(default=1, ge=1, le=INT32_MAX, description="Fewest replicas.")
    max_replicas: int = Field(default=4, ge=1, le=INT32_MAX, description="Most replicas.")
    target_cpu_utilization_percentage: int | None = Field(
        default=None, ge=1, le=1000, description="Average CPU utilisation to hold; needs `resources.requests.cpu`."
    )
    metrics: list[PodsMetric] = Field(default_factory=list, description="Custom per-pod metrics to scale on.")
    behavior: dict[str, Any] | None = Field(
        default=None,
        description="HPA scaling behavior (scaleUp / scaleDown policies), passed through.",
        json_schema_extra=PRESERVE,
    )


class NetworkPolicySpec(Model):
    enabled: bool = Field(
        default=True, description="Create a NetworkPolicy that denies all ingress but the sources below."
    )
    allow_from: list[dict[str, Any]] | None = Field(
        default=None,
        description=(
            "Who may call the model: NetworkPolicyPeer objects (podSelector, namespaceSelector, ipBlock). "
            "Unset: pods of the same namespace. Empty list: nobody."
        ),
        json_schema_extra={"items": PRESERVE},
    )
    allow_metrics_from: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Who may scrape the metrics port (NetworkPolicyPeer objects), e.g. the Prometheus namespace.",
        json_schema_extra={"items": PRESERVE},
    )


class Auth(Model):
    secret_name: str = Field(
        description="Secret holding the bearer token clients must send.", pattern=DNS_SUBDOMAIN, max_length=253
    )
    secret_key: str = Field(
        default="token", description="Key of the token in the Secret.", pattern=r"^[-._a-zA-Z0-9]+$"
    )


class Analysis(Model):
    """The watch on live traffic after a rollout (see README, "A watch on live traffic")."""

    enabled: bool = Field(
        default=True,
        description=(
            "Watch each updated revision's own /metrics for a bake window once it is fully available, and roll "
            "back when its error ratio or p95 latency regresses. It becomes the last known good only if it passes."
        ),
    )
    bake_seconds: int = Field(
        default=300,
        ge=5,
        le=86_400,
        description="Length of the bake window, from the moment all new pods are available.",
    )
    interval_seconds: int = Field(
        default=30, ge=1, le=3_600, description="Seconds between two scrapes of every new pod; each interval is judged."
    )
    consecutive_intervals: int = Field(
        default=3, ge=1, le=100, description="Judged intervals in a row over a limit that roll the revision back."
    )
    max_error_ratio: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description=(
            "Failed over all inference requests in an interval may exceed the last known good revision's ratio by "
            "at most this much (by this much over 0 when no baseline was recorded)."
        ),
    )
    max_p95_milliseconds: float = Field(
        default=0, ge=0, description="Absolute limit on an interval's p95 request latency. 0: none."
    )
    max_p95_ratio: float = Field(
        default=2.0,
        ge=0,
        le=1_000,
        description="Limit on an interval's p95 as a multiple of the last known good revision's p95. 0: no comparison.",
    )
    min_requests: int = Field(
        default=20,
        ge=1,
        le=INT32_MAX,
        description="Requests an interval needs to be judged; fewer is reported as too little traffic, never a pass.",
    )

    @model_validator(mode="after")
    def _fits(self) -> Analysis:
        if self.interval_seconds * self.consecutive_intervals > self.bake_seconds:
            raise ValueError(
                f"intervalSeconds x consecutiveIntervals ({self.interval_seconds} x {self.consecutive_intervals}) "
                f"exceeds bakeSeconds ({self.bake_seconds}): lengthen bakeSeconds or shorten the interval"
            )
        return self


class Rollout(Model):
    max_surge: int | str = Field(
        default="auto",
        description=(
            "Extra pods during a rollout. `auto` (default): 1 when the cluster has room for one more pod "
            "when the update is applied (a node the pods may run on with a free GPU of the kind they request; "
            "always for pods without GPUs), else 0, so that the update never waits for a GPU that is not "
            "there. `status.updateCost` says which it will be. A number or percentage is used as written."
        ),
        json_schema_extra=INT_OR_STRING,
    )
    max_unavailable: int | str | None = Field(
        default=None,
        description=(
            "Pods that may be unavailable during a rollout. Unset: 0 when a single replica is updated with "
            "a surge pod (the old pod serves until the new one is ready), else 1."
        ),
        json_schema_extra=INT_OR_STRING,
    )
    progress_deadline_seconds: int = Field(
        default=600,
        ge=1,
        le=INT32_MAX,
        description="Seconds a rollout may make no progress before it counts as failed.",
    )
    auto_rollback: bool = Field(
        default=True, description="Restore the last known good revision automatically when a rollout fails."
    )
    crash_loop_restarts: int = Field(
        default=3,
        ge=1,
        le=INT32_MAX,
        description="Restarts of a new pod in CrashLoopBackOff after which the rollout counts as failed.",
    )
    paused: bool = Field(
        default=False, description="Pause the rollout (no new pods are rolled out, no rollback decided)."
    )
    analysis: Analysis = Field(
        default_factory=Analysis, description="Post-rollout watch on the new pods' error ratio and p95 latency."
    )


class DisruptionBudget(Model):
    enabled: bool = Field(default=True, description="Create a PodDisruptionBudget.")
    max_unavailable: int | str | None = Field(
        default=None, description="Pods that may be evicted at once. Defaults to 1.", json_schema_extra=INT_OR_STRING
    )
    min_available: int | str | None = Field(
        default=None, description="Pods that must stay (instead of maxUnavailable).", json_schema_extra=INT_OR_STRING
    )


class ModelDeploymentSpec(Model):
    model: ModelSource = Field(description="The model to serve.")
    runtime: Runtime = Field(default_factory=Runtime, description="The serving runtime.")
    replicas: int = Field(default=1, ge=0, le=INT32_MAX, description="Pods when autoscaling is off.")
    resources: Resources = Field(default_factory=Resources, description="GPUs, CPU and memory per pod.")
    scheduling: Scheduling = Field(default_factory=Scheduling, description="Where pods may run.")
    autoscaling: Autoscaling = Field(default_factory=Autoscaling, description="Horizontal autoscaling.")
    network_policy: NetworkPolicySpec = Field(default_factory=NetworkPolicySpec, description="Ingress restrictions.")
    auth: Auth | None = Field(default=None, description="Bearer-token authentication of inference requests.")
    rollout: Rollout = Field(default_factory=Rollout, description="Rollout strategy and automatic rollback.")
    pod_disruption_budget: DisruptionBudget = Field(
        default_factory=DisruptionBudget, description="Voluntary disruptions."
    )
    service_account_name: str | None = Field(
        default=None,
        description=(
            "ServiceAccount the runtime pods run as: how they get a cloud identity for an s3:// or gs:// model "
            "without a Secret (IRSA's `eks.amazonaws.com/role-arn`, GKE's `iam.gke.io/gcp-service-account` "
            "annotation on it). Unset: the namespace's default."
        ),
        pattern=DNS_SUBDOMAIN,
        max_length=253,
    )

    @model_validator(mode="after")
    def _default_gpus(self) -> ModelDeploymentSpec:
        """An unset GPU count is 0 where the engine serving the model runs on the CPU alone, so a
        LiteRT or OpenVINO pod neither holds a GPU it cannot use nor waits for one; else 1."""
        if self.resources.gpu is None:
            cpu_engine = self.backend in CPU_BACKENDS or self.runtime.precision == Precision.BF16
            self.resources.gpu = 0 if cpu_engine else 1
        return self

    @property
    def backend(self) -> Backend:
        if self.runtime.backend is not None:
            return self.runtime.backend
        if self.model.format == ModelFormat.TFLITE:
            return Backend.LITERT
        if self.model.format == ModelFormat.OPENVINO:
            return Backend.OPENVINO
        return Backend.TENSORRT if self.model.format == ModelFormat.TENSORRT else Backend.ONNXRUNTIME


# ---- status -------------------------------------------------------------------------------------


class Phase(StrEnum):
    PENDING = "Pending"
    PROGRESSING = "Progressing"
    READY = "Ready"
    DEGRADED = "Degraded"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"


class Condition(Model):
    type: str = Field(description="Ready, Progressing, Degraded or RolledBack.")
    status: str = Field(description="True, False or Unknown.", json_schema_extra={"enum": ["True", "False", "Unknown"]})
    reason: str = Field(default="", description="CamelCase reason.")
    message: str = Field(default="", description="What happened and, for failures, how to fix it.")
    last_transition_time: str | None = Field(default=None, description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(default=None, description="Generation this condition was computed for.")


class KnownGood(Model):
    revision: int = Field(description="Deployment revision that rolled out successfully.")
    generation: int = Field(description="Generation of this resource that produced it.")
    template_hash: str = Field(description="Hash of the pod template as the operator rendered it.")
    pod_template_hash: str = Field(
        description=(
            "The `pod-template-hash` of its ReplicaSet. A rollback restores that ReplicaSet's pod template, "
            "so it survives operator restarts without keeping a copy here."
        )
    )
    time: str = Field(description="When it became known good.")


class RollbackRecord(Model):
    failed_generation: int = Field(description="Generation whose rollout failed.")
    failed_revision: int | None = Field(default=None, description="Deployment revision that failed.")
    restored_revision: int | None = Field(default=None, description="Revision restored (the last known good one).")
    reason: str = Field(description="Why the rollout failed, e.g. CrashLoopBackOff, LatencyBudgetExceeded.")
    message: str = Field(default="", description="Details, e.g. the runtime's termination message.")
    pod: str | None = Field(default=None, description="The failing pod.")
    time: str = Field(description="When the failure was detected.")
    rolled_back: bool = Field(description="Whether the last known good template was restored.")
    retry_token: str | None = Field(
        default=None, description="Value of the modeldeploy.dev/retry annotation when this was decided."
    )


class AnalysisPhase(StrEnum):
    BAKING = "Baking"
    PASSED = "Passed"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"


class Baseline(Model):
    revision: int | None = Field(default=None, description="The known good revision these figures are of.")
    requests: int = Field(description="Requests the figures are computed from.")
    error_ratio: float = Field(description="Failed over all inference requests.")
    p95_milliseconds: float | None = Field(default=None, description="p95 request latency.")


class AnalysisStatus(Model):
    phase: AnalysisPhase = Field(description="Baking, Passed, Failed or Inconclusive (too little traffic to judge).")
    revision: int | None = Field(default=None, description="Deployment revision being (or last) analysed.")
    pod_template_hash: str = Field(description="The `pod-template-hash` of the analysed ReplicaSet.")
    start_time: str = Field(description="When the bake window began (all new pods available).")
    message: str = Field(default="", description="What the analysis found, with the figures.")
    baseline: Baseline | None = Field(
        default=None,
        description="The known good revision's figures it is compared with, as recorded before the update.",
    )


class Hardware(Model):
    """What the pods of the current revision report they really run on (their modeldeploy_runtime_info)."""

    pod_template_hash: str = Field(description="The `pod-template-hash` of the pods these facts are from.")
    backend: str | None = Field(default=None, description="Engine serving: onnxruntime, openvino, tensorrt, litert.")
    provider: str | None = Field(
        default=None, description="Execution provider really in use, e.g. CUDAExecutionProvider."
    )
    precision: str | None = Field(default=None, description="Precision served: fp32, fp16, int8, bf16.")
    gpu_product: str | None = Field(default=None, description="GPU product name as NVML reports it; none on CPU.")
    warmup_p95_milliseconds: float | None = Field(
        default=None, description="Highest warm-up p95 (batch 1) among the pods, as the latency gate measured it."
    )


class ModelDeploymentStatus(Model):
    observed_generation: int | None = Field(default=None, description="Generation last reconciled.")
    phase: Phase | None = Field(
        default=None, description="Pending, Progressing, Ready, Degraded, RolledBack or Failed."
    )
    conditions: list[Condition] = Field(default_factory=list, description="Ready, Progressing, Degraded, RolledBack.")
    replicas: int | None = Field(default=None, description="Pods of every revision.")
    ready_replicas: int | None = Field(default=None, description="Ready pods.")
    updated_replicas: int | None = Field(default=None, description="Pods of the current template.")
    available_replicas: int | None = Field(default=None, description="Available pods.")
    ready: str | None = Field(default=None, description="Ready over desired pods, e.g. 2/3.")
    selector: str | None = Field(default=None, description="Label selector of the pods (scale subresource).")
    revision: int | None = Field(default=None, description="Deployment revision being rolled out or served.")
    endpoint: str | None = Field(default=None, description="In-cluster URL of the v2 API.")
    model_name: str | None = Field(default=None, description="Served model name.")
    last_known_good: KnownGood | None = Field(
        default=None, description="The last revision that rolled out successfully."
    )
    rollback: RollbackRecord | None = Field(default=None, description="The last failed rollout and what was done.")
    rollback_count: int = Field(default=0, description="Rollbacks performed over the life of this resource.")
    update_cost: str | None = Field(
        default=None,
        description=(
            "What an update costs: while one rolls out, the plan it runs with; otherwise what the next "
            "update would do as the cluster stands, e.g. `update surges 1 pod: 1 free nvidia.com/gpu on "
            "node-a` or `update will take 1 of 1 replicas offline: no free nvidia.com/gpu on nodes matching ...`."
        ),
    )
    analysis: AnalysisStatus | None = Field(
        default=None, description="The watch on live traffic after the last update."
    )
    hardware: Hardware | None = Field(default=None, description="What the current revision's pods really run on.")
