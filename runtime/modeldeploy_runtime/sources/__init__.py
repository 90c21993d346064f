"""Model sources: the configured model location turned into a verified local file.

A path is used where it is (checked against its sha256 when one is given). A URI is downloaded
once into the cache dir by download.py from its store: `http(s)://` (http.py), `s3://` (s3.py,
boto3) or `gs://` (gcs.py, google-cloud-storage). The cache path depends only on the URI and the
sha256, so a restart, or a rollback to a revision whose file is still cached, downloads nothing.

An OpenVINO IR is two files: the location names NAME.xml, and NAME.bin (the weights) is fetched
from beside it into the same cache folder, by the same download. The sha256 asked for is the
.xml's; the .bin is checked against its store's own checksum where the store keeps one.
"""

from __future__ import annotations

import hashlib
import os
import urllib.parse
from dataclasses import dataclass

from modeldeploy_contract.openvino_ir import is_ir, weights_of

from ..errors import ModelLoadFailed
from .base import SourceError, Store
from .download import fetch, sha256_file
from .gcs import GcsOptions, GcsStore
from .http import HttpStore
from .s3 import S3Options, S3Store

URI_SCHEMES = ("http://", "https://", "s3://", "gs://")

__all__ = ["SourceOptions", "cached_path", "resolve_model", "sha256_file", "store_for"]


@dataclass(frozen=True)
class SourceOptions:
    s3: S3Options = S3Options()
    gcs: GcsOptions = GcsOptions()


def is_uri(model_path: str) -> bool:
    return model_path.startswith(URI_SCHEMES)


def store_for(uri: str, options: SourceOptions) -> Store:
    if uri.startswith("s3://"):
        return S3Store(uri, options.s3)
    if uri.startswith("gs://"):
        return GcsStore(uri, options.gcs)
    return HttpStore(uri)


def cached_path(uri: str, sha256: str, cache_dir: str) -> str:
    """models/SHA256/NAME; without a sha256 (allowed for s3:// and gs://, whose stores name the
    version) models/uri-HASH_OF_URI/NAME, with the version kept beside the file."""
    name = os.path.basename(urllib.parse.urlparse(uri).path) or "model"
    folder = sha256 or "uri-" + hashlib.sha256(uri.encode()).hexdigest()[:32]
    return os.path.join(cache_dir, "models", folder, name)


def _check_local(path: str, sha256: str) -> str:
    if not os.path.isfile(path):
        raise ModelLoadFailed(
            f"model file {path} does not exist; check MODELDEPLOY_MODEL_PATH and the volume that should hold it"
        )
    if is_ir(path) and not os.path.isfile(weights := weights_of(path)):
        raise ModelLoadFailed(
            f"the OpenVINO IR {path} has no weights file {weights} beside it; put NAME.bin next to NAME.xml "
            "(both as ovc or openvino.save_model wrote them)"
        )
    if sha256 and (actual := sha256_file(path)) != sha256:
        raise ModelLoadFailed(
            f"model file {path} has sha256 {actual} but MODELDEPLOY_MODEL_SHA256 expects {sha256}; "
            "fix the checksum or the model file"
        )
    return path


def resolve_model(model_path: str, sha256: str, cache_dir: str, options: SourceOptions | None = None) -> str:
    """The local path of a verified model file; raises ModelLoadFailed with the reason."""
    if not is_uri(model_path):
        return _check_local(model_path, sha256)
    dest = cached_path(model_path, sha256, cache_dir)
    options = options or SourceOptions()
    try:
        path = fetch(store_for(model_path, options), sha256, dest)
    except SourceError as exc:
        raise ModelLoadFailed(str(exc)) from exc
    except PermissionError as exc:
        raise ModelLoadFailed(
            f"cannot write to the cache dir {cache_dir} ({exc.strerror}); mount a writable volume there "
            "or set MODELDEPLOY_CACHE_DIR"
        ) from exc
    if is_ir(model_path):
        _fetch_weights(model_path, path, cache_dir, options)
    return path


def _fetch_weights(model_uri: str, model_file: str, cache_dir: str, options: SourceOptions) -> str:
    """NAME.bin of an IR, into the folder of NAME.xml (OpenVINO reads them side by side). It has no
    sha256 of its own in the spec: its store's checksum checks it, and a cached copy is reused
    while the store names the same version or, from a web server (no version), while it hashes as
    it did when it arrived beside this pinned .xml (see download.cached_file_is_current)."""
    uri = weights_of(model_uri)
    try:
        return fetch(store_for(uri, options), "", weights_of(model_file), keep_unversioned=True)
    except SourceError as exc:
        raise ModelLoadFailed(
            f"the weights file {uri} of the OpenVINO IR {model_uri} cannot be fetched: {exc}; put NAME.bin "
            "beside NAME.xml in the store"
        ) from exc
    except PermissionError as exc:
        raise ModelLoadFailed(
            f"cannot write to the cache dir {cache_dir} ({exc.strerror}); mount a writable volume there "
            "or set MODELDEPLOY_CACHE_DIR"
        ) from exc
