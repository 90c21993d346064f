"""The pre-flight check of an OpenVINO IR in an object store asks for the metadata of both of its
files, NAME.xml and the NAME.bin beside it, against real stores started here (moto's S3 server with
IAM authentication on, fake-gcs-server): a missing .bin is a problem of spec.model.uri naming the
key looked for, before any pod is created."""

from __future__ import annotations

import base64
import sys

import modeldeploy_contract.sources as contract
import pytest
from modeldeploy_operator import api
from modeldeploy_operator.preflight import probe_gcs, probe_s3
from operator_helpers import ROOT

sys.path.insert(0, str(ROOT / "hack"))
from objectstores import FakeGcs, MotoS3  # noqa: E402

pytest.importorskip("boto3")


@pytest.fixture(scope="module")
def moto():
    server = MotoS3().start()
    server.put("models", "ir/m.xml", b"<?xml version='1.0'?><net/>")  # the operator reads neither file
    server.put("models", "ir/m.bin", b"\0" * 16)
    server.put("models", "alone/m.xml", b"<?xml version='1.0'?><net/>")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gcs():
    pytest.importorskip("google.cloud.storage")
    server = FakeGcs().start()
    server.put("gcs-models", "ir/m.xml", b"<net/>")
    server.put("gcs-models", "ir/m.bin", b"\0" * 16)
    server.put("gcs-models", "alone/m.xml", b"<net/>")
    yield server
    server.stop()


def ir_spec(uri: str, **model) -> api.ModelDeploymentSpec:
    return api.ModelDeploymentSpec.model_validate(
        {"model": {"uri": uri, "format": "openvino", **model}, "resources": {"gpu": 0}}
    )


def s3_probe(moto, uri: str):
    spec = ir_spec(uri, s3={"endpoint": moto.endpoint, "region": moto.region, "addressing": "path"},
                   credentials={"secretName": "s3"})  # fmt: skip
    data = {k: base64.b64encode(v.encode()).decode() for k, v in moto.keys.env().items()}
    return probe_s3(spec, data)


def test_an_s3_ir_with_both_files_passes(moto):
    assert s3_probe(moto, "s3://models/ir/m.xml") == ([], None)


def test_an_s3_ir_without_its_bin_names_the_weights_key(moto):
    (problem,), _ = s3_probe(moto, "s3://models/alone/m.xml")
    assert problem.field == "spec.model.uri" and problem.reason == contract.NOT_FOUND
    assert "no object 'alone/m.bin' in bucket 'models'" in problem.message
    assert (
        "the weights of the OpenVINO IR 'alone/m.xml'" in problem.message
        and "NAME.bin beside NAME.xml" in problem.message
    )


@pytest.mark.parametrize(("key", "problems"), [("ir/m.xml", 0), ("alone/m.xml", 1)], ids=["both", "no-bin"])
def test_a_gcs_ir_is_checked_for_both_files(gcs, key, problems):
    found, _ = probe_gcs(ir_spec(f"gs://gcs-models/{key}", gcs={"endpoint": gcs.endpoint}), {})
    assert len(found) == problems
    if found:
        assert (
            found[0].field == "spec.model.uri" and "no object 'alone/m.bin' in bucket 'gcs-models'" in found[0].message
        )
