"""The download of sources/download.py with a store held in memory: the store's own checksum, a
partial file of another version, progress lines. What real stores add is in test_runtime_sources.py."""

from __future__ import annotations

import hashlib
import json
import logging

import pytest
from modeldeploy_runtime.sources.base import Changed, Interrupted, ObjectInfo, SourceError, Store
from modeldeploy_runtime.sources.download import ChecksumMismatch, fetch


class MemoryStore(Store):
    def __init__(self, body: bytes, version: str = "v1", checksums: dict | None = None) -> None:
        self.uri, self.body, self.version = "mem://b/model.onnx", body, version
        self.checksums = {"sha256": hashlib.sha256(body).hexdigest()} if checksums is None else checksums
        self.reads: list[int] = []

    def head(self) -> ObjectInfo:
        return ObjectInfo(len(self.body), self.version, dict(self.checksums))

    def copy_to(self, sink, start, info) -> None:
        if info.version != self.version:
            raise Changed("changed")
        self.reads.append(start)
        for i in range(start, len(self.body), 1000):
            sink(self.body[i : i + 1000])


BODY = bytes(range(256)) * 40


def test_a_file_that_differs_from_the_stores_checksum_is_refused_and_dropped(tmp_path):
    store = MemoryStore(BODY, checksums={"sha256": "0" * 64})
    dest = tmp_path / "models" / "model.onnx"
    with pytest.raises(ChecksumMismatch, match="the store says 0000"):
        fetch(store, "", str(dest))
    assert not dest.exists() and not (tmp_path / "models" / "model.onnx.partial").exists()


def test_a_partial_file_of_the_same_version_is_continued(tmp_path):
    store = MemoryStore(BODY)
    dest = tmp_path / "model.onnx"
    (tmp_path / "model.onnx.partial").write_bytes(BODY[:3000])
    (tmp_path / "model.onnx.partial.json").write_text(json.dumps({"version": "v1", "size": len(BODY)}))
    fetch(store, hashlib.sha256(BODY).hexdigest(), str(dest))
    assert store.reads == [3000] and dest.read_bytes() == BODY


def test_a_partial_file_of_another_version_is_started_again(tmp_path):
    store = MemoryStore(BODY, version="v2")
    dest = tmp_path / "model.onnx"
    (tmp_path / "model.onnx.partial").write_bytes(b"x" * 3000)
    (tmp_path / "model.onnx.partial.json").write_text(json.dumps({"version": "v1", "size": len(BODY)}))
    fetch(store, "", str(dest))
    assert store.reads == [0] and dest.read_bytes() == BODY


def test_a_resumed_file_that_hashes_wrong_is_downloaded_once_more_from_the_start(tmp_path):
    store = MemoryStore(BODY)
    dest = tmp_path / "model.onnx"
    (tmp_path / "model.onnx.partial").write_bytes(b"x" * 3000)  # same version named, wrong bytes
    (tmp_path / "model.onnx.partial.json").write_text(json.dumps({"version": "v1", "size": len(BODY)}))
    fetch(store, hashlib.sha256(BODY).hexdigest(), str(dest))
    assert store.reads == [3000, 0] and dest.read_bytes() == BODY


def test_progress_names_bytes_rate_and_eta(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr("modeldeploy_runtime.sources.download.PROGRESS_EVERY_S", 0.0)
    with caplog.at_level(logging.INFO, logger="modeldeploy_runtime.sources"):
        fetch(MemoryStore(BODY), "", str(tmp_path / "model.onnx"))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("downloading mem://")]
    assert lines and all("MiB/s" in line and "ETA" in line and "%" in line for line in lines)


class DownStore(MemoryStore):
    def head(self) -> ObjectInfo:
        raise SourceError("unreachable")


def test_a_cached_file_is_used_when_the_store_cannot_be_asked(tmp_path):
    dest = tmp_path / "model.onnx"
    fetch(MemoryStore(BODY), "", str(dest))
    assert fetch(DownStore(BODY), "", str(dest)) == str(dest)
    with pytest.raises(SourceError, match="unreachable"):
        fetch(DownStore(BODY), "", str(tmp_path / "other" / "model.onnx"))


class FlakyStore(MemoryStore):
    """Breaks off after ``cut`` bytes, ``times`` times."""

    def __init__(self, body: bytes, cut: int, times: int) -> None:
        super().__init__(body)
        self.cut, self.times = cut, times

    def copy_to(self, sink, start, info) -> None:
        if self.times:
            self.times -= 1
            self.reads.append(start)
            sink(self.body[start : start + self.cut])
            raise Interrupted("connection reset")
        super().copy_to(sink, start, info)


def test_a_transfer_that_breaks_off_goes_on_in_the_same_process(tmp_path, monkeypatch):
    monkeypatch.setattr("modeldeploy_runtime.sources.download.BACKOFF_S", 0.0)
    store = FlakyStore(BODY, cut=3000, times=2)
    dest = tmp_path / "model.onnx"
    fetch(store, hashlib.sha256(BODY).hexdigest(), str(dest))
    assert store.reads == [0, 3000, 6000] and dest.read_bytes() == BODY


def test_a_transfer_that_keeps_breaking_off_fails_and_keeps_what_arrived(tmp_path, monkeypatch):
    monkeypatch.setattr("modeldeploy_runtime.sources.download.BACKOFF_S", 0.0)
    store = FlakyStore(BODY, cut=100, times=99)
    with pytest.raises(Interrupted):
        fetch(store, "", str(tmp_path / "model.onnx"))
    assert len(store.reads) == 6  # the first try and five more
    assert (tmp_path / "model.onnx.partial").stat().st_size == 600  # for the next start to resume


@pytest.mark.parametrize("keep", [False, True], ids=["model", "ir-weights"])
def test_a_file_from_a_store_without_versions_is_kept_only_when_asked(tmp_path, keep):
    """A web server names no version: a model (pinned by its own sha256 there) is fetched again
    without one; an IR's .bin, fetched beside a pinned .xml, is kept while it hashes as it arrived."""
    store = MemoryStore(BODY, version="", checksums={})
    dest = tmp_path / "model.bin"
    fetch(store, "", str(dest), keep_unversioned=keep)
    fetch(store, "", str(dest), keep_unversioned=keep)
    assert store.reads == ([0] if keep else [0, 0])
    dest.write_bytes(b"changed on disk")
    fetch(store, "", str(dest), keep_unversioned=keep)
    assert dest.read_bytes() == BODY and len(store.reads) == (2 if keep else 3)
