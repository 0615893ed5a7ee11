"""The web explorer: its helper endpoints in-process, and the page end to end in Chromium.

The browser test starts a real ``itemvec serve`` on a free port and drives headless Chromium
(Debian's /usr/bin/chromium via Playwright, which must not download a browser of its own). It
skips cleanly when Chromium or Playwright is absent.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("matplotlib")

from conftest import running_server  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from itemvec.query.embeddings import ItemEmbeddings  # noqa: E402
from itemvec.serve.http import create_app  # noqa: E402
from itemvec.serve.state import ModelHolder  # noqa: E402
from itemvec.train.pipeline import save_model  # noqa: E402

CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser")
                 if os.path.exists(p)), shutil.which("chromium"))
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def table_bundle(trained, shop, shop_config, tmp_path_factory) -> Path:
    emb = trained.embeddings
    embeddings = ItemEmbeddings(emb.item_ids, emb.vectors, emb.item_bias, emb.temperature,
                                emb.query, emb.metadata, item_table=shop.items)
    model = dataclasses.replace(trained, embeddings=embeddings)
    return save_model(model, tmp_path_factory.mktemp("explorer") / "model", shop_config)


@pytest.fixture(scope="module")
def client(table_bundle):
    with TestClient(create_app(ModelHolder(table_bundle))) as c:
        yield c


def test_page_is_served_and_self_contained(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "itemvec explorer" in page and "function ItemMap" in page
    assert "/*EXPLORER_JS*/" not in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "no CDN"


def test_map_json_keeps_categories_apart(client, categories, trained):
    data = client.get("/map.json").json()
    ids = data["ids"]
    assert len(ids) == len(trained.embeddings) and data["method"] == "pca"
    assert data["column"] == "category"
    assert data["values"] == [categories[i] for i in ids]
    xy = np.column_stack([data["x"], data["y"]])
    labels = np.asarray(data["values"])
    centres = {c: xy[labels == c].mean(0) for c in set(labels)}
    within = np.mean([np.linalg.norm(xy[k] - centres[labels[k]]) for k in range(len(ids))])
    overall = np.mean(np.linalg.norm(xy - xy.mean(0), axis=1))
    assert within < 0.8 * overall  # even a 2-D PCA groups the planted categories
    assert client.get("/map.json").json() == data  # cached, identical


def test_lookup_by_id_and_title(client, shop):
    found = client.get("/explorer/lookup", params={"q": "i1"}).json()["items"]
    assert found[0]["item_id"] == "i1"  # the exact id first, then ids that start with it
    assert all(f["item_id"].startswith("i1") for f in found)
    title = shop.items["title"][7]
    found = client.get("/explorer/lookup", params={"q": title.upper()}).json()["items"]
    assert "i7" in [f["item_id"] for f in found]
    assert client.get("/explorer/lookup", params={"q": "zzzz"}).json()["items"] == []
    described = client.get("/explorer/items", params=[("id", "i3"), ("id", "nope")]).json()
    assert [d["item_id"] for d in described["items"]] == ["i3"]
    assert described["items"][0]["category"] == shop.items["category"][3]
    assert client.get("/explorer/lookup", params={"q": ""}).status_code == 422


def test_items_are_labelled_by_a_detected_column(shop, tmp_path):
    """An instacart-like table names items in ``Product_Name``: the explorer shows it."""
    table = shop.items.select("item_id", "category").with_columns(
        Product_Name=shop.items["title"].str.to_uppercase())
    ids = shop.items["item_id"].to_list()
    vectors = np.random.default_rng(0).normal(size=(len(ids), 4)).astype(np.float32)
    ItemEmbeddings(ids, vectors, item_table=table).save(tmp_path / "labelled")
    with TestClient(create_app(ModelHolder(tmp_path / "labelled"))) as labelled:
        described = labelled.get("/explorer/items", params=[("id", "i3")]).json()
        assert described["title_column"] == "Product_Name"
        assert described["items"][0]["title"] == shop.items["title"][3].upper()
        assert labelled.get("/map.json").json()["title"][3] == shop.items["title"][3].upper()


# -- the browser, end to end -----------------------------------------------------------------------
@pytest.fixture
def server(table_bundle, tmp_path):
    with running_server(table_bundle, "--index", "exact", log=tmp_path / "serve.log") as (_, url):
        yield url


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_explorer_in_chromium(server, categories, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_FLAGS)  # a fresh --user-data-dir
        try:
            page = browser.new_page()
            page.set_default_timeout(15_000)
            page.goto(server + "/")
            page.wait_for_selector("#info:has-text('items')")
            # an item id -> its neighbours, mostly from its hidden category
            page.fill("#search", "i0")
            page.press("#search", "Enter")
            page.wait_for_selector("#neighbours tbody tr")
            rows = page.locator("#neighbours tbody tr")
            assert rows.count() == 10
            neighbours = [rows.nth(k).get_attribute("data-item") for k in range(10)]
            assert "i0" not in neighbours
            same = np.mean([categories[n] == categories["i0"] for n in neighbours])
            assert same >= 0.6, same
            shown = page.locator("#neighbours tbody").inner_text()
            assert categories["i0"] in shown  # categories are displayed beside ids
            # a basket -> recommendations (basket items excluded) with explanations
            basket = neighbours[:3]
            page.fill("#basket", ", ".join(basket))
            page.click("#recommend")
            page.wait_for_selector("#recommendations tbody tr")
            recs = page.locator("#recommendations tbody tr")
            assert recs.count() == 10
            recommended = [recs.nth(k).get_attribute("data-item") for k in range(10)]
            assert not set(recommended) & set(basket)
            why = page.locator("#recommendations tbody tr .why").first.inner_text()
            assert any(b in why for b in basket), why
            # the map was drawn
            page.wait_for_selector("#map canvas")
            assert "items" in page.inner_text("#map-note")
            assert page.inner_text("#status") == ""
        finally:
            browser.close()
