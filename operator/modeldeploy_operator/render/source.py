"""What an s3:// or gs:// model adds to the pod: the MODELDEPLOY_S3_* / MODELDEPLOY_GCS_* settings,
the credentials Secret as the SDK's own variables (S3) or as a mounted key file (GCS), and nothing
at all when the pod's identity is used. Pure."""

from __future__ import annotations

from typing import Any

import modeldeploy_contract.sources as contract

from .. import api

GCS_CREDENTIALS_VOLUME = "gcs-credentials"


def scheme(model: api.ModelSource) -> str | None:
    head = model.uri.partition("://")[0]
    return head if head in contract.SCHEMES and "://" in model.uri else None


def source_env(model: api.ModelSource) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = []
    kind = scheme(model)
    if kind == "s3" and model.s3 is not None:
        for name, value in (
            (contract.S3_ENDPOINT_ENV, model.s3.endpoint),
            (contract.S3_REGION_ENV, model.s3.region),
            (contract.S3_ADDRESSING_ENV, model.s3.addressing.value if model.s3.addressing else None),
        ):
            if value:
                env.append({"name": name, "value": value})
    if kind == "gs" and model.gcs is not None and model.gcs.endpoint:
        env.append({"name": contract.GCS_ENDPOINT_ENV, "value": model.gcs.endpoint})
    if model.credentials is None or kind is None:
        return env
    secret = model.credentials.secret_name
    if kind == "s3":
        for key in (*contract.S3_SECRET_KEYS, contract.AWS_SESSION_TOKEN):
            ref: dict[str, Any] = {"name": secret, "key": key}
            if key == contract.AWS_SESSION_TOKEN:
                ref["optional"] = True
            env.append({"name": key, "valueFrom": {"secretKeyRef": ref}})
    else:
        env.append(
            {
                "name": contract.GCS_CREDENTIALS_ENV,
                "value": f"{contract.GCS_CREDENTIALS_MOUNT}/{contract.GCS_SECRET_KEY}",
            }
        )
    return env


def source_env_names(model: api.ModelSource) -> set[str]:
    return {e["name"] for e in source_env(model)}


def source_volume(model: api.ModelSource) -> dict[str, Any] | None:
    if scheme(model) != "gs" or model.credentials is None:
        return None
    return {
        "name": GCS_CREDENTIALS_VOLUME,
        "secret": {
            "secretName": model.credentials.secret_name,
            "items": [{"key": contract.GCS_SECRET_KEY, "path": contract.GCS_SECRET_KEY}],
            "defaultMode": 0o440,
        },
    }


def source_mount(model: api.ModelSource) -> dict[str, Any] | None:
    if source_volume(model) is None:
        return None
    return {"name": GCS_CREDENTIALS_VOLUME, "mountPath": contract.GCS_CREDENTIALS_MOUNT, "readOnly": True}
