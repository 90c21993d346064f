"""The pre-flight check of an s3:// or gs:// model, before any pod is created: the credentials
Secret is read and checked, and the store is asked for the object's metadata (a HEAD; when that
fails, a ranged GET of one byte, since a HEAD's answer carries no error code); for an OpenVINO IR,
of its .bin too. The model itself is never downloaded here.

A source that passed is not asked again while its settings and Secret stay the same, so a resync
costs no request to the store; one that failed is asked again on the next reconcile, so fixing the
bucket (not the spec) is seen too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import modeldeploy_contract.sources as contract
from kubernetes.client.exceptions import ApiException
from modeldeploy_contract.openvino_ir import is_ir, weights_of

from . import api, naming
from .kube import Kube
from .render.source import scheme
from .sourcecheck import (
    check_source_secret,
    decoded,
    diagnosis_problem,
    pod_identity_note,
    unreadable_secret_problem,
)
from .validation import Problem

log = logging.getLogger(__name__)

TIMEOUT_S = 5.0
# (namespace, name) -> fingerprint of the source settings and Secret that last passed.
PASSED: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Outcome:
    problems: list[Problem]
    note: str | None = None  # what could not be checked (pod identity), said once per passed source


def check_model_source(kube: Kube, namespace: str, name: str, spec: api.ModelDeploymentSpec) -> Outcome:
    kind = scheme(spec.model)
    if kind is None:
        PASSED.pop((namespace, name), None)
        return Outcome([])
    secret = None
    if spec.model.credentials is not None:
        try:
            secret = kube.get("v1", "Secret", namespace, spec.model.credentials.secret_name)
        except ApiException as exc:
            if exc.status in (401, 403):
                return Outcome([unreadable_secret_problem(spec, exc.status)])
            raise
        if problems := check_source_secret(spec, secret):
            return Outcome(problems)
    version = ((secret or {}).get("metadata") or {}).get("resourceVersion", "")
    fingerprint = naming.content_hash(
        {"model": spec.model.model_dump(mode="json"), "sa": spec.service_account_name, "secret": version}
    )
    if PASSED.get((namespace, name)) == fingerprint:
        return Outcome([])
    data = (secret or {}).get("data") or {}
    problems, note = probe_s3(spec, data) if kind == "s3" else probe_gcs(spec, data)
    if not problems:
        PASSED[(namespace, name)] = fingerprint
        log.info(
            "%s/%s: pre-flight check of %s passed%s", namespace, name, spec.model.uri, f" ({note})" if note else ""
        )
    else:
        PASSED.pop((namespace, name), None)
        note = None
    return Outcome(problems, note)


def _missing_sdk(what: str, extra: str) -> tuple[list[Problem], str]:
    return [], f"the pre-flight check was skipped: the operator lacks {what} (install the `{extra}` extra)"


# What an anonymous check can still tell truthfully when the pods will use their own identity.
ANONYMOUS_FINDS = {contract.UNREACHABLE, contract.WRONG_REGION}


def probe_s3(spec: api.ModelDeploymentSpec, data: dict[str, str]) -> tuple[list[Problem], str | None]:
    try:
        import boto3
        from botocore import UNSIGNED
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        return _missing_sdk("boto3", "s3")
    s3 = spec.model.s3 or api.S3Settings()
    bucket, _, key = spec.model.uri[len("s3://") :].partition("/")
    signed = bool(data)
    config = Config(
        s3={"addressing_style": s3.addressing.value if s3.addressing else "auto"},
        retries={"total_max_attempts": 1},
        connect_timeout=TIMEOUT_S,
        read_timeout=TIMEOUT_S,
        signature_version=None if signed else UNSIGNED,
    )
    credentials = (
        {
            "aws_access_key_id": decoded(data.get(contract.AWS_ACCESS_KEY_ID)),
            "aws_secret_access_key": decoded(data.get(contract.AWS_SECRET_ACCESS_KEY)),
            "aws_session_token": decoded(data.get(contract.AWS_SESSION_TOKEN)) or None,
        }
        if signed
        else {}
    )
    client = boto3.session.Session().client(
        "s3", endpoint_url=s3.endpoint or None, region_name=s3.region or "us-east-1", config=config, **credentials
    )

    def code_of(exc: Exception) -> tuple[str, int | None]:
        if isinstance(exc, ClientError):
            response = exc.response or {}
            return (
                str((response.get("Error") or {}).get("Code") or ""),
                (response.get("ResponseMetadata") or {}).get("HTTPStatusCode"),
            )
        return type(exc).__name__, None

    def failure_of(key: str) -> tuple[str, int | None] | None:
        try:
            client.head_object(Bucket=bucket, Key=key)
            return None
        except (ClientError, BotoCoreError) as exc:
            code, status = code_of(exc)
        if code.isdigit() or not code:
            try:  # one byte, for the error code a HEAD cannot carry
                client.get_object(Bucket=bucket, Key=key, Range="bytes=0-0")["Body"].close()
                return None
            except (ClientError, BotoCoreError) as exc:
                better = code_of(exc)
                if better[0]:
                    code, status = better
        return code, status

    for each in object_keys(spec, key):
        if (found := failure_of(each)) is None:
            continue
        code, status = found
        diagnosis = contract.classify_s3(code, status)
        if not signed and diagnosis.reason not in ANONYMOUS_FINDS and code not in ("NoSuchBucket", "NoSuchKey"):
            return [], pod_identity_note(spec)
        return [diagnosis_problem(diagnosis, spec, each)], None
    return [], None


def object_keys(spec: api.ModelDeploymentSpec, key: str) -> list[str]:
    """The model's key, and for an OpenVINO IR the key of its weights beside it (both are fetched)."""
    if spec.model.format == api.ModelFormat.OPENVINO and is_ir(key):
        return [key, weights_of(key)]
    return [key]


def probe_gcs(spec: api.ModelDeploymentSpec, data: dict[str, str]) -> tuple[list[Problem], str | None]:
    try:
        import json

        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage
        from google.oauth2 import service_account
    except ImportError:
        return _missing_sdk("google-cloud-storage", "gcs")
    gcs = spec.model.gcs or api.GcsSettings()
    bucket_name, _, key = spec.model.uri[len("gs://") :].partition("/")
    signed = bool(data)
    try:
        credentials: Any = (
            service_account.Credentials.from_service_account_info(
                json.loads(decoded(data.get(contract.GCS_SECRET_KEY))),
                scopes=["https://www.googleapis.com/auth/devstorage.read_only"],
            )
            if signed
            else AnonymousCredentials()
        )
    except (ValueError, KeyError) as exc:
        return [
            Problem(
                "spec.model.credentials.secretName",
                f"key.json is not a usable service account key ({exc}): put a service account's JSON key in it",
                contract.SECRET_INVALID,
            )
        ], None
    client = storage.Client(
        project="none",
        credentials=credentials,
        client_options={"api_endpoint": gcs.endpoint} if gcs.endpoint else None,
    )
    bucket = client.bucket(bucket_name)

    def status_of(exc: Exception) -> tuple[int | None, str]:
        code = getattr(exc, "code", None)
        return (code if isinstance(code, int) else None), type(exc).__name__

    for each in object_keys(spec, key):
        try:
            bucket.blob(each).reload(timeout=TIMEOUT_S, retry=None)
            continue
        except Exception as exc:  # google.api_core.exceptions.*, google.auth.exceptions.*, requests.*
            status, name = status_of(exc)
        missing = None
        if status == 404:
            try:
                missing = not bucket.exists(timeout=TIMEOUT_S, retry=None)
            except Exception:
                missing = None
        diagnosis = contract.classify_gcs(status, name, bucket_missing=missing)
        if not signed and diagnosis.reason not in ANONYMOUS_FINDS and not (status == 404 and missing is not None):
            return [], pod_identity_note(spec)
        return [diagnosis_problem(diagnosis, spec, each)], None
    return [], None
