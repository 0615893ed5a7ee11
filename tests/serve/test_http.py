"""The HTTP API: contract shapes, planted-category answers, 4xx errors, security, atomic reload,
the attacks of benchmarks/reliability.md, and one real ``itemvec serve`` subprocess."""

from __future__ import annotations

import gc
import http.client
import json
import re
import shutil
import signal
import socket
import sys
import threading
import time
import types
import weakref
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

import uvicorn  # noqa: E402
from conftest import free_port, running_server  # noqa: E402
from fastapi import APIRouter  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from itemvec.query.embeddings import ItemEmbeddings  # noqa: E402
from itemvec.serve.http import create_app  # noqa: E402
from itemvec.serve.state import ModelHolder, resolve_under  # noqa: E402
from itemvec.store.bundle import write_bundle  # noqa: E402
from itemvec.util.errors import ItemvecError  # noqa: E402

API_KEY = "k" * 32
JSON = {"content-type": "application/json"}
STRICT_INT = "n: Input should be a valid integer"


@pytest.fixture(scope="module")
def models_root(trained, shop, shop_config, tmp_path_factory) -> Path:
    """models/current: the shop model with its item table; models/other: same, reversed ids."""
    root = tmp_path_factory.mktemp("models")
    emb = trained.embeddings
    current = ItemEmbeddings(emb.item_ids, emb.vectors, emb.item_bias, emb.temperature,
                             emb.query, item_table=shop.items)
    write_bundle(root / "current", current, config=shop_config.to_dict(), stats=trained.stats,
                 cooccurrence=trained.cooccurrence, item_counts=trained.item_counts)
    other = ItemEmbeddings(emb.item_ids[:50], emb.vectors[:50], emb.item_bias[:50],
                           emb.temperature, emb.query)
    write_bundle(root / "other", other, config=shop_config.to_dict(), stats={})
    return root


@pytest.fixture()
def client(models_root):
    holder = ModelHolder(models_root / "current")
    with TestClient(create_app(holder)) as client:
        yield client


@pytest.fixture()
def reloadable(models_root):
    """A client that may reload (``--allow-reload``) as often as it likes."""
    holder = ModelHolder(models_root / "current")
    with TestClient(create_app(holder, allow_reload=True, reload_interval=0)) as client:
        yield client


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    """root/model: 6 items, two of whose ids hold '/', trained from a file at an absolute path."""
    root = tmp_path_factory.mktemp("tiny")
    vectors = np.eye(6, 4, dtype=np.float32) + np.float32(0.1)
    vectors[1] = vectors[0] + np.float32(0.01)  # cat/a's nearest neighbour is i0
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    emb = ItemEmbeddings(["i0", "cat/a", "x/y/z", "i3", "i4", "i5"], vectors,
                         np.zeros(6, np.float32), 0.1)
    write_bundle(root / "model", emb, config={},
                 stats={"source": "/srv/secret-dir/events.csv", "events": 10})
    return root


def test_health_and_info(client):
    response = client.get("/health")
    assert response.status_code == 200 and response.json()["status"] == "ok"
    info = client.get("/info").json()
    assert info["items"] == 400 and info["dim"] == 64 and info["text_search"] is True
    assert "category" in info["item_columns"]


def test_similar_returns_the_same_category(client, categories):
    response = client.get("/similar/i5", params={"n": 10})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"items", "scores", "cold", "labels"} and len(body["items"]) == 10
    assert body["cold"] == [False] * 10  # no item table cold items in this model
    assert "i5" not in body["items"]
    assert np.mean([categories[i] == categories["i5"] for i in body["items"]]) >= 0.8
    assert body["scores"] == sorted(body["scores"], reverse=True)


def test_similar_filters(client, categories):
    body = client.get("/similar/i5", params={"n": 5, "where": "category:cat001",
                                             "exclude": ["i1"]}).json()
    assert len(body["items"]) == 5 and all(categories[i] == "cat001" for i in body["items"])
    batch = client.post("/similar", json={"items": ["i5", "i6"], "n": 3,
                                          "allowed": ["i1", "i2", "i3", "i4"]}).json()
    assert [r["item"] for r in batch["results"]] == ["i5", "i6"]
    assert all(set(r["items"]) <= {"i1", "i2", "i3", "i4"} for r in batch["results"])


def test_recommend_shape_new_user_and_unknown_items(client, categories):
    history = ["i5", "never-seen"]
    body = client.post("/recommend", json={"history": history, "n": 10}).json()
    assert set(body) >= {"items", "scores"} and len(body["items"]) == 10
    assert body["skipped"] == 1 and "i5" not in body["items"]
    assert np.mean([categories[i] == categories["i5"] for i in body["items"]]) >= 0.6
    cold = client.post("/recommend", json={"history": [], "n": 3}).json()
    assert len(cold["items"]) == 3  # a visitor with no known items gets popular items
    explained = client.post("/recommend", json={"history": ["i5"], "n": 2, "explain": True})
    parts = explained.json()["explanations"]
    assert len(parts) == 2 and parts[0]["history"][0]["item_id"] == "i5"
    batch = client.post("/recommend/batch", json={"histories": [["i5"], ["i6", "i7"]], "n": 4})
    assert [len(r["items"]) for r in batch.json()["results"]] == [4, 4]


def test_batch_rows_shorter_than_n_carry_no_padding(client):
    """The library pads batch rows to n ("" / -inf); the API returns only real results."""
    batch = client.post("/similar", json={"items": ["i5", "i1"], "n": 10,
                                          "allowed": ["i1", "i2", "i3"]})
    assert batch.status_code == 200
    assert [sorted(r["items"]) for r in batch.json()["results"]] == [["i1", "i2", "i3"],
                                                                      ["i2", "i3"]]
    body = client.post("/recommend/batch", json={"histories": [["i1", "nope"], []], "n": 5,
                                                  "allowed": ["i1", "i2"]}).json()
    assert [r["items"] for r in body["results"]][0] == ["i2"]
    assert sorted(body["results"][1]["items"]) == ["i1", "i2"]
    assert [r["skipped"] for r in body["results"]] == [1, 0]
    assert all(len(r["scores"]) == len(r["items"]) for r in body["results"])


def test_search_item_embedding_and_explain(client, categories, trained):
    body = client.get("/search", params={"q": "cat003", "n": 10}).json()
    assert np.mean([categories[i] == "cat003" for i in body["items"]]) >= 0.8
    assert body["matches"][0]["item_id"]
    vector = trained.embeddings.vector("i9").tolist()
    assert client.post("/search", json={"vector": vector, "n": 1}).json()["items"] == ["i9"]
    assert len(client.post("/search", json={"item": "i9", "n": 2}).json()["items"]) == 2
    item = client.get("/items/i9").json()
    assert len(item["embedding"]) == 64 and item["attributes"]["category"] == categories["i9"]
    explanation = client.post("/explain", json={"history": ["i5", "i6"], "item": "i7"}).json()
    assert len(explanation["history"]) == 2 and "pmi" in explanation["history"][0]


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "text"), [
    ("get", "/similar/nope", {}, 404, "unknown item 'nope'"),
    ("get", "/items/nope", {}, 404, "unknown item"),
    ("post", "/explain", {"json": {"history": [], "item": "nope"}}, 404, "unknown item"),
    ("get", "/similar/i5", {"params": {"n": 0}}, 422, "n: Input should be greater"),
    ("get", "/similar/i5", {"params": {"n": 5000}}, 422, "n: Input should be less"),
    ("get", "/similar/i5", {"params": {"where": "nocolon"}}, 422, "column:value"),
    ("get", "/similar/i5", {"params": {"where": "colour:red"}}, 400, "unknown item-table column"),
    ("post", "/recommend", {"json": {"history": ["i1"] * 1001}}, 422, "at most 1000"),
    ("post", "/recommend", {"json": {"history": "i1"}}, 422, "history"),
    ("post", "/recommend", {"json": {"history": [], "colour": 1}}, 422, "colour"),
    ("post", "/recommend", {"content": b"{not json", "headers": {
        "content-type": "application/json"}}, 422, "invalid request"),
    ("post", "/recommend", {"content": b"x" * (1 << 20 + 1)}, 413, "request body over"),
    ("post", "/search", {"json": {"vector": [1.0, 2.0]}}, 422, "vector has 2 values"),
    ("post", "/search", {"json": {"text": "a", "item": "i1"}}, 422, "exactly one of"),
    ("get", "/search", {"params": {"q": "x" * 501}}, 422, "q:"),
    ("get", "/nowhere", {}, 404, "Not Found"),
    ("post", "/recommend", {"json": {"history": [], "n": True}}, 422, STRICT_INT),
    ("post", "/recommend", {"json": {"history": [], "n": 2.0}}, 422, STRICT_INT),
    ("post", "/recommend", {"json": {"history": [], "explain": 1}}, 422, "explain"),
    ("post", "/similar", {"json": {"items": ["i1"], "n": "3"}}, 422, STRICT_INT),
    ("post", "/search", {"json": {"vector": [True] * 64}}, 422, "vector.0"),
    ("post", "/search", {"content": b'{"vector": [NaN]}', "headers": JSON}, 422, "vector.0"),
])
def test_bad_requests_get_clear_4xx_json(client, method, path, kwargs, status, text):
    response = getattr(client, method)(path, **kwargs)
    assert response.status_code == status
    assert text in response.json()["error"]


def test_chunked_body_over_the_limit_is_413(models_root):
    app = create_app(ModelHolder(models_root / "current"), max_body=1000)
    with TestClient(app) as client:
        def chunks():
            for _ in range(10):
                yield b" " * 500

        response = client.post("/recommend", content=chunks(),
                               headers={"content-type": "application/json"})
        assert response.status_code == 413


def test_api_key_required_except_health_and_cors_off(models_root):
    app = create_app(ModelHolder(models_root / "current"), api_key=API_KEY)
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
        page = client.get("/")  # the explorer page is public; the data it fetches is not
        assert page.status_code in (200, 404) and page.status_code != 401
        assert client.get("/map.json").status_code == 401
        assert client.get("/similar/i5").status_code == 401
        assert client.get("/similar/i5", headers={"X-API-Key": "k" * 31}).status_code == 401
        assert client.get("/similar/i5", headers={"X-API-Key": API_KEY}).status_code == 200
        ok = client.get("/docs", headers={"Authorization": f"Bearer {API_KEY}"})
        assert ok.status_code == 200
        cors = client.get("/health", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in cors.headers


def test_cors_only_for_configured_origins(models_root):
    app = create_app(ModelHolder(models_root / "current"), cors_origins=["http://shop.example"])
    with TestClient(app) as client:
        good = client.get("/health", headers={"Origin": "http://shop.example"})
        bad = client.get("/health", headers={"Origin": "http://evil.example"})
        assert good.headers.get("access-control-allow-origin") == "http://shop.example"
        assert "access-control-allow-origin" not in bad.headers


def test_reload_paths_cannot_escape_the_models_root(reloadable, models_root, tmp_path):
    client = reloadable
    outside = tmp_path / "outside"
    shutil.copytree(models_root / "other", outside)
    (models_root / "link").symlink_to(outside, target_is_directory=True)
    for path in ("../outside", str(outside), "link", "/etc"):
        response = client.post("/admin/reload", json={"path": path})
        assert response.status_code == 400 and "outside the models root" in response.json()["error"]
    with pytest.raises(Exception, match="outside"):
        resolve_under(models_root, "current/../../x")
    assert client.get("/health").json()["items"] == 400  # still serving


def test_reload_swaps_models_without_failing_requests(models_root):
    holder = ModelHolder(models_root / "current")
    with TestClient(create_app(holder, allow_reload=True, reload_interval=0)) as client:
        failures, done = [], threading.Event()

        def hammer():
            while not done.is_set():
                response = client.post("/recommend", json={"history": ["i1", "i2"], "n": 5})
                if response.status_code != 200 or len(response.json()["items"]) != 5:
                    failures.append(response.status_code)

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        for path in ("other", "current", "other"):
            response = client.post("/admin/reload", json={"path": path})
            assert response.status_code == 200
        done.set()
        for t in threads:
            t.join()
        assert failures == []
        assert client.get("/health").json()["items"] == 50
        broken = models_root / "broken"
        broken.mkdir(exist_ok=True)
        response = client.post("/admin/reload", json={"path": "broken"})
        assert response.status_code == 400
        assert response.json()["error"] == "no itemvec bundle at 'broken' under the models root"
        assert client.get("/health").json()["items"] == 50  # the old model keeps serving


def test_explorer_router_is_mounted_when_present(models_root, monkeypatch):
    router = APIRouter()

    @router.get("/")
    def page():
        return {"page": "explorer"}

    module = types.ModuleType("itemvec.serve.explorer")
    module.router = router
    monkeypatch.setitem(sys.modules, "itemvec.serve.explorer", module)
    with TestClient(create_app(ModelHolder(models_root / "current"))) as client:
        assert client.get("/").json() == {"page": "explorer"}


def test_itemvec_serve_subprocess(models_root, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(API_KEY + "\n")
    headers = {"X-API-Key": API_KEY}
    with running_server(models_root / "current", "--api-key-file", str(key_file),
                        log=tmp_path / "serve.log") as (process, base):
        similar = httpx.get(f"{base}/similar/i5", params={"n": 10}, headers=headers).json()
        assert len(similar["items"]) == 10
        assert httpx.get(f"{base}/similar/nope", headers=headers).status_code == 404
        recommended = httpx.post(f"{base}/recommend", json={"history": ["a", "i5"], "n": 10},
                                 headers=headers).json()
        assert len(recommended["items"]) == 10 and recommended["skipped"] == 1
        assert httpx.get(f"{base}/similar/i5").status_code == 401
        reloaded = httpx.post(f"{base}/admin/reload", json={}, headers=headers)
        assert reloaded.status_code == 200 and reloaded.json()["reloads"] == 2
        too_soon = httpx.post(f"{base}/admin/reload", json={}, headers=headers)
        assert too_soon.status_code == 429 and too_soon.headers["retry-after"] in ("1", "2")
        before = httpx.get(f"{base}/info", headers=headers).json()["loaded_at"]
        time.sleep(1.1)
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while httpx.get(f"{base}/info", headers=headers).json()["loaded_at"] == before:
            assert time.monotonic() < deadline, "SIGHUP did not reload"
            time.sleep(0.2)


def test_docs_and_redoc_load_their_assets_from_this_server(client):
    """Offline hosts: no CDN in the pages, and every script/stylesheet they name answers 200."""
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assert "https://" not in html and "http://" not in html, page
        assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css|png))"', html)
        assert any(a.endswith(".js") for a in assets), page
        for asset in assets:
            assert client.get(asset).status_code == 200, asset
    assert client.get("/openapi.json").status_code == 200


def test_serve_on_a_busy_port_is_one_line_before_any_banner(cli, bundle_dir):
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        code, stdout, stderr = cli(["serve", bundle_dir, "--host", "127.0.0.1", "--port",
                                    str(port)])
    assert code == 2
    assert stderr.strip().splitlines() == [
        f"error: port {port} is in use on 127.0.0.1; stop the other server or choose another "
        "with --port"]
    assert "serving" not in stdout + stderr


def test_cold_marker_and_labels_over_a_mostly_cold_catalogue(cold_catalogue):
    """Planted catalogue (tests/conftest.py): the default keeps a warm item's neighbours warm,
    ``cold=include`` lets the cold ones show, ``exclude`` drops them; every list is parallel."""
    model, bundle, _ = cold_catalogue
    item = str(model.embeddings.item_ids[0])
    with TestClient(create_app(ModelHolder(bundle))) as client:
        shares = {}
        for cold in ("calibrated", "include", "exclude"):
            body = client.get(f"/similar/{item}", params={"n": 20, "cold": cold}).json()
            assert body["cold"] == [not i.startswith("i") for i in body["items"]]
            assert body["labels"] == [f"product {i}" for i in body["items"]]
            shares[cold] = sum(body["cold"])
        assert shares["include"] >= 10 and shares["calibrated"] <= 2 and shares["exclude"] == 0
        batch = client.post("/similar", json={"items": [item], "n": 20, "cold": "include"}).json()
        row = batch["results"][0]
        assert row["cold"] == [not i.startswith("i") for i in row["items"]]
        assert client.get(f"/similar/{item}", params={"cold": "maybe"}).status_code == 422
        recs = client.post("/recommend", json={"history": [item], "n": 5, "explain": True}).json()
        assert len(recs["cold"]) == len(recs["labels"]) == len(recs["items"]) == 5
        assert [e["label"] for e in recs["explanations"]] == recs["labels"]
        explained = client.post("/explain", json={"history": [item], "item": item}).json()
        assert explained["label"] == f"product {item}"


def test_serve_label_picks_the_column(cold_catalogue):
    model, bundle, _ = cold_catalogue
    item = str(model.embeddings.item_ids[0])
    with TestClient(create_app(ModelHolder(bundle, label="category"))) as client:
        body = client.get(f"/similar/{item}", params={"n": 3}).json()
        table = model.embeddings.item_table
        category = dict(zip(table["item_id"].to_list(), table["category"].to_list(), strict=True))
        assert body["labels"] == [category[i] for i in body["items"]]
    with TestClient(create_app(ModelHolder(bundle, label="none"))) as client:
        assert "labels" not in client.get(f"/similar/{item}").json()


# -- attacks on the service (benchmarks/reliability.md) ---------------------------------------------
def _wait_for(condition, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.05)


def test_watcher_survives_a_malformed_bundle_and_reports_it(models_root, tmp_path):
    live = tmp_path / "live"
    shutil.copytree(models_root / "other", live)
    holder = ModelHolder(live)
    with TestClient(create_app(holder)) as client:
        watcher = holder.watch(0.1)
        (live / "manifest.json").write_text("[]")  # not a manifest
        _wait_for(lambda: holder.failure is not None)
        health = client.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "degraded"
        assert health.json()["items"] == 50  # the last good bundle keeps serving
        assert "manifest.json: corrupt" in health.json()["error"]
        assert str(tmp_path) not in health.text
        assert len(client.post("/recommend", json={"history": [], "n": 3}).json()["items"]) == 3
        staged = tmp_path / "staged"
        shutil.copytree(models_root / "current", staged)
        shutil.rmtree(live)
        staged.rename(live)  # a good bundle replaces the broken one
        _wait_for(lambda: client.get("/health").json()["items"] == 400)
        assert client.get("/health").json()["status"] == "ok" and watcher.is_alive()


@pytest.mark.parametrize("interval", [0, -1, 0.01, float("nan")])
def test_watch_interval_below_a_tenth_of_a_second_is_refused(models_root, interval):
    with pytest.raises(ItemvecError, match="watch interval must be at least 0.1 s"):
        ModelHolder(models_root / "other").watch(interval)


def test_watch_interval_zero_is_one_line_on_the_cli(cli, bundle_dir):
    code, _, stderr = cli(["serve", bundle_dir, "--watch", "--watch-interval", "0"])
    assert code == 2
    assert stderr.strip() == "error: serve.watch_interval must be >= 0.1, got 0.0"


def test_serve_on_a_bundle_the_loader_crashes_on_is_one_line(cli, models_root, monkeypatch):
    """Not an itemvec error (a loader bug a malformed bundle could trigger): still one line."""
    def crash(*_args, **_kwargs):
        raise AttributeError("injected")

    monkeypatch.setattr("itemvec.serve.state.load_embeddings", crash)
    bundle = models_root / "other"
    code, _, stderr = cli(["serve", bundle, "--port", str(free_port())])
    assert code == 2
    assert stderr.strip() == f"error: {bundle}: cannot load bundle (AttributeError: injected)"


def test_reload_is_off_without_an_api_key_or_allow_reload(client):
    response = client.post("/admin/reload", json={"path": "other"})
    assert response.status_code == 403 and "--allow-reload" in response.json()["error"]
    assert client.get("/health").json()["items"] == 400


def test_reload_needs_a_json_content_type_and_is_rate_limited(models_root):
    app = create_app(ModelHolder(models_root / "current"), api_key=API_KEY, reload_interval=60)
    key = {"X-API-Key": API_KEY}
    with TestClient(app) as client:
        assert client.post("/admin/reload", json={"path": "other"}).status_code == 401
        bare = client.post("/admin/reload", headers=key)  # a body-less (cross-site) POST
        assert bare.status_code == 415 and "application/json" in bare.json()["error"]
        form = client.post("/admin/reload", content=b'{"path": "other"}',
                           headers={**key, "content-type": "text/plain"})
        assert form.status_code == 415
        assert client.get("/health").json()["items"] == 400
        first = client.post("/admin/reload", json={"path": "other"}, headers=key)
        assert first.status_code == 200 and first.json()["items"] == 50
        again = client.post("/admin/reload", json={"path": "current"}, headers=key)
        assert again.status_code == 429 and 59 <= int(again.headers["retry-after"]) <= 60
        assert client.get("/health").json()["items"] == 50  # the limited reload did nothing


def test_degraded_health_shows_the_error_only_with_the_key(models_root):
    """/health stays open for load balancers; the reload error is for key holders."""
    holder = ModelHolder(models_root / "other")
    with TestClient(create_app(holder, api_key=API_KEY)) as client:
        holder.failure = "live/manifest.json: corrupt"
        anonymous = client.get("/health")
        keyed = client.get("/health", headers={"X-API-Key": API_KEY})
        assert anonymous.status_code == keyed.status_code == 200
        assert anonymous.json()["status"] == keyed.json()["status"] == "degraded"
        assert "error" not in anonymous.json()
        assert keyed.json()["error"] == "reload failed: live/manifest.json: corrupt"


def test_cors_preflight_needs_no_key_and_401s_carry_cors_headers(models_root):
    origin = "http://shop.example"
    app = create_app(ModelHolder(models_root / "current"), api_key=API_KEY,
                     cors_origins=[origin])
    with TestClient(app) as client:
        preflight = client.options("/recommend", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-api-key,content-type"})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == origin
        assert "x-api-key" in preflight.headers["access-control-allow-headers"].lower()
        denied = client.get("/similar/i5", headers={"Origin": origin})
        assert denied.status_code == 401
        assert denied.headers["access-control-allow-origin"] == origin
        ok = client.get("/similar/i5", headers={"Origin": origin, "X-API-Key": API_KEY})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == origin


def test_errors_and_info_name_no_absolute_path(tiny_root):
    (tiny_root / "empty").mkdir(exist_ok=True)
    bad = tiny_root / "bad"
    shutil.copytree(tiny_root / "model", bad, dirs_exist_ok=True)
    (bad / "manifest.json").write_text("[]")
    holder = ModelHolder(tiny_root / "model")
    with TestClient(create_app(holder, allow_reload=True, reload_interval=0)) as client:
        info = client.get("/info")
        assert info.json()["stats"] == {"source": "events.csv", "events": 10}
        missing = client.post("/admin/reload", json={"path": "nope"}).json()["error"]
        empty = client.post("/admin/reload", json={"path": "empty"}).json()["error"]
        assert missing == "no itemvec bundle at 'nope' under the models root"
        assert empty == "no itemvec bundle at 'empty' under the models root"  # no probing
        broken = client.post("/admin/reload", json={"path": "bad"})
        assert broken.status_code == 400
        assert broken.json()["error"].startswith("bad/manifest.json: corrupt")
        for response in (info, broken):
            assert str(tiny_root) not in response.text and "/srv" not in response.text
        health = client.get("/health").json()
        assert {k: health[k] for k in ("status", "items", "bundle")} == {
            "status": "ok", "items": 6, "bundle": "model"}


def test_ids_with_slashes_are_reachable(tiny_root):
    with TestClient(create_app(ModelHolder(tiny_root / "model"))) as client:
        for path in ("/similar/cat/a", "/similar/cat%2Fa"):
            response = client.get(path, params={"n": 1})
            assert response.status_code == 200 and response.json()["items"] == ["i0"], path
        assert client.get("/items/x/y/z").json()["item_id"] == "x/y/z"
        assert client.get("/similar/x/y/nope").json()["error"].startswith(
            "unknown item 'x/y/nope'")


def test_a_500_is_json_and_keeps_the_connection_open(models_root):
    holder = ModelHolder(models_root / "current")
    holder.load()

    def broken(*_args, **_kwargs):
        raise RuntimeError("injected bug")

    holder.current().embeddings.similar_items = broken
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(holder), host="127.0.0.1", port=port,
                                           log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        _wait_for(lambda: server.started)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/similar/i5")
        crashed = connection.getresponse()
        assert crashed.status == 500
        assert json.loads(crashed.read()) == {"error": "internal error; see the server log"}
        socket_before = connection.sock
        connection.request("GET", "/health")  # the same keep-alive connection
        healthy = connection.getresponse()
        assert healthy.status == 200 and json.loads(healthy.read())["status"] == "ok"
        assert connection.sock is socket_before
        connection.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_a_replaced_model_is_freed_without_waiting_for_the_garbage_collector(models_root):
    """Reference cycles kept every replaced model until a full collection: RSS grew 410 ->
    578 MiB over 120 reloads of a 20k-item bundle, and stays at 421 MiB without them."""
    holder = ModelHolder(models_root / "current")
    holder.load()
    holder.current().filters(where={"category": "cat001"})  # fills the model's filter cache
    replaced = weakref.ref(holder.current())
    gc.disable()
    try:
        holder.reload("other")
        assert replaced() is None
    finally:
        gc.enable()


def test_a_stored_recommend_index_serves_the_in_process_answers(tmp_path, monkeypatch):
    """A bundle with ``index-recommend.faiss`` (as ``itemvec index`` stores it) is served
    through it, not rebuilt, and POST /recommend answers what the model answers in process."""
    pytest.importorskip("faiss")
    import itemvec.query.embeddings as embeddings_module
    import itemvec.query.recommend_index as recommend_module

    monkeypatch.setattr(embeddings_module, "RECOMMEND_INDEX_MIN_ITEMS", 1000)  # 6,000 items
    rng = np.random.default_rng(4)
    vectors = rng.normal(size=(40, 16))[rng.integers(40, size=6000)] + 0.7 * rng.normal(
        size=(6000, 16))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    emb = ItemEmbeddings([f"i{i}" for i in range(6000)], vectors,
                         rng.gumbel(scale=0.3, size=6000).astype(np.float32), 0.1)
    bundle = write_bundle(tmp_path / "model", emb, config={}, stats={})
    stored = ItemEmbeddings.load(bundle).use_index("ivf", bundle=bundle, save=True)
    assert (bundle / "index-recommend.faiss").is_file()
    monkeypatch.setattr(recommend_module, "build_recommend_index",
                        lambda *a, **k: pytest.fail("the stored recommend index was rebuilt"))
    holder = ModelHolder(bundle, index="ivf")
    histories = [[f"i{j}" for j in rng.integers(6000, size=5)] for _ in range(12)] + [[]]
    with TestClient(create_app(holder)) as client:
        served = holder.current().embeddings
        assert served.recommend_index is not None
        for history in histories:
            body = client.post("/recommend", json={"history": history, "n": 10}).json()
            ids, scores = stored.recommend(history, n=10)
            assert body["items"] == list(ids)
            assert body["scores"] == [round(float(s), 6) for s in scores]
            assert not set(history) & set(body["items"])
