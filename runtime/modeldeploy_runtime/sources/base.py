"""What every model source is: where an object is (`head`) and how its bytes are streamed from an
offset (`copy_to`). The download itself (resume, checksums, progress, cache) is download.py's and
knows no store."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

Sink = Callable[[bytes], object]


@dataclass(frozen=True)
class ObjectInfo:
    """``version`` identifies the content (an ETag, a GCS generation; empty when the store gives
    none); ``checksums`` are the store's own, by algorithm: ``sha256``, ``md5`` (hex) or ``crc32c``
    (hex of the big-endian 32-bit value)."""

    size: int | None
    version: str = ""
    checksums: dict[str, str] = field(default_factory=dict)


class SourceError(Exception):
    """The object cannot be fetched; the message says why and what to change."""


class Interrupted(SourceError):
    """The transfer broke after it began (a reset connection, a stalled read): what arrived is kept
    and the download goes on from there."""


class Changed(SourceError):
    """The object changed between `head` and `copy_to` (or since a partial download began)."""


class Store(ABC):
    uri: str

    @abstractmethod
    def head(self) -> ObjectInfo:
        """Metadata only, never the content."""

    @abstractmethod
    def copy_to(self, sink: Sink, start: int, info: ObjectInfo) -> None:
        """Streams bytes ``start..`` of exactly the version in ``info`` into ``sink``, in chunks.
        Raises Changed when that version is gone, SourceError on any other failure."""


# What the runtime says to fix for each part a failure blames (the operator says the spec field).
FIX = {
    "bucket": "the bucket does not exist: check the bucket in MODELDEPLOY_MODEL_PATH (and the endpoint)",
    "key": "no such object: check the key in MODELDEPLOY_MODEL_PATH",
    "credentials": "the credentials are refused: check the credentials Secret ({creds})",
    "permission": "access denied: the identity in use may not read this object ({perm})",
    "region": "the bucket is in another region: set MODELDEPLOY_S3_REGION (now {region})",
    "endpoint": "the store cannot be reached: check the endpoint and the network path to it",
    "unknown": "the store refused the request",
}


def explain(diagnosis, scheme: str, region: str = "") -> str:
    creds = "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY" if scheme == "s3" else "GOOGLE_APPLICATION_CREDENTIALS"
    perm = "s3:GetObject" if scheme == "s3" else "storage.objects.get"
    fix = FIX.get(diagnosis.part, FIX["unknown"]).format(creds=creds, perm=perm, region=region or "unset")
    return f"{diagnosis.detail}: {fix}"
