"""One download of a model into the cache dir, whatever the store: streamed to disk in chunks (never
whole in memory), resumable (a `.partial` file and the version it belongs to survive a killed
container; the next start asks for the rest with a range request), checked against the sha256
asked for and the store's own checksums, and logged as it goes (bytes, rate, ETA).

The finished file is renamed into place with a `.source.json` beside it naming the version it came
from (and the sha256 it arrived with), so a restart or rollback whose cache already holds the file
downloads nothing.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
from contextlib import contextmanager

from .base import Changed, Interrupted, ObjectInfo, SourceError, Store

log = logging.getLogger("modeldeploy_runtime.sources")

PROGRESS_EVERY_S = 5.0
# A transfer that breaks off is continued in the same process this many times (after 1, 2, 4, ...
# seconds) before the start fails: a pod restart would resume it too, but counts as a crash.
INTERRUPTIONS = 5
BACKOFF_S = 1.0
CHUNK = 1 << 20


class ChecksumMismatch(SourceError):
    pass


def _crc32c():
    try:
        import google_crc32c  # installed with google-cloud-storage

        return google_crc32c.Checksum()
    except ImportError:
        return None


class _Hashers:
    def __init__(self, wanted: set[str]) -> None:
        self.by_name = {"sha256": hashlib.sha256()}
        if "md5" in wanted:
            self.by_name["md5"] = hashlib.md5(usedforsecurity=False)
        if "crc32c" in wanted and (crc := _crc32c()) is not None:
            self.by_name["crc32c"] = crc

    def update(self, chunk: bytes) -> None:
        for h in self.by_name.values():
            h.update(chunk)

    def hexdigest(self, name: str) -> str | None:
        h = self.by_name.get(name)
        return None if h is None else h.digest().hex()


class _Writer:
    """The sink a store streams into: appends, hashes, and logs progress."""

    def __init__(self, out, hashers: _Hashers, uri: str, done: int, total: int | None) -> None:
        self.out, self.hashers, self.uri = out, hashers, uri
        self.done = self.resumed_at = done
        self.total = total
        self.started = self.last_log = time.monotonic()

    def expect(self, total: int) -> None:
        self.total = self.total or total

    def __call__(self, chunk: bytes) -> None:
        self.out.write(chunk)
        self.hashers.update(chunk)
        self.done += len(chunk)
        now = time.monotonic()
        if now - self.last_log >= PROGRESS_EVERY_S:
            self.last_log = now
            log.info("%s", self.progress(now))

    write = __call__

    def progress(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-6)
        rate = (self.done - self.resumed_at) / elapsed
        mib = 1 << 20
        line = f"downloading {self.uri}: {self.done / mib:.1f}"
        if self.total:
            line += f" of {self.total / mib:.1f} MiB ({100 * self.done / self.total:.0f}%)"
        else:
            line += " MiB"
        line += f", {rate / mib:.1f} MiB/s"
        if self.total and rate > 0:
            line += f", ETA {max(self.total - self.done, 0) / rate:.0f} s"
        return line


def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            value = json.load(f)
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_json(path: str, value: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _stamp(info: ObjectInfo | dict) -> dict:
    if isinstance(info, dict):  # a stamp as read back, perhaps with more keys
        return {"version": info.get("version"), "size": info.get("size")}
    return {"version": info.version, "size": info.size}


@contextmanager
def _locked(path: str):
    """Two pods sharing a cache volume download the same file one after the other, not both into it."""
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def sha256_file(path: str, hashers: _Hashers | None = None) -> str:
    hashers = hashers or _Hashers(set())
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            hashers.update(chunk)
    return hashers.hexdigest("sha256") or ""


def cached_file_is_current(store: Store, dest: str, sha256: str, keep_unversioned: bool = False) -> bool:
    """With a sha256 the file is checked against it, offline. Without one, the store is asked
    (metadata only) whether the object is still the version the file came from. With
    ``keep_unversioned``, a file from a store that names no version is kept while it hashes as it
    did when it arrived."""
    if not os.path.isfile(dest):
        return False
    if sha256:
        if sha256_file(dest) == sha256:
            return True
        log.warning("cached %s does not match its sha256; downloading again", dest)
        return False
    kept = _read_json(dest + ".source.json")
    try:
        info = store.head()
    except SourceError as exc:
        if not kept.get("version"):
            raise
        # The store is down or refuses us now; the file is the last version it gave, complete
        # and checked then. Serving it beats not starting.
        log.warning("cannot ask the store whether %s is still current (%s); using the cached file", dest, exc)
        return True
    if kept.get("version") and _stamp(kept) == _stamp(info):
        return True
    if keep_unversioned and not info.version and kept.get("sha256"):
        # A web server names no version. The weights of an OpenVINO IR are fetched from one without
        # a sha256 (the spec's pins the .xml, whose cache folder this is): the copy that arrived
        # beside that .xml is kept while it still hashes as it did.
        if sha256_file(dest) == kept["sha256"]:
            return True
        log.warning("cached %s no longer has the sha256 it was downloaded with; downloading again", dest)
        return False
    log.info("cached %s is of another version of %s; downloading again", dest, store.uri)
    return False


def fetch(store: Store, sha256: str, dest: str, keep_unversioned: bool = False) -> str:
    """``dest`` holding the verified object; raises SourceError (ChecksumMismatch included).
    ``keep_unversioned``: see cached_file_is_current."""
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with _locked(dest + ".lock"):
        if cached_file_is_current(store, dest, sha256, keep_unversioned):
            log.info("using cached model %s", dest)
            return dest
        restarts, interruptions = 0, 0
        while True:
            info = store.head()
            try:
                how, actual = _download(store, info, sha256, dest)
                break
            except Interrupted as exc:
                interruptions += 1
                if interruptions > INTERRUPTIONS:
                    raise
                delay = BACKOFF_S * 2 ** (interruptions - 1)
                log.warning("%s; continuing in %.0f s (%d of %d)", exc, delay, interruptions, INTERRUPTIONS)
                time.sleep(delay)
            except (Changed, ChecksumMismatch) as exc:
                restarts += 1
                # A changed object, or a resumed file that hashes wrong (its first part may be of
                # another version): once more from the start, then give up.
                _discard(dest)
                if restarts == 2 or (isinstance(exc, ChecksumMismatch) and not getattr(exc, "resumed", False)):
                    raise
                log.warning("%s; downloading from the start", exc)
        _write_json(dest + ".source.json", {**_stamp(info), "sha256": actual})
    log.info("downloaded %s (%s bytes%s) to %s", store.uri, info.size or os.path.getsize(dest), how, dest)
    return dest


def _discard(dest: str) -> None:
    for path in (dest + ".partial", dest + ".partial.json"):
        if os.path.exists(path):
            os.unlink(path)


def _download(store: Store, info: ObjectInfo, sha256: str, dest: str) -> tuple[str, str]:
    """How it went (resumed or not) and the sha256 of the file that arrived."""
    partial, state = dest + ".partial", dest + ".partial.json"
    hashers = _Hashers(set(info.checksums))
    start = 0
    if os.path.exists(partial) and _read_json(state) == _stamp(info) and (info.version or sha256):
        start = os.path.getsize(partial)
        if info.size is not None and start > info.size:
            start = 0
    if start:
        sha256_file(partial, hashers)  # the hash goes on from the bytes already there
        log.info("resuming the download of %s at byte %d of %s", store.uri, start, info.size or "?")
    else:
        _write_json(state, _stamp(info))
    with open(partial, "ab" if start else "wb") as out:
        out.truncate(start)
        writer = _Writer(out, hashers, store.uri, start, info.size)
        store.copy_to(writer, start, info)
        out.flush()
        os.fsync(out.fileno())
    log.info("%s", writer.progress(time.monotonic()))
    size = os.path.getsize(partial)
    if info.size is not None and size != info.size:
        raise SourceError(f"{store.uri} ended after {size} of {info.size} bytes; the next start resumes it")
    for name, expected in info.checksums.items():
        actual = hashers.hexdigest(name)
        if actual is not None and actual != expected:
            exc = ChecksumMismatch(
                f"{store.uri} downloaded ({size} bytes) with {name} {actual} but the store says {expected}"
            )
            exc.resumed = bool(start)  # type: ignore[attr-defined]
            raise exc
    actual = hashers.hexdigest("sha256")
    if sha256 and actual != sha256:
        exc = ChecksumMismatch(
            f"{store.uri} downloaded ({size} bytes) with sha256 {actual} but MODELDEPLOY_MODEL_SHA256 expects "
            f"{sha256}; fix the checksum or the URI"
        )
        exc.resumed = bool(start)  # type: ignore[attr-defined]
        raise exc
    os.replace(partial, dest)
    os.unlink(state)
    return (f", resumed at byte {start}" if start else ""), actual or ""
