"""s3://BUCKET/KEY models through boto3: any S3-compatible store (AWS, MinIO, Ceph) with the
endpoint, region and addressing style of MODELDEPLOY_S3_*. Credentials come from botocore's own
chain: AWS_* variables (from the Secret the spec names), or the pod's identity (IRSA's web identity
token); with none at all, requests go unsigned (public buckets)."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from modeldeploy_contract.sources import classify_s3

from .base import Changed, Interrupted, ObjectInfo, Sink, SourceError, Store, explain

CHUNK = 1 << 20


@dataclass(frozen=True)
class S3Options:
    endpoint: str = ""
    region: str = ""
    addressing: str = ""  # auto, path or virtual ("" = auto)


def split_uri(uri: str, scheme: str) -> tuple[str, str]:
    bucket, _, key = uri[len(scheme) + 3 :].partition("/")
    return bucket, key


def make_client(options: S3Options, unsigned: bool = False, attempts: int = 5, timeout_s: float = 60.0):
    try:
        import boto3
        from botocore import UNSIGNED
        from botocore.config import Config
    except ImportError as exc:
        raise SourceError(
            "s3:// models need boto3, which this image lacks: use a runtime image built with the `s3` extra "
            "(pip install 'modeldeploy[s3]')"
        ) from exc
    config = Config(
        s3={"addressing_style": options.addressing or "auto"},
        retries={"max_attempts": attempts, "mode": "standard"},
        connect_timeout=min(10.0, timeout_s),
        read_timeout=timeout_s,
        signature_version=UNSIGNED if unsigned else None,
    )
    session = boto3.session.Session()
    return session.client(
        "s3", endpoint_url=options.endpoint or None, region_name=options.region or None, config=config
    )


def error_code(exc: Exception) -> tuple[str, int | None]:
    response = getattr(exc, "response", None) or {}
    code = str((response.get("Error") or {}).get("Code") or type(exc).__name__)
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return code, status


def full_object_sha256(head: dict) -> str:
    """The hex SHA-256 S3 keeps for the whole object, or "" (none stored, or a composite checksum
    of multipart parts, which is not the file's)."""
    value = head.get("ChecksumSHA256") or ""
    if not value or "-" in value or head.get("ChecksumType") == "COMPOSITE":
        return ""
    try:
        return base64.b64decode(value).hex()
    except ValueError:
        return ""


class S3Store(Store):
    def __init__(self, uri: str, options: S3Options) -> None:
        self.uri = uri
        self.bucket, self.key = split_uri(uri, "s3")
        self.options = options
        self._client = None

    def _call(self, method: str, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        if self._client is None:
            self._client = make_client(self.options)
        try:
            return getattr(self._client, method)(Bucket=self.bucket, Key=self.key, **kwargs)
        except NoCredentialsError:
            # No Secret and no pod identity: a public bucket still answers unsigned requests.
            self._client = make_client(self.options, unsigned=True)
            return self._call(method, **kwargs)
        except ClientError as exc:
            code, status = error_code(exc)
            if method == "head_object" and code.isdigit():
                # A HEAD's answer has no body, so no error code: ask for one byte to learn it.
                code, status = self._error_of_get() or (code, status)
            if code in ("PreconditionFailed", "412") or status == 412:
                raise Changed(f"{self.uri} changed while it was being downloaded; downloading it again") from exc
            raise SourceError(f"{method} of {self.uri} failed: {describe(code, status, self.options)}") from exc
        except BotoCoreError as exc:
            why = explain(classify_s3(type(exc).__name__, None), "s3", self.options.region)
            raise SourceError(f"{method} of {self.uri} failed: {why} ({exc})") from exc

    def _error_of_get(self) -> tuple[str, int | None] | None:
        from botocore.exceptions import ClientError

        try:
            self._client.get_object(Bucket=self.bucket, Key=self.key, Range="bytes=0-0")["Body"].close()
        except ClientError as exc:
            return error_code(exc)
        except Exception:
            return None
        return None

    def head(self) -> ObjectInfo:
        head = self._call("head_object", ChecksumMode="ENABLED")
        sha = full_object_sha256(head)
        return ObjectInfo(
            size=int(head["ContentLength"]),
            version=str(head.get("ETag") or ""),
            checksums={"sha256": sha} if sha else {},
        )

    def copy_to(self, sink: Sink, start: int, info: ObjectInfo) -> None:
        extra = {"IfMatch": info.version} if info.version else {}
        if start:
            extra["Range"] = f"bytes={start}-"
        body = self._call("get_object", **extra)["Body"]
        try:
            for chunk in body.iter_chunks(CHUNK):
                sink(chunk)
        except Exception as exc:  # botocore's ReadTimeoutError, a reset connection
            raise Interrupted(f"reading {self.uri} broke off: {exc}") from exc
        finally:
            body.close()


def describe(code: str, status: int | None, options: S3Options) -> str:
    return explain(classify_s3(code, status), "s3", options.region)
