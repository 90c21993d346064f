"""Turns the configured model location into a verified local file.

A URL is downloaded once into the cache dir, under its sha256, so restarts of a pod with a volume
(or an emptyDir that survives container restarts) do not download again, and a file that does not
hash to what was asked for never reaches the backend.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request

from .errors import ModelLoadFailed

log = logging.getLogger(__name__)

CHUNK = 1 << 20


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _check_sha(path: str, expected: str, where: str) -> None:
    if expected and (actual := sha256_file(path)) != expected:
        raise ModelLoadFailed(
            f"{where} has sha256 {actual} but MODELDEPLOY_MODEL_SHA256 expects {expected}; "
            "fix the checksum or the model file"
        )


def cached_path(url: str, sha256: str, cache_dir: str) -> str:
    name = os.path.basename(urllib.parse.urlparse(url).path) or "model"
    return os.path.join(cache_dir, "models", sha256, name)


def download(url: str, sha256: str, dest: str, timeout_s: float = 60.0) -> None:
    """Stream ``url`` to ``dest`` while hashing; the file appears only once it is complete and
    verified (a temporary file renamed into place)."""
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dest), prefix=".download-")
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout_s) as resp:
            while chunk := resp.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
        if digest.hexdigest() != sha256:
            raise ModelLoadFailed(
                f"{url} downloaded ({size} bytes) with sha256 {digest.hexdigest()} but "
                f"MODELDEPLOY_MODEL_SHA256 expects {sha256}; fix the checksum or the URL"
            )
        os.replace(tmp, dest)
    except urllib.error.HTTPError as exc:
        raise ModelLoadFailed(f"downloading {url} failed: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ModelLoadFailed(f"downloading {url} failed: {reason}") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("downloaded %s (%d bytes) to %s", url, size, dest)


def resolve_model(model_path: str, sha256: str, cache_dir: str) -> str:
    """The local path of a verified model file; raises ModelLoadFailed with the reason."""
    if not model_path.startswith(("http://", "https://")):
        if not os.path.isfile(model_path):
            raise ModelLoadFailed(
                f"model file {model_path} does not exist; check MODELDEPLOY_MODEL_PATH and the volume "
                "that should hold it"
            )
        _check_sha(model_path, sha256, f"model file {model_path}")
        return model_path
    dest = cached_path(model_path, sha256, cache_dir)
    if os.path.isfile(dest):
        try:
            _check_sha(dest, sha256, f"cached {dest}")
            log.info("using cached model %s", dest)
            return dest
        except ModelLoadFailed:
            log.warning("cached %s does not match its sha256; downloading again", dest)
            os.unlink(dest)
    try:
        download(model_path, sha256, dest)
    except PermissionError as exc:
        raise ModelLoadFailed(
            f"cannot write to the cache dir {cache_dir} ({exc.strerror}); mount a writable volume there "
            "or set MODELDEPLOY_CACHE_DIR"
        ) from exc
    return dest
