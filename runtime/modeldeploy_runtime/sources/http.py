"""http(s):// models: a GET, with a Range request to resume. Plain web servers name no version, so
a resumed file is only trusted through its sha256 (which http URIs require)."""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request

from .base import Changed, Interrupted, ObjectInfo, Sink, SourceError, Store

CHUNK = 1 << 20


class HttpStore(Store):
    def __init__(self, uri: str, timeout_s: float = 60.0) -> None:
        self.uri = uri
        self.timeout_s = timeout_s

    def head(self) -> ObjectInfo:
        # No request: some servers answer HEAD differently from GET (or not at all); the GET's
        # Content-Length gives the size.
        return ObjectInfo(size=None)

    def copy_to(self, sink: Sink, start: int, info: ObjectInfo) -> None:
        request = urllib.request.Request(self.uri)
        if start:
            request.add_header("Range", f"bytes={start}-")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:
                if start and resp.status != 206:
                    raise Changed(f"{self.uri} does not serve byte ranges; downloading from the start")
                length = resp.headers.get("Content-Length")
                if length is not None and hasattr(sink, "expect"):
                    sink.expect(start + int(length))
                while True:
                    try:
                        chunk = resp.read(CHUNK)
                    except (OSError, TimeoutError, http.client.HTTPException) as exc:
                        raise Interrupted(f"reading {self.uri} broke off: {exc}") from exc
                    if not chunk:
                        break
                    sink(chunk)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and start:
                raise Changed(f"{self.uri} refused the range from byte {start}") from exc
            raise SourceError(f"downloading {self.uri} failed: HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise SourceError(f"downloading {self.uri} failed: {reason}") from exc
