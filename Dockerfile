# syntax=docker/dockerfile:1
#
# Three images from one file, each carrying only its own extras of pyproject.toml:
#
#   docker build --target operator    -t ghcr.io/modeldeploy/operator:0.1.0 .
#   docker build --target runtime     -t ghcr.io/modeldeploy/runtime:0.1.0 .
#   docker build --target runtime-cpu -t ghcr.io/modeldeploy/runtime-cpu:0.1.0 .
#
# `operator` is a slim Python image with kopf and the Kubernetes client, no inference libraries
# (plus boto3 and google-cloud-storage for the pre-flight check of s3:// and gs:// models, the
# `s3` and `gcs` extras, which the runtime images carry for the download).
# `runtime` is NVIDIA's TensorRT image (CUDA, cuDNN, TensorRT) with onnxruntime-gpu, pycuda,
# NVML and OpenVINO (for `backend: openvino` on the node's CPU), no kopf. `runtime-cpu` is the
# slim Python image with the CPU runtime (onnxruntime, OpenVINO, LiteRT), for clusters and demos
# without GPUs. All run as uid/gid 10001 (modeldeploy_contract.UID/GID), which
# the chart and the operator's pods also set; the runtime images' ENTRYPOINT and CMD are
# modeldeploy_contract.ENTRYPOINT and SERVE_ARGS, and the operator renders only `args`.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
# TensorRT 10.7 on CUDA 12.6; engines built by `modeldeploy optimize` must come from the same
# TensorRT version, so change this tag and the engines together.
ARG TENSORRT_IMAGE=nvcr.io/nvidia/tensorrt:24.12-py3

# Only what `pip install` needs: the sources of the three packages and the project metadata.
FROM scratch AS source
COPY pyproject.toml README.md /src/
COPY operator/ /src/operator/
COPY runtime/ /src/runtime/
COPY cli/ /src/cli/
COPY contract/ /src/contract/

# The operator is installed into a virtual environment that the final stage copies whole, so no
# compiler, pip cache or source tree reaches the image.
FROM ${PYTHON_IMAGE} AS operator-build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=source /src /src
RUN python -m venv /opt/modeldeploy \
 && /opt/modeldeploy/bin/pip install --no-cache-dir "/src[operator,s3,gcs]"

FROM ${PYTHON_IMAGE} AS operator
RUN groupadd --system --gid 10001 modeldeploy \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin modeldeploy
COPY --from=operator-build /opt/modeldeploy /opt/modeldeploy
ENV PATH=/opt/modeldeploy/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
# 9090: /metrics (MODELDEPLOY_METRICS_PORT), 8081: /healthz (MODELDEPLOY_HEALTH_PORT).
EXPOSE 9090 8081
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('MODELDEPLOY_HEALTH_PORT', '8081'), timeout=4)"]
ENTRYPOINT ["modeldeploy-operator"]
CMD ["--all-namespaces"]

# The TensorRT image (CUDA 12) already holds the tensorrt Python package, which satisfies the gpu
# extra; its onnxruntime-gpu bound keeps to the CUDA 12 builds (see pyproject.toml);
# pycuda compiles against its CUDA toolkit. pip installs into the image's own Python: it is
# the only one there, and Ubuntu 24.04's externally-managed marker is meant for hosts, not images.
# The `openvino` extra serves `backend: openvino` (ONNX or OpenVINO IR, fp32, or bf16 on x86 CPUs
# with bf16 instructions) on the node's CPU in this image too. PyPI has its wheel for both
# architectures of this base image: openvino 2026.4.1 for CPython 3.12 is manylinux_2_28_x86_64
# (59 MB wheel, 180 MB installed) and manylinux_2_35_aarch64 (30 MB, 97 MB installed); with it
# comes only openvino-telemetry (under 1 MB); its numpy is the one onnxruntime-gpu brings.
FROM ${TENSORRT_IMAGE} AS runtime
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    CUDA_ROOT=/usr/local/cuda \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
COPY --from=source /src /tmp/modeldeploy-src
RUN python3 -m pip install --no-cache-dir "/tmp/modeldeploy-src[gpu,openvino,s3,gcs]" \
 && rm -rf /tmp/modeldeploy-src \
 && groupadd --system --gid 10001 modeldeploy \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin modeldeploy \
 && mkdir -p /var/cache/modeldeploy \
 && chown 10001:10001 /var/cache/modeldeploy
# The small model examples/digits-cpu.yaml serves (file:///opt/modeldeploy/models/...), so a
# first try needs no volume and no download.
COPY examples/models/ /opt/modeldeploy/models/
USER 10001:10001
# Downloads and the TensorRT engine cache; the operator mounts an emptyDir or a volume here.
VOLUME ["/var/cache/modeldeploy"]
# 8080: v2 API, health and /metrics (MODELDEPLOY_PORT); 9091: /metrics only (MODELDEPLOY_METRICS_PORT).
EXPOSE 8080 9091 8081
# Live answers as soon as the HTTP server runs, before the model is loaded; Kubernetes uses its
# own probes, this is for plain `docker run`.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/v2/health/live' % os.environ.get('MODELDEPLOY_PORT', '8080'), timeout=4)"]
ENTRYPOINT ["modeldeploy-runtime"]
CMD ["serve"]

# The CPU runtime: the same server on onnxruntime's CPU provider, OpenVINO (bf16 on CPUs that have
# it) and LiteRT (.tflite), in a virtual environment like the operator's, so no compiler or pip
# cache reaches the image.
FROM ${PYTHON_IMAGE} AS runtime-cpu-build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=source /src /src
RUN python -m venv /opt/modeldeploy \
 && /opt/modeldeploy/bin/pip install --no-cache-dir "/src[runtime,openvino,litert,s3,gcs]"

FROM ${PYTHON_IMAGE} AS runtime-cpu
RUN groupadd --system --gid 10001 modeldeploy \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin modeldeploy \
 && mkdir -p /var/cache/modeldeploy \
 && chown 10001:10001 /var/cache/modeldeploy
COPY --from=runtime-cpu-build /opt/modeldeploy /opt/modeldeploy
COPY examples/models/ /opt/modeldeploy/models/
ENV PATH=/opt/modeldeploy/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
VOLUME ["/var/cache/modeldeploy"]
EXPOSE 8080 9091 8081
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/v2/health/live' % os.environ.get('MODELDEPLOY_PORT', '8080'), timeout=4)"]
ENTRYPOINT ["modeldeploy-runtime"]
CMD ["serve"]
