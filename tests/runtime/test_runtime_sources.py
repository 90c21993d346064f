"""Models from object stores, against real servers started here: moto's S3 server (IAM
authentication on) and fake-gcs-server. The runtime runs as a real process, as a pod runs it, and
answers inferences over HTTP; failures end in the termination message a kubelet would show."""

from __future__ import annotations

import hashlib
import json
import signal
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from runtime_helpers import affine_model, onnx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack"))
from objectstores import FakeGcs, MotoS3, ThrottledProxy  # noqa: E402

pytest.importorskip("boto3")
pytest.importorskip("google.cloud.storage")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def moto():
    server = MotoS3().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gcs():
    server = FakeGcs().start()
    yield server
    server.stop()


@pytest.fixture
def aws(moto, monkeypatch):
    """The runtime's environment as the operator renders it from a credentials Secret."""
    for name, value in moto.keys.env().items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    return {"S3_ENDPOINT": moto.endpoint, "S3_REGION": moto.region, "S3_ADDRESSING": "path"}


@pytest.fixture
def no_google_identity(monkeypatch):
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # no metadata server here: anonymous, at once


def infer_affine(server, model="m") -> list[float]:
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [0, 1, 2, 3]}]})
    request = urllib.request.Request(
        f"{server.base}/v2/models/{model}/infer", data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read())["outputs"][0]["data"]


def failure(server) -> str:
    assert server.wait_exit() == 1, server.log()
    message = server.termination_log.read_text()
    assert message.startswith("model load failed: "), message
    return message


def test_s3_model_is_served_then_started_again_from_the_cache(server_factory, models, moto, aws, tmp_path):
    body = models["affine"].read_bytes()
    moto.put("models", "digits/affine.onnx", body)
    sha = hashlib.sha256(body).hexdigest()
    cache = tmp_path / "cache"
    server = server_factory("s3://models/digits/affine.onnx", MODEL_SHA256=sha, CACHE_DIR=cache, **aws)
    assert infer_affine(server) == [1.0, 3.0, 5.0, 7.0]
    assert "downloading s3://models/digits/affine.onnx" in server.log() and "MiB/s" in server.log()
    server.proc.send_signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    # The restart (or a rollback to this revision) finds the verified file: the store is not needed.
    moto.s3().delete_object(Bucket="models", Key="digits/affine.onnx")
    again = server_factory("s3://models/digits/affine.onnx", MODEL_SHA256=sha, CACHE_DIR=cache, **aws)
    assert infer_affine(again) == [1.0, 3.0, 5.0, 7.0]
    assert "using cached model" in again.log()


def test_s3_without_sha256_is_checked_by_the_store_and_follows_a_new_version(
    server_factory, models, moto, aws, tmp_path
):
    moto.put("models", "v/affine.onnx", models["affine"].read_bytes())
    cache = tmp_path / "cache"
    first = server_factory("s3://models/v/affine.onnx", CACHE_DIR=cache, **aws)
    first.proc.send_signal(signal.SIGTERM)
    assert first.wait_exit() == 0
    same = server_factory("s3://models/v/affine.onnx", CACHE_DIR=cache, **aws)
    assert "using cached model" in same.log()
    same.proc.send_signal(signal.SIGTERM)
    assert same.wait_exit() == 0
    # Another object under the same key: the cached file is of an old version and is replaced.
    affine_model(tmp_path / "wider.onnx", features=2)
    moto.put("models", "v/affine.onnx", (tmp_path / "wider.onnx").read_bytes())
    newer = server_factory("s3://models/v/affine.onnx", CACHE_DIR=cache, **aws)
    assert "of another version" in newer.log()
    metadata = json.loads(urllib.request.urlopen(f"{newer.base}/v2/models/m", timeout=10).read())
    assert metadata["inputs"][0]["shape"] == [-1, 2]


@pytest.mark.parametrize(
    "uri, change, expected",
    [
        ("s3://models/no/such.onnx", {}, ["NoSuchKey", "check the key in MODELDEPLOY_MODEL_PATH"]),
        ("s3://no-such-bucket/affine.onnx", {}, ["NoSuchBucket", "bucket does not exist"]),
        ("s3://models/affine.onnx", {"AWS_SECRET_ACCESS_KEY": "wrong"}, ["SignatureDoesNotMatch", "credentials"]),
        ("s3://models/affine.onnx", {"AWS_ACCESS_KEY_ID": "AKIANOSUCHKEY"}, ["InvalidAccessKeyId", "credentials"]),
    ],
    ids=["wrong-key", "missing-bucket", "wrong-secret", "unknown-access-key"],
)
def test_s3_failures_name_the_cause(server_factory, models, moto, aws, monkeypatch, uri, change, expected):
    moto.put("models", "affine.onnx", models["affine"].read_bytes())
    for name, value in change.items():
        monkeypatch.setenv(name, value)
    message = failure(server_factory(uri, wait=False, **aws))
    for part in expected:
        assert part in message, message


def test_s3_sha256_mismatch_is_refused_and_nothing_is_kept(server_factory, models, moto, aws, tmp_path):
    moto.put("models", "affine.onnx", models["affine"].read_bytes())
    cache = tmp_path / "cache"
    message = failure(
        server_factory("s3://models/affine.onnx", MODEL_SHA256="0" * 64, CACHE_DIR=cache, wait=False, **aws)
    )
    assert "sha256" in message and "0" * 64 in message
    kept = sorted(p.name for p in cache.rglob("affine.onnx*") if p.is_file())
    assert kept == ["affine.onnx.lock"]  # neither the file nor a partial one to resume


def big_affine_model(path: Path, mib: int) -> Path:
    """affine_model plus an unused initializer of ``mib`` MiB: a file big enough to kill half way."""
    from onnx import TensorProto, helper, numpy_helper

    pad = np.random.default_rng(1).standard_normal(mib * (1 << 18)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["t"]), helper.make_node("Add", ["t", "one"], ["y"])],
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        initializer=[
            numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two"),
            numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
            numpy_helper.from_array(pad, "pad"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("store", ["s3", "gcs"])
def test_a_download_killed_half_way_resumes_where_it_stopped(
    server_factory, request, no_google_identity, tmp_path, store
):
    body = big_affine_model(tmp_path / "big.onnx", mib=24).read_bytes()
    sha = hashlib.sha256(body).hexdigest()
    if store == "s3":
        moto, settings = request.getfixturevalue("moto"), dict(request.getfixturevalue("aws"))
        moto.put("models", "big.onnx", body)
        uri, port, endpoint_setting = "s3://models/big.onnx", moto.port, "S3_ENDPOINT"
    else:
        gcs, settings = request.getfixturevalue("gcs"), {}
        gcs.put("gcs-models", "big.onnx", body)
        uri, port, endpoint_setting = "gs://gcs-models/big.onnx", gcs.server.port, "GCS_ENDPOINT"
    cache = tmp_path / "cache"
    proxy = ThrottledProxy(port, rate=3 << 20)  # 3 MiB/s: about 8 s for the whole file
    try:
        settings.update({endpoint_setting: proxy.endpoint, "MODEL_SHA256": sha, "CACHE_DIR": cache})
        first = server_factory(uri, wait=False, **settings)
        partial = cache / "models" / sha / "big.onnx.partial"
        deadline = time.monotonic() + 60
        while not (partial.exists() and partial.stat().st_size > len(body) // 4):
            assert first.proc.poll() is None and time.monotonic() < deadline, first.log()
            time.sleep(0.05)
        first.proc.send_signal(signal.SIGKILL)  # as a node kills a pod: no clean-up
        first.proc.wait(timeout=10)
        kept = partial.stat().st_size
        assert 0 < kept < len(body)

        proxy.rate, proxy.sent = 1 << 30, 0
        second = server_factory(uri, **settings)
        assert infer_affine(second) == [1.0, 3.0, 5.0, 7.0]
        log = second.log()
        assert f"resuming the download of {uri} at byte" in log, log
        resumed_at = int(log.split("at byte ")[1].split()[0])
        assert resumed_at >= kept - (64 << 10)  # at most what the killed process had not yet flushed
        # Only the rest crossed the wire the second time (plus headers).
        assert proxy.sent < len(body) - resumed_at + (256 << 10), (proxy.sent, len(body), resumed_at)
        assert hashlib.sha256((cache / "models" / sha / "big.onnx").read_bytes()).hexdigest() == sha
        assert not partial.exists()
    finally:
        proxy.close()


def test_gcs_model_is_served_and_checked_against_the_stores_md5(
    server_factory, models, gcs, no_google_identity, tmp_path
):
    gcs.put("gcs-models", "affine/affine.onnx", models["affine"].read_bytes())
    cache = tmp_path / "cache"
    server = server_factory("gs://gcs-models/affine/affine.onnx", CACHE_DIR=cache, GCS_ENDPOINT=gcs.endpoint)
    assert infer_affine(server) == [1.0, 3.0, 5.0, 7.0]
    (kept,) = cache.rglob("affine.onnx.source.json")
    assert json.loads(kept.read_text())["version"]  # the generation the file came from


def test_gcs_missing_object_and_sha256_mismatch(server_factory, models, gcs, no_google_identity):
    gcs.put("gcs-models", "affine.onnx", models["affine"].read_bytes())
    missing = failure(server_factory("gs://gcs-models/nothing.onnx", wait=False, GCS_ENDPOINT=gcs.endpoint))
    assert "404" in missing and "check the key in MODELDEPLOY_MODEL_PATH" in missing
    wrong = failure(
        server_factory("gs://gcs-models/affine.onnx", MODEL_SHA256="0" * 64, wait=False, GCS_ENDPOINT=gcs.endpoint)
    )
    assert "sha256" in wrong and "0" * 64 in wrong


@pytest.fixture(scope="module")
def ir(models, tmp_path_factory) -> Path:
    """The small CNN as an OpenVINO IR (tests/fixtures/make_openvino_ir.py), converted here."""
    pytest.importorskip("openvino")
    sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
    import make_openvino_ir

    return make_openvino_ir.convert(models["cnn"], tmp_path_factory.mktemp("ir") / "cnn.xml")


def cnn_probs(server) -> list[float]:
    body = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3, 16, 16], "data": [0.5] * 768}]})
    request = urllib.request.Request(
        f"{server.base}/v2/models/m/infer", data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read())["outputs"][0]["data"]


def test_an_s3_ir_is_fetched_with_its_bin_and_both_are_checked_and_cached(
    server_factory, models, moto, aws, ir, tmp_path
):
    xml, weights = ir.read_bytes(), ir.with_suffix(".bin").read_bytes()
    moto.put("models", "ir/cnn.xml", xml)
    moto.put("models", "ir/cnn.bin", weights)
    cache = tmp_path / "cache"
    server = server_factory("s3://models/ir/cnn.xml", CACHE_DIR=cache, **aws)
    probs = cnn_probs(server)
    assert len(probs) == 10 and abs(sum(probs) - 1) < 1e-5
    assert json.loads(urllib.request.urlopen(f"{server.base}/v2/models/m", timeout=10).read())["platform"] == (
        "openvino_ir"
    )
    log = server.log()
    assert "downloading s3://models/ir/cnn.xml" in log and "downloading s3://models/ir/cnn.bin" in log
    (folder,) = {p.parent for p in cache.rglob("cnn.xml")}
    assert (folder / "cnn.bin").read_bytes() == weights  # beside the .xml, as OpenVINO reads them
    assert all(json.loads((folder / f"cnn.{ext}.source.json").read_text())["version"] for ext in ("xml", "bin"))
    server.proc.send_signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    again = server_factory("s3://models/ir/cnn.xml", CACHE_DIR=cache, **aws)
    assert again.log().count("using cached model") == 2 and cnn_probs(again) == probs


def test_an_s3_ir_without_its_bin_names_the_key_it_looked_for(server_factory, moto, aws, ir):
    moto.put("models", "alone/cnn.xml", ir.read_bytes())
    message = failure(server_factory("s3://models/alone/cnn.xml", wait=False, **aws))
    assert "the weights file s3://models/alone/cnn.bin of the OpenVINO IR s3://models/alone/cnn.xml" in message
    assert "put NAME.bin beside NAME.xml" in message
