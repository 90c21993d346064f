"""s3:// and gs:// sources in the operator, without a cluster: how a store's failure is classified
(the reason and the part to blame), the spec field and fix each part names, the credentials Secret
as read, and what the pod gets rendered. Pure functions."""

from __future__ import annotations

import base64
import json

import modeldeploy_contract.sources as contract
import pytest
from modeldeploy_contract.sources import classify_gcs, classify_s3
from modeldeploy_operator import api
from modeldeploy_operator.render import Settings, Target, render_deployment
from modeldeploy_operator.sourcecheck import check_source_secret, diagnosis_problem, pod_identity_note
from modeldeploy_operator.status import _problems_reason
from modeldeploy_operator.validation import validate_spec


def spec_of(raw: dict) -> api.ModelDeploymentSpec:
    return api.ModelDeploymentSpec.model_validate(raw)


@pytest.mark.parametrize(
    "code, status, bucket_missing, reason, part",
    [
        ("NoSuchBucket", 404, None, contract.NOT_FOUND, contract.BUCKET),
        ("NoSuchKey", 404, None, contract.NOT_FOUND, contract.KEY),
        ("404", 404, None, contract.NOT_FOUND, contract.KEY),  # a HEAD: no body, no code
        ("404", 404, True, contract.NOT_FOUND, contract.BUCKET),
        ("InvalidAccessKeyId", 403, None, contract.INVALID_CREDENTIALS, contract.CREDENTIALS),
        ("SignatureDoesNotMatch", 403, None, contract.INVALID_CREDENTIALS, contract.CREDENTIALS),
        ("ExpiredToken", 400, None, contract.INVALID_CREDENTIALS, contract.CREDENTIALS),
        ("AccessDenied", 403, None, contract.ACCESS_DENIED, contract.PERMISSION),
        ("403", 403, None, contract.ACCESS_DENIED, contract.PERMISSION),
        ("PermanentRedirect", 301, None, contract.WRONG_REGION, contract.REGION),
        ("AuthorizationHeaderMalformed", 400, None, contract.WRONG_REGION, contract.REGION),
        ("400", 400, None, contract.WRONG_REGION, contract.REGION),
        ("EndpointConnectionError", None, None, contract.UNREACHABLE, contract.ENDPOINT),
        ("ConnectTimeoutError", None, None, contract.UNREACHABLE, contract.ENDPOINT),
        ("NoCredentialsError", None, None, contract.INVALID_CREDENTIALS, contract.CREDENTIALS),
        ("InternalError", 500, None, contract.UNREACHABLE, contract.ENDPOINT),
        ("SomethingNew", 418, None, contract.CHECK_FAILED, contract.UNKNOWN),
    ],
)
def test_s3_failures_are_classified(code, status, bucket_missing, reason, part):
    found = classify_s3(code, status, bucket_missing=bucket_missing)
    assert (found.reason, found.part) == (reason, part)
    assert code in found.detail


@pytest.mark.parametrize(
    "status, name, bucket_missing, reason, part",
    [
        (404, "NotFound", True, contract.NOT_FOUND, contract.BUCKET),
        (404, "NotFound", False, contract.NOT_FOUND, contract.KEY),
        (401, "Unauthorized", None, contract.INVALID_CREDENTIALS, contract.CREDENTIALS),
        (403, "Forbidden", None, contract.ACCESS_DENIED, contract.PERMISSION),
        (None, "RefreshError", None, contract.INVALID_CREDENTIALS, contract.CREDENTIALS),
        (None, "ConnectionError", None, contract.UNREACHABLE, contract.ENDPOINT),
        (503, "ServiceUnavailable", None, contract.UNREACHABLE, contract.ENDPOINT),
    ],
)
def test_gcs_failures_are_classified(status, name, bucket_missing, reason, part):
    found = classify_gcs(status, name, bucket_missing=bucket_missing)
    assert (found.reason, found.part) == (reason, part)


def s3_spec(**model) -> api.ModelDeploymentSpec:
    return spec_of({"model": {"uri": "s3://models/digits/m.onnx", **model}, "resources": {"gpu": 0}})


@pytest.mark.parametrize(
    "part, model, field, words",
    [
        (contract.BUCKET, {}, "spec.model.uri", "bucket 'models' does not exist"),
        (contract.KEY, {}, "spec.model.uri", "no object 'digits/m.onnx' in bucket 'models'"),
        (contract.CREDENTIALS, {"credentials": {"secretName": "s3"}}, "spec.model.credentials.secretName", "'s3'"),
        (contract.CREDENTIALS, {}, "spec.serviceAccountName", "name a Secret in spec.model.credentials.secretName"),
        (
            contract.PERMISSION,
            {"credentials": {"secretName": "s3"}},
            "spec.model.credentials.secretName",
            "s3:GetObject",
        ),
        (contract.REGION, {"s3": {"region": "eu-west-1"}}, "spec.model.s3.region", "not in region eu-west-1"),
        (contract.ENDPOINT, {"s3": {"endpoint": "http://minio:9000"}}, "spec.model.s3.endpoint", "http://minio:9000"),
    ],
)
def test_each_part_names_its_field_and_fix(part, model, field, words):
    problem = diagnosis_problem(contract.Diagnosis("R", part, "Code (HTTP 1)"), s3_spec(**model))
    assert problem.field == field and problem.reason == "R"
    assert words in problem.message and problem.message.startswith("Code (HTTP 1): ")


def secret(**data: str) -> dict:
    return {"data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


KEYS = {"AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "s3cret"}
SERVICE_ACCOUNT = json.dumps({"type": "service_account", "client_email": "a@b", "private_key": "k"})


@pytest.mark.parametrize(
    "uri, found, words",
    [
        ("s3://models/m.onnx", None, "does not exist in this namespace"),
        ("s3://models/m.onnx", secret(AWS_ACCESS_KEY_ID="AKIA"), "AWS_SECRET_ACCESS_KEY"),
        ("s3://models/m.onnx", secret(AWS_ACCESS_KEY_ID="AKIA", AWS_SECRET_ACCESS_KEY=" "), "AWS_SECRET_ACCESS_KEY"),
        ("gs://models/m.onnx", secret(**KEYS), "key.json"),
        ("gs://models/m.onnx", secret(**{"key.json": "{not json"}), "not a Google credentials file"),
        ("gs://models/m.onnx", secret(**{"key.json": '{"type": "service_account"}'}), "not a Google credentials"),
    ],
)
def test_a_secret_that_cannot_work_is_refused_without_showing_it(uri, found, words):
    spec = spec_of({"model": {"uri": uri, "credentials": {"secretName": "creds"}}, "resources": {"gpu": 0}})
    (problem,) = check_source_secret(spec, found)
    assert problem.field == "spec.model.credentials.secretName" and problem.reason == contract.SECRET_INVALID
    assert words in problem.message and "s3cret" not in problem.message


@pytest.mark.parametrize(
    "uri, found",
    [("s3://models/m.onnx", secret(**KEYS)), ("gs://models/m.onnx", secret(**{"key.json": SERVICE_ACCOUNT}))],
)
def test_a_usable_secret_passes(uri, found):
    spec = spec_of({"model": {"uri": uri, "credentials": {"secretName": "creds"}}, "resources": {"gpu": 0}})
    assert check_source_secret(spec, found) == []


@pytest.mark.parametrize(
    "model, field",
    [
        ({"uri": "https://h/m.onnx", "sha256": "a" * 64, "s3": {"region": "eu-west-1"}}, "spec.model.s3"),
        ({"uri": "s3://models/m.onnx", "gcs": {"endpoint": "http://gcs:4443"}}, "spec.model.gcs"),
        ({"uri": "pvc://claim/m.onnx", "credentials": {"secretName": "c"}}, "spec.model.credentials"),
        (
            {"uri": "s3://models/m.onnx", "s3": {"endpoint": "http://10.0.0.5:9000", "addressing": "virtual"}},
            "spec.model.s3.addressing",
        ),
    ],
)
def test_store_settings_that_do_not_fit_the_uri_are_refused(model, field):
    problems = validate_spec(spec_of({"model": model, "resources": {"gpu": 0}}), "m")
    assert [p.field for p in problems] == [field]


def test_store_uris_need_no_sha256():
    assert validate_spec(s3_spec(), "m") == []
    assert validate_spec(spec_of({"model": {"uri": "gs://models/m.onnx"}, "resources": {"gpu": 0}}), "m") == []


def test_the_reason_of_a_source_problem_is_the_status_reason():
    problem = diagnosis_problem(
        contract.Diagnosis(contract.ACCESS_DENIED, contract.PERMISSION, "AccessDenied"), s3_spec()
    )
    assert _problems_reason((problem,)) == contract.ACCESS_DENIED


def pod(spec: api.ModelDeploymentSpec) -> dict:
    return render_deployment(Target("m", "ns", "uid", spec), Settings())["spec"]["template"]["spec"]


def test_s3_settings_and_secret_become_the_sdks_variables():
    spec = s3_spec(
        s3={"endpoint": "http://minio.minio:9000", "region": "us-east-1", "addressing": "path"},
        credentials={"secretName": "minio"},
    )
    env = {e["name"]: e for e in pod(spec)["containers"][0]["env"]}
    assert env["MODELDEPLOY_MODEL_PATH"]["value"] == "s3://models/digits/m.onnx"
    assert env[contract.S3_ENDPOINT_ENV]["value"] == "http://minio.minio:9000"
    assert env[contract.S3_REGION_ENV]["value"] == "us-east-1"
    assert env[contract.S3_ADDRESSING_ENV]["value"] == "path"
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"] == {"secretKeyRef": {"name": "minio", "key": "AWS_ACCESS_KEY_ID"}}
    assert env["AWS_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert "serviceAccountName" not in pod(spec)


def test_gcs_secret_is_mounted_as_the_key_file():
    spec = spec_of(
        {"model": {"uri": "gs://models/m.onnx", "credentials": {"secretName": "gcs"}}, "resources": {"gpu": 0}}
    )
    rendered = pod(spec)
    env = {e["name"]: e.get("value") for e in rendered["containers"][0]["env"]}
    assert env[contract.GCS_CREDENTIALS_ENV] == f"{contract.GCS_CREDENTIALS_MOUNT}/key.json"
    (volume,) = [v for v in rendered["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == "gcs"
    mounts = {m["name"]: m for m in rendered["containers"][0]["volumeMounts"]}
    assert mounts[volume["name"]]["readOnly"] is True and "AWS_ACCESS_KEY_ID" not in env


def test_pod_identity_is_the_pods_service_account_and_no_secret():
    spec = spec_of({"model": {"uri": "s3://models/m.onnx"}, "resources": {"gpu": 0}, "serviceAccountName": "reader"})
    rendered = pod(spec)
    assert rendered["serviceAccountName"] == "reader"
    assert not any(e["name"].startswith("AWS_") for e in rendered["containers"][0]["env"])
    assert "'reader'" in pod_identity_note(spec) and "checked only when a pod starts" in pod_identity_note(spec)
