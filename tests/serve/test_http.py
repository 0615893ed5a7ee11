"""The HTTP API: contract shapes, planted-category answers, 4xx errors, security, atomic reload,
and one real ``itemvec serve`` subprocess."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from conftest import running_server  # noqa: E402
from fastapi import APIRouter  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from itemvec.query.embeddings import ItemEmbeddings  # noqa: E402
from itemvec.serve.http import create_app  # noqa: E402
from itemvec.serve.state import ModelHolder, resolve_under  # noqa: E402
from itemvec.store.bundle import write_bundle  # noqa: E402

API_KEY = "k" * 32


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


def test_reload_paths_cannot_escape_the_models_root(client, models_root, tmp_path):
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
    with TestClient(create_app(holder)) as client:
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
        assert response.status_code == 400 and "not an itemvec bundle" in response.json()["error"]
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
