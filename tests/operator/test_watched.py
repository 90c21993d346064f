"""The watch cache a reconcile reads: our own writes count until the watch has delivered them,
and no longer (watched.py)."""

from __future__ import annotations

import threading

import pytest
from modeldeploy_operator import watched as w
from modeldeploy_operator.resync import Resync
from modeldeploy_operator.watched import INDEX_OF_KIND, Watched

NS, NAME = "ns", "m"


def obj(version: str, uid: str = "u1", **extra) -> dict:
    return {"metadata": {"namespace": NS, "name": NAME, "uid": uid, "resourceVersion": version}, **extra}


def make(**cached) -> tuple[Watched, dict]:
    indexes = {index: {} for index in INDEX_OF_KIND.values()}
    for kind, body in cached.items():
        indexes[INDEX_OF_KIND[kind]][(NS, NAME)] = [body]
    return Watched(indexes), indexes


def test_reads_what_the_watch_delivered():
    cache, _ = make(Deployment=obj("5"))
    assert cache.get("Deployment", NS, NAME)["metadata"]["resourceVersion"] == "5"
    assert cache.get("Service", NS, NAME) is None


def test_our_write_is_read_until_the_watch_has_it():
    cache, indexes = make(Deployment=obj("5"))
    cache.wrote("Deployment", obj("7", applied=True))
    assert cache.get("Deployment", NS, NAME)["applied"]  # the watch is behind
    indexes[INDEX_OF_KIND["Deployment"]][(NS, NAME)] = [obj("8")]  # the controller wrote after us
    assert cache.get("Deployment", NS, NAME)["metadata"]["resourceVersion"] == "8"
    indexes[INDEX_OF_KIND["Deployment"]][(NS, NAME)] = [obj("6")]  # the entry is gone: no going back
    assert cache.get("Deployment", NS, NAME)["metadata"]["resourceVersion"] == "6"


def test_a_delete_hides_the_cached_copy_until_the_watch_sees_it_gone():
    cache, indexes = make(NetworkPolicy=obj("5"))
    cache.wrote("NetworkPolicy", obj("5"), deleted=True)
    assert cache.get("NetworkPolicy", NS, NAME) is None
    indexes[INDEX_OF_KIND["NetworkPolicy"]][(NS, NAME)] = [obj("9", uid="u2")]  # made again by someone
    assert cache.get("NetworkPolicy", NS, NAME)["metadata"]["uid"] == "u2"


def test_an_unanswered_write_expires(monkeypatch: pytest.MonkeyPatch):
    cache, _ = make(Deployment=obj("5"))
    cache.wrote("Deployment", obj("7"))
    now = w.time.monotonic()
    monkeypatch.setattr(w.time, "monotonic", lambda: now + w.WRITTEN_TTL_S + 1)
    assert cache.get("Deployment", NS, NAME)["metadata"]["resourceVersion"] == "5"


@pytest.mark.parametrize(
    ("cached", "written", "newer"),
    [("7", "7", True), ("8", "7", True), ("6", "7", False), ("b", "a", False), ("a", "a", True)],
)
def test_versions_compare_as_numbers_where_they_are(cached, written, newer):
    assert w.at_least(obj(cached), obj(written)) is newer


def test_the_resource_body_is_a_copy_a_reconcile_may_change():
    cache, indexes = make(ModelDeployment=obj("3", status={"phase": "Ready"}))
    body = cache.model_deployment(NS, NAME)
    body["status"] = {}
    assert indexes[INDEX_OF_KIND["ModelDeployment"]][(NS, NAME)][0]["status"] == {"phase": "Ready"}


def test_the_resync_waits_until_the_caches_are_filled():
    ready, seen = threading.Event(), []
    resync = Resync(lambda: [(NS, NAME)], lambda ns, n: seen.append(n), 0.01, ready)
    resync.start()
    try:
        threading.Event().wait(0.1)
        assert seen == []
        ready.set()
        for _ in range(100):
            if seen:
                break
            threading.Event().wait(0.02)
        assert seen
    finally:
        resync.stop()


def test_the_watch_delivering_our_write_drops_it_so_a_later_delete_by_hand_shows():
    cache, indexes = make()
    cache.wrote("Service", obj("7"))  # we created it; the watch has not delivered it yet
    assert cache.get("Service", NS, NAME) is not None
    cache.seen("Service", obj("7"))  # delivered; then deleted by hand (kopf drops it from the index)
    assert cache.get("Service", NS, NAME) is None


def test_a_resource_gone_from_the_watch_is_gone_whatever_we_wrote_to_it():
    cache, indexes = make(ModelDeployment=obj("3"))
    cache.wrote("ModelDeployment", obj("4", status={"phase": "Ready"}))
    assert cache.model_deployment(NS, NAME)["status"] == {"phase": "Ready"}
    del indexes[INDEX_OF_KIND["ModelDeployment"]][(NS, NAME)]
    assert cache.model_deployment(NS, NAME) is None
