"""What the pre-flight check of an s3:// or gs:// model concludes, as problems of spec fields.
Pure: the credentials Secret is checked as read, and a store's failure arrives already classified
(modeldeploy_contract.sources.classify_*); preflight.py makes the calls."""

from __future__ import annotations

import base64
import json
from typing import Any

import modeldeploy_contract.sources as contract

from . import api
from .render.source import scheme
from .validation import Problem


def _field_of(part: str, spec: api.ModelDeploymentSpec) -> str:
    kind = scheme(spec.model)
    if part in (contract.BUCKET, contract.KEY):
        return "spec.model.uri"
    if part in (contract.CREDENTIALS, contract.PERMISSION):
        if spec.model.credentials is not None:
            return "spec.model.credentials.secretName"
        return "spec.serviceAccountName"
    if part == contract.REGION:
        return "spec.model.s3.region"
    if part == contract.ENDPOINT:
        return "spec.model.s3.endpoint" if kind == "s3" else "spec.model.gcs.endpoint"
    return "spec.model.uri"


def _fix(part: str, spec: api.ModelDeploymentSpec, key: str | None = None) -> str:
    model, kind = spec.model, scheme(spec.model)
    bucket, _, model_key = model.uri.partition("://")[2].partition("/")
    key = key or model_key
    secret = model.credentials.secret_name if model.credentials else None
    s3 = model.s3 or api.S3Settings()
    endpoint = (s3.endpoint if kind == "s3" else (model.gcs.endpoint if model.gcs else None)) or "the default"
    perm = "s3:GetObject" if kind == "s3" else "storage.objects.get (roles/storage.objectViewer)"
    keys = "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" if kind == "s3" else "key.json"
    return {
        contract.BUCKET: f"bucket {bucket!r} does not exist at endpoint {endpoint}: fix the bucket in the URI "
        "(or spec.model.s3.endpoint)",
        contract.KEY: (
            f"no object {key!r} in bucket {bucket!r}: fix the key in the URI (the path after the bucket)"
            if key == model_key
            else f"no object {key!r} in bucket {bucket!r}, the weights of the OpenVINO IR {model_key!r}: put "
            "NAME.bin beside NAME.xml in the bucket"
        ),
        contract.CREDENTIALS: (
            f"the store refuses the credentials in Secret {secret!r}: put valid {keys} in it"
            if secret
            else "no credentials were accepted: name a Secret in spec.model.credentials.secretName, or give the "
            "pods an identity through spec.serviceAccountName"
        ),
        contract.PERMISSION: (
            f"the credentials in Secret {secret!r} may not read {model.uri}: grant {perm} on it"
            if secret
            else f"anonymous access to {model.uri} is refused: grant {perm} to the pods' identity "
            "(spec.serviceAccountName) or name a Secret in spec.model.credentials.secretName"
        ),
        contract.REGION: f"bucket {bucket!r} is not in region {s3.region or '(unset)'}: set spec.model.s3.region to "
        "the bucket's region",
        contract.ENDPOINT: f"the store at {endpoint} cannot be reached from the operator: fix the endpoint, or the "
        "network path to it",
    }.get(part, f"the store refused the check of {model.uri}")


def diagnosis_problem(diagnosis: contract.Diagnosis, spec: api.ModelDeploymentSpec, key: str | None = None) -> Problem:
    """``key``: the object the store answered for, when not the model's own (an IR's .bin)."""
    return Problem(
        _field_of(diagnosis.part, spec),
        f"{diagnosis.detail}: {_fix(diagnosis.part, spec, key)}",
        diagnosis.reason,
    )


def check_source_secret(spec: api.ModelDeploymentSpec, secret: dict[str, Any] | None) -> list[Problem]:
    """The credentials Secret as read (None: it does not exist). Names no value of it."""
    model, kind = spec.model, scheme(spec.model)
    if model.credentials is None or kind is None:
        return []
    name, field = model.credentials.secret_name, "spec.model.credentials.secretName"
    needed = contract.S3_SECRET_KEYS if kind == "s3" else (contract.GCS_SECRET_KEY,)
    if secret is None:
        literals = " ".join(f"--from-literal={k}=..." for k in needed) if kind == "s3" else "--from-file=key.json"
        return [
            Problem(
                field,
                f"Secret {name!r} does not exist in this namespace: create it (kubectl create secret generic "
                f"{name} {literals}) or fix the name",
                contract.SECRET_INVALID,
            )
        ]
    data = secret.get("data") or {}
    missing = [k for k in needed if not decoded(data.get(k))]
    if missing:
        return [
            Problem(
                field,
                f"Secret {name!r} has no (or an empty) {', '.join(missing)}: add "
                f"{'the key' if len(missing) == 1 else 'the keys'} (the names the SDK reads)",
                contract.SECRET_INVALID,
            )
        ]
    if kind == "gs":
        try:
            info = json.loads(decoded(data[contract.GCS_SECRET_KEY]))
            ok = isinstance(info, dict) and (
                (
                    info.get("type") == "service_account"
                    and bool(info.get("client_email"))
                    and bool(info.get("private_key"))
                )
                or info.get("type") in ("external_account", "authorized_user")
            )
        except ValueError:
            ok = False
        if not ok:
            return [
                Problem(
                    field,
                    f"key.json of Secret {name!r} is not a Google credentials file: put a service account's JSON "
                    "key in it (gcloud iam service-accounts keys create key.json ...)",
                    contract.SECRET_INVALID,
                )
            ]
    return []


def decoded(value: str | None) -> str:
    try:
        return base64.b64decode(value or "").decode().strip()
    except (ValueError, UnicodeDecodeError):
        return ""


def unreadable_secret_problem(spec: api.ModelDeploymentSpec, status: int | None) -> Problem:
    name = spec.model.credentials.secret_name if spec.model.credentials else "?"
    return Problem(
        "spec.model.credentials.secretName",
        f"the operator may not read Secret {name!r} (HTTP {status}): grant its ServiceAccount `get` on secrets in "
        "this namespace (the chart's RBAC does), or use the pods' identity (spec.serviceAccountName) instead",
        contract.SECRET_INVALID,
    )


def pod_identity_note(spec: api.ModelDeploymentSpec) -> str:
    who = f"ServiceAccount {spec.service_account_name!r}" if spec.service_account_name else "the default ServiceAccount"
    return (
        f"{spec.model.uri}: no credentials Secret, so the pods use {who}'s identity, which the operator does not "
        "hold: the endpoint and the bucket were checked anonymously; the key, credentials and permission are "
        "checked only when a pod starts (a failure there is reported as ModelLoadFailed)"
    )
