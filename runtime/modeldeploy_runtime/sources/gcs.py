"""gs://BUCKET/KEY models through google-cloud-storage. Credentials come from Application Default
Credentials: GOOGLE_APPLICATION_CREDENTIALS (the Secret's service account key, mounted), or the
pod's identity (GKE workload identity, through the metadata server); with none, anonymous
requests (public buckets, emulators). MODELDEPLOY_GCS_ENDPOINT points the client elsewhere (an
emulator such as fake-gcs-server)."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from modeldeploy_contract.sources import classify_gcs

from .base import Changed, Interrupted, ObjectInfo, Sink, SourceError, Store, explain
from .s3 import split_uri


@dataclass(frozen=True)
class GcsOptions:
    endpoint: str = ""


def make_client(options: GcsOptions, timeout_s: float = 60.0):
    try:
        import google.auth
        from google.auth.credentials import AnonymousCredentials
        from google.auth.exceptions import DefaultCredentialsError
        from google.cloud import storage
    except ImportError as exc:
        raise SourceError(
            "gs:// models need google-cloud-storage, which this image lacks: use a runtime image built with "
            "the `gcs` extra (pip install 'modeldeploy[gcs]')"
        ) from exc
    client_options = {"api_endpoint": options.endpoint} if options.endpoint else None
    try:
        credentials, project = google.auth.default(scopes=["https://www.googleapis.com/auth/devstorage.read_only"])
    except DefaultCredentialsError:
        credentials, project = AnonymousCredentials(), None
    return storage.Client(project=project or "none", credentials=credentials, client_options=client_options)


def failure(exc: Exception) -> tuple[int | None, str]:
    status = getattr(exc, "code", None)
    return (status if isinstance(status, int) else None), type(exc).__name__


# requests' and urllib3's names for a transfer that broke after it began.
BROKEN_OFF = {"ChunkedEncodingError", "ConnectionError", "ReadTimeout", "ProtocolError", "IncompleteRead"}


class GcsStore(Store):
    def __init__(self, uri: str, options: GcsOptions) -> None:
        self.uri = uri
        self.bucket, self.key = split_uri(uri, "gs")
        self.options = options
        self._client = None

    def _blob(self, generation: int | None = None):
        if self._client is None:
            self._client = make_client(self.options)
        return self._client.bucket(self.bucket).blob(self.key, generation=generation)

    def _fail(self, what: str, exc: Exception) -> SourceError:
        status, name = failure(exc)
        if status == 404 and what == "reading":
            return Changed(f"{self.uri} changed while it was being downloaded; downloading it again")
        if what == "reading" and name in BROKEN_OFF:
            return Interrupted(f"reading {self.uri} broke off: {name}: {exc}")
        return SourceError(f"{what} {self.uri} failed: {explain(classify_gcs(status, name), 'gs')}")

    def head(self) -> ObjectInfo:
        blob = self._blob()
        try:
            blob.reload()
        except Exception as exc:  # google.api_core.exceptions.*, google.auth.exceptions.*, requests
            raise self._fail("reading the metadata of", exc) from exc
        checksums = {}
        if blob.md5_hash:  # composite objects have only crc32c
            checksums["md5"] = base64.b64decode(blob.md5_hash).hex()
        if blob.crc32c:
            checksums["crc32c"] = base64.b64decode(blob.crc32c).hex()
        return ObjectInfo(size=blob.size, version=str(blob.generation or ""), checksums=checksums)

    def copy_to(self, sink: Sink, start: int, info: ObjectInfo) -> None:
        blob = self._blob(int(info.version) if info.version else None)

        class _File:  # download_to_file writes each chunk as it arrives
            write = staticmethod(sink)

        try:
            # checksum=None: the library would check a whole-file hash that a ranged read cannot
            # have; download.py checks md5/crc32c over the whole file instead.
            blob.download_to_file(_File(), start=start or None, raw_download=True, checksum=None)
        except Exception as exc:
            raise self._fail("reading", exc) from exc
