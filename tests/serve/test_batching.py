"""Micro-batching (``serve.batching``): queued queries run in groups, each request gets its own
answer or error, and concurrent HTTP requests get exactly the answers of single queries."""

from __future__ import annotations

import asyncio
import functools
import threading
import time

import numpy as np
import polars as pl
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from itemvec.query.embeddings import ItemEmbeddings  # noqa: E402
from itemvec.serve import batching  # noqa: E402
from itemvec.serve.batching import Batcher  # noqa: E402
from itemvec.serve.http import HotPaths, _plain_n, _plain_recommend, create_app  # noqa: E402
from itemvec.serve.state import ModelHolder  # noqa: E402
from itemvec.store.bundle import write_bundle  # noqa: E402
from itemvec.util.errors import UnknownItemError  # noqa: E402


def echo(payloads):
    return payloads


def answer(batcher: Batcher, key, payload, compute=echo):
    """One query through ``batcher`` from a fresh event loop; fails after 5 s, never hangs."""

    async def ask():
        return await asyncio.wait_for(batcher.submit(key, payload, compute), 5)

    return asyncio.run(ask())


def test_queued_queries_run_together_and_each_gets_its_answer():
    batcher = Batcher(max_batch=8)
    release = threading.Event()
    calls: list[list[int]] = []

    def hold(payloads):
        release.wait(5)
        return payloads

    def double(payloads):
        calls.append(list(payloads))
        return [p * 2 for p in payloads]

    async def scenario():
        first = asyncio.ensure_future(batcher.submit("hold", 0, hold))
        await asyncio.sleep(0.05)  # the thread now waits in ``hold``; the rest queue up
        rest = [asyncio.ensure_future(batcher.submit("double", i, double)) for i in range(1, 12)]
        await asyncio.sleep(0.05)
        release.set()
        return await first, await asyncio.gather(*rest)

    try:
        first, rest = asyncio.run(scenario())
    finally:
        batcher.close()
    assert first == 0 and rest == [2 * i for i in range(1, 12)]
    assert [len(c) for c in calls] == [8, 3]  # queued while the thread was held; max_batch 8
    assert batcher.largest == 8


def test_errors_reach_only_their_requests_and_a_crash_reaches_the_group():
    batcher = Batcher()

    def some_unknown(payloads):
        return [UnknownItemError(f"unknown item {p!r}") if p < 0 else p for p in payloads]

    def crash(payloads):
        raise RuntimeError("bug")

    async def scenario():
        good = await batcher.submit("a", 3, some_unknown)
        with pytest.raises(UnknownItemError, match="-1"):
            await batcher.submit("a", -1, some_unknown)
        with pytest.raises(RuntimeError, match="bug"):
            await batcher.submit("b", 1, crash)
        return good

    try:
        assert asyncio.run(scenario()) == 3
    finally:
        batcher.close()


def test_a_lone_request_waits_for_nothing():
    batcher = Batcher()

    async def one():
        began = time.perf_counter()
        await batcher.submit("k", 1, lambda payloads: payloads)
        return time.perf_counter() - began

    try:
        asyncio.run(one())  # starts the thread
        assert min(asyncio.run(one()) for _ in range(5)) < 0.05
    finally:
        batcher.close()


def test_max_batch_must_be_positive():
    with pytest.raises(ValueError, match="max_batch"):
        Batcher(max_batch=0)


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(3000, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    emb = ItemEmbeddings([f"i{i}" for i in range(3000)], vectors,
                         rng.normal(scale=0.5, size=3000).astype(np.float32), 0.1)
    return write_bundle(tmp_path_factory.mktemp("batching") / "model", emb, config={}, stats={})


@pytest.mark.parametrize("index", ["auto", "ivf"])  # exact matmul; FAISS, searched in groups
def test_concurrent_http_requests_get_the_answers_of_single_queries(catalogue, index):
    if index == "ivf":
        pytest.importorskip("faiss")
    holder = ModelHolder(catalogue, index=index)
    holder.load()
    app = create_app(holder)
    emb = holder.current().embeddings
    rng = np.random.default_rng(1)
    histories = [[f"i{j}" for j in rng.integers(3000, size=5)] + ["nope"] for _ in range(96)]
    items = [f"i{j}" for j in rng.integers(3000, size=96)]

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            recs = [client.post("/recommend", json={"history": h, "n": 7}) for h in histories]
            sims = [client.get(f"/similar/{i}", params={"n": 5}) for i in items]
            missing = client.get("/similar/nope")
            return await asyncio.gather(*recs, *sims, missing)

    answers = asyncio.run(scenario())
    app.state.batcher.close()
    for history, answer in zip(histories, answers[:96], strict=True):
        expected = emb.recommend(history, n=7)
        body = answer.json()
        assert body["items"] == list(expected.ids) and body["skipped"] == 1
        assert body["scores"] == [round(float(s), 6) for s in expected.scores]
    for item, answer in zip(items, answers[96:192], strict=True):
        ids, scores = emb.similar_items(item, n=5)
        assert answer.json()["items"] == list(ids)
        assert answer.json()["scores"] == [round(float(s), 6) for s in scores]
    if index == "ivf":  # the batched searches themselves, bit for bit
        for group in (items[:16], items[16:19]):
            for item, result in zip(group, emb.similar_items_many(group, n=5), strict=True):
                alone = emb.similar_items(item, n=5)
                assert list(result.ids) == list(alone.ids)
                assert result.scores.tobytes() == alone.scores.tobytes()
    assert answers[-1].status_code == 404 and "nope" in answers[-1].json()["error"]
    assert app.state.batcher.batches < 192  # some requests were answered together


def test_plain_queries_skip_the_framework_with_the_same_bytes(catalogue):
    """The hot paths (``HotPaths``) answer plain queries; one extra default-valued field sends
    the same query through FastAPI: status, headers and body must not differ."""
    holder = ModelHolder(catalogue)
    with TestClient(create_app(holder)) as client:
        pairs = [(client.get("/similar/i5?n=7"), client.get("/similar/i5?n=7&cold=calibrated")),
                 (client.get("/similar/i9"), client.get("/similar/i9?n=10&exclude=")),
                 (client.post("/recommend", json={"history": ["i1", "i2", "x"], "n": 4}),
                  client.post("/recommend", json={"history": ["i1", "i2", "x"], "n": 4,
                                                  "explain": False})),
                 (client.post("/recommend", json={"history": [], "filter_seen": False}),
                  client.post("/recommend", json={"history": [], "filter_seen": False,
                                                  "exclude": []}))]
        for fast, slow in pairs:
            assert fast.status_code == slow.status_code == 200
            assert fast.content == slow.content
            assert dict(fast.headers) == dict(slow.headers)
        # what the hot paths pass on is answered by the routes, as before
        assert client.get("/similar/nope").status_code == 404
        assert client.get("/similar/i1?n=0").status_code == 422
        assert client.get("/similar/i1?n=1001").status_code == 422
        assert client.post("/recommend", json={"history": ["i1"], "n": True}).status_code == 422
        assert client.post("/recommend", json={"history": "i1"}).status_code == 422
        assert client.post("/recommend", json={"history": [""]}).status_code == 422
        assert client.post("/recommend", content=b"{nope",
                           headers={"content-type": "application/json"}).status_code == 422


@pytest.mark.parametrize(("query", "n"), [(b"", 10), (b"n=7", 7), (b"n=1000", 1000),
                                          (b"n=1001", None), (b"n=0", None), (b"n=07", None),
                                          (b"n=5&n=6", None), (b"cold=include", None)])
def test_only_a_lone_n_is_plain(query, n):
    assert _plain_n(query) == n


@pytest.mark.parametrize(("body", "plain"), [
    (b'{"history": ["a"]}', (["a"], 10, True)),
    (b'{"history": [], "n": 3, "filter_seen": false}', ([], 3, False)),
    (b'{"history": ["a"], "n": 3.0}', None), (b'{"history": ["a"], "n": true}', None),
    (b'{"history": ["a"], "filter_seen": 1}', None), (b'{"history": [1]}', None),
    (b'{"history": ["a"], "where": {}}', None), (b'{"n": 3}', None), (b'[]', None),
    (b'{"history": ["' + b"x" * 257 + b'"]}', None)])
def test_only_bodies_the_model_accepts_unchanged_are_plain(body, plain):
    assert _plain_recommend(body) == plain


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_thread_is_replaced_and_close_can_restart():
    batcher = Batcher()

    def interrupt(payloads):
        raise SystemExit  # not an Exception: the thread dies without settling anyone

    async def scenario():
        lost = asyncio.ensure_future(batcher.submit("x", 1, interrupt))
        for _ in range(100):
            await asyncio.sleep(0.01)
            if batcher._thread is None or not batcher._thread.is_alive():
                break
        lost.cancel()
        return await batcher.submit("y", 2, lambda payloads: [p + 1 for p in payloads])

    try:
        assert asyncio.run(scenario()) == 3
        batcher.close()
        assert answer(batcher, "y", 4) == 4
    finally:
        batcher.close()


def test_an_id_with_a_newline_is_answered_as_the_route_answers_it(tmp_path):
    """Starlette's ``{item_id:path}`` is ``.*``, which stops at a newline: the route gives
    ``/similar/a%0Ab`` a 404 (and ``a%0A`` the item ``a``); the hot path must not answer it."""
    vectors = np.eye(3, 4, dtype=np.float32)
    emb = ItemEmbeddings(["a\nb", "a", "a\n"], vectors, np.zeros(3, np.float32), 0.1)
    holder = ModelHolder(write_bundle(tmp_path / "model", emb, config={}, stats={}))
    with TestClient(create_app(holder)) as client:
        assert client.get("/similar/a%0Ab").status_code == 404
        fast = client.get("/similar/a%0A")
        assert fast.status_code == 200
        assert fast.content == client.get("/similar/a%0A?n=10&cold=calibrated").content
        assert "a" not in fast.json()["items"] and "a\n" in fast.json()["items"]


class Interrupt(BaseException):
    """Not an ``Exception``: it ends the batching thread."""


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_thread_that_dies_settles_every_query_it_took():
    """A run raising a BaseException ends the thread, but the requests it had drained (its own
    group and the groups after it) get an error instead of waiting forever."""
    batcher = Batcher()
    started, release = threading.Event(), threading.Event()

    def blocker(payloads):
        started.set()
        release.wait(5)
        return payloads

    def interrupt(payloads):
        raise Interrupt()

    async def scenario():
        first = asyncio.ensure_future(batcher.submit("a", 0, blocker))
        await asyncio.to_thread(started.wait, 5)
        doomed = [asyncio.ensure_future(batcher.submit("b", i, interrupt)) for i in range(2)]
        after = asyncio.ensure_future(batcher.submit("c", 9, lambda payloads: payloads))
        await asyncio.sleep(0.05)
        release.set()
        outcomes = await asyncio.wait_for(
            asyncio.gather(first, *doomed, after, return_exceptions=True), 5)
        return outcomes, await asyncio.wait_for(batcher.submit("d", 1, lambda p: p), 5)

    try:
        (first, *doomed, after), later = asyncio.run(scenario())
    finally:
        batcher.close()
    assert first == 0 and later == 1
    assert all(isinstance(d, RuntimeError) for d in doomed)
    assert after == 9 or isinstance(after, RuntimeError)


def test_a_failing_thread_cap_does_not_stop_the_batching_thread(monkeypatch):
    """threadpoolctl failing (an unusual BLAS or libc) must leave the thread serving: a thread
    that dies before its first query leaves every request waiting forever."""

    def broken(*_args, **_kwargs):
        raise OSError("no such library")

    monkeypatch.setattr(batching, "threadpool_limits", broken)
    batcher = Batcher()
    try:
        assert answer(batcher, "k", 3) == 3
    finally:
        batcher.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_closing_after_the_thread_died_leaves_no_stop_for_the_next_thread():
    """``close`` of a batcher whose thread already ended must not leave its stop in the queue:
    the next thread would take it and end, and the query queued behind it would wait forever."""
    batcher = Batcher()

    def interrupt(payloads):
        raise Interrupt()

    async def die():
        with pytest.raises(RuntimeError):
            await asyncio.wait_for(batcher.submit("x", 1, interrupt), 5)

    asyncio.run(die())
    for _ in range(100):
        if batcher._thread is None or not batcher._thread.is_alive():
            break
        time.sleep(0.01)
    batcher.close()
    try:
        assert answer(batcher, "y", 2) == 2
    finally:
        batcher.close()


def test_a_repeated_content_type_is_read_as_the_route_reads_it(catalogue):
    """Starlette reads the first Content-Type: a body sent as text/plain, then
    application/json, is not JSON to the route (422), so the hot path must not answer it."""
    holder = ModelHolder(catalogue)
    with TestClient(create_app(holder)) as client:
        for first, second, status in (("text/plain", "application/json", 422),
                                      ("application/json", "text/plain", 200)):
            answer = client.post("/recommend", content=b'{"history": ["i1"]}',
                                 headers=[("content-type", first), ("content-type", second)])
            assert answer.status_code == status, (first, second)


def test_without_orjson_a_lone_surrogate_is_left_to_the_route(monkeypatch):
    """The stdlib parser accepts ``"\\ud800"`` where orjson and pydantic refuse it (the route
    answers 422): without orjson the hot path must not answer such a body either."""
    from itemvec.serve import http

    monkeypatch.setattr(http, "orjson", None)
    assert _plain_recommend(b'{"history": ["i1"]}') == (["i1"], 10, True)
    assert _plain_recommend(b'{"history": ["\\ud800"]}') is None
    assert _plain_recommend(b'{"history": ["i1", "x\\udc80y"]}') is None


EDGE_IDS = ["i0", "a/b", "a b", "a+b", "é", "a\nb", "a", "x%2Fy", "i8", "i9"]


@pytest.fixture(scope="module")
def edge_catalogue(tmp_path_factory):
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(len(EDGE_IDS), 4)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    table = pl.DataFrame({"item_id": EDGE_IDS[::-1],
                          "title": [None if i == 3 else f"T{i}" for i in range(len(EDGE_IDS))]})
    emb = ItemEmbeddings(EDGE_IDS, vectors, rng.normal(size=len(EDGE_IDS)).astype(np.float32),
                         0.1, item_table=table, n_warm=7)
    return write_bundle(tmp_path_factory.mktemp("edges") / "model", emb, config={}, stats={})


SIMILAR_EDGES = ["/similar/a%0Ab", "/similar/a%0A", "/similar/a/b", "/similar/a%2Fb",
                 "/similar/a%20b", "/similar/a+b", "/similar/%C3%A9", "/similar/",
                 "/similar/i0?n=10&n=5", "/similar/i0?n=010", "/similar/i0?n=", "/similar/i0?N=5",
                 "/similar/i0?n=5&filter=x", "/similar/i0/", "/similar/i0?", "/similar/x%2Fy",
                 "/similar/x%252Fy", "/similar/i0?n=3;", "/similar/i0?n%3D3", "/similar/i9?n=1000",
                 "/similar/nope"]
RECOMMEND_EDGES = [
    b'{"history":["i0"],"history":["i9"]}', b'{"history":["i0"],"n":10.0}',
    b'{"history":["i0"],"n":true}', b'{"history":["i0"],"n":100000}',
    b'{"history":["i0"],"filter_seen":"yes"}', b'{"history":["i0"],"zzz":1}',
    b'{"history":["i0\xff"]}', b'\xef\xbb\xbf{"history":["i0"]}', b'{"history":[]}',
    b'{"history":["i0","nope","nope2"]}', b'{"history":["\\ud800"]}', b'{"history":["i0"]} x',
    b'{"history":["i0"],"n":-0}', b'{"history":["i0"],"n":NaN}', b'{"history":null}',
    b'{"history":["i0"],"filter_seen":null}', b'{"history":["\xc3\xa9", "a\\nb"], "n": 1000}',
    b'{"history":["i0"],"n":3,"filter_seen":false}', b'']


def test_the_hot_paths_answer_edge_inputs_as_the_routes_do(edge_catalogue, monkeypatch):
    """Status, headers and body bytes with the hot paths on and off, for odd ids, query
    strings, bodies and content types (cold items and labels in the answers)."""

    async def routes_only(self, scope, receive, send):
        await self.app(scope, receive, send)

    holder = ModelHolder(edge_catalogue)
    with TestClient(create_app(holder)) as client:
        requests = [functools.partial(client.get, path) for path in SIMILAR_EDGES]
        requests += [functools.partial(client.post, "/recommend", content=body,
                                       headers={"content-type": kind})
                     for body in RECOMMEND_EDGES
                     for kind in ("application/json", "application/json; charset=utf-8")]
        fast = [request() for request in requests]
        with monkeypatch.context() as patch:
            patch.setattr(HotPaths, "__call__", routes_only)
            slow = [request() for request in requests]
    assert sum(answer.status_code == 200 for answer in fast) > 20
    for request, hot, route in zip(requests, fast, slow, strict=True):
        assert (hot.status_code, hot.content, dict(hot.headers)) == (
            route.status_code, route.content, dict(route.headers)), request.args


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_query_queued_while_the_thread_dies_is_answered():
    """A query submitted while the dying thread still looks alive starts no thread of its own;
    it must not wait for the next request to start one."""
    batcher = Batcher()

    async def scenario():
        loop = asyncio.get_running_loop()
        box = {}

        def submit_another():
            box["next"] = asyncio.ensure_future(batcher.submit("d", 7, lambda p: p))

        def interrupt(payloads):
            loop.call_soon_threadsafe(submit_another)
            for _ in range(500):
                if not batcher._jobs.empty():
                    break
                time.sleep(0.01)
            raise Interrupt()

        with pytest.raises(RuntimeError):
            await asyncio.wait_for(batcher.submit("b", 1, interrupt), 5)
        return await asyncio.wait_for(box["next"], 5)

    try:
        assert asyncio.run(scenario()) == 7
    finally:
        batcher.close()


def test_hot_answers_need_the_key_carry_cors_and_keep_the_body_cap(catalogue):
    key = "k" * 32
    holder = ModelHolder(catalogue)
    app = create_app(holder, api_key=key, cors_origins=["http://app"], max_body=300)
    origin = {"origin": "http://app"}
    with TestClient(app) as client:
        assert client.get("/similar/i1", headers=origin).status_code == 401
        assert client.post("/recommend", json={"history": ["i1"]}).status_code == 401
        answer = client.get("/similar/i1", headers={"x-api-key": key, **origin})
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == "http://app"
        answer = client.post("/recommend", json={"history": ["i1"]},
                             headers={"authorization": f"Bearer {key}", **origin})
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == "http://app"

        def chunked():  # no Content-Length: the cap counts what arrives
            yield b'{"history":['
            for _ in range(2000):
                yield b'"i1",' * 50

        for body in (b'{"history":[' + b'"i1",' * 100 + b'"i2"]}', chunked()):
            answer = client.post("/recommend", content=body,
                                 headers={"x-api-key": key, "content-type": "application/json"})
            assert answer.status_code == 413 and "over 300 bytes" in answer.json()["error"]


def test_close_called_on_the_batching_thread_itself_stops_it_without_raising():
    """A finaliser (the app's lifespan collected by the GC) may run ``close`` on the batching
    thread; joining itself would raise there. The thread stops after its group instead."""
    batcher = Batcher()
    errors = []

    def close_from_inside(payloads):
        try:
            batcher.close()
        except RuntimeError as exc:  # pragma: no cover - the failure this test guards
            errors.append(exc)
        return payloads

    assert answer(batcher, "x", 1, close_from_inside) == 1
    assert errors == []
    try:
        assert answer(batcher, "y", 2) == 2  # a fresh thread answers later queries
    finally:
        batcher.close()
