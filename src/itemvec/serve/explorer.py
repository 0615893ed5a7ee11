"""The web explorer: a page at ``GET /`` for looking a model over in a browser.

Search an item by id or title, see its neighbours with scores and categories, build a basket and
get recommendations with explanations, and view the item map. Plain HTML and JavaScript inlined
into one page (the machines it runs on are often offline: no CDN). ``itemvec.serve.http`` mounts
``router`` when this module exists. The page calls the API's own endpoints (``/info``,
``/similar/{id}``, ``/recommend``) plus three read-only helpers defined here:

- ``GET /map.json``: 2-D PCA coordinates of (up to 50,000 sampled) items with hover fields,
  computed once per loaded model and cached on it;
- ``GET /explorer/lookup?q=``: items whose id or title contains the text (id prefix first);
- ``GET /explorer/items?id=a&id=b``: title and category of the given items, for display.
"""

from __future__ import annotations

import logging
import threading
from functools import lru_cache
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse

from itemvec.analysis.plots import (
    default_color_column,
    map_payload,
    project,
    static_text,
    title_column,
)
from itemvec.query.embeddings import ItemEmbeddings
from itemvec.query.search import aligned_table

logger = logging.getLogger(__name__)
router = APIRouter()
MAP_MAX_ITEMS = 50_000
LOOKUP_MAX = 50
_map_lock = threading.Lock()


def _model(request: Request):
    """The model the API serves right now (taken once per request)."""
    return request.app.state.holder.current()


@lru_cache(maxsize=1)
def page() -> str:
    """The explorer page with its script and styles inlined."""
    text = static_text("explorer.html")
    for marker, name in (("/*ITEMMAP_CSS*/", "itemmap.css"), ("/*EXPLORER_CSS*/", "explorer.css"),
                         ("/*ITEMMAP_JS*/", "itemmap.js"), ("/*EXPLORER_JS*/", "explorer.js")):
        text = text.replace(marker, static_text(name))
    return text


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def explorer_page(request: Request) -> HTMLResponse:
    holder = request.app.state.holder
    if holder.ready and "_explorer_map" not in holder.current().__dict__:
        # start the map while the browser parses the page; /map.json then finds it ready
        threading.Thread(target=map_for, args=(holder.current(),), daemon=True,
                         name="itemvec-map").start()
    return HTMLResponse(page())


def _columns(embeddings) -> tuple[str | None, str | None]:
    """(title column, category column) of the item table, when it has them."""
    category = default_color_column(embeddings)
    return title_column(embeddings), (None if category == "count" else category)


def _strings(embeddings, column: str | None) -> np.ndarray | None:
    cached = embeddings.__dict__.setdefault("_explorer_columns", {})
    if column is None:
        return None
    if column not in cached:
        table = aligned_table(embeddings)
        values = table[column].to_list() if table is not None and column in table.columns else None
        cached[column] = None if values is None else np.asarray(
            ["" if v is None else str(v) for v in values], dtype=object)
    return cached[column]


def map_for(model) -> dict[str, Any]:
    """The map payload of ``model``: PCA of (a sample of) the items, built once and kept."""
    with _map_lock:
        cached = model.__dict__.get("_explorer_map")
        if cached is not None:
            return cached

        emb = model.embeddings
        rows = np.arange(len(emb))
        if len(rows) > MAP_MAX_ITEMS:
            rows = np.sort(np.random.default_rng(0).choice(len(rows), MAP_MAX_ITEMS, replace=False))
        table = aligned_table(emb)
        view = ItemEmbeddings(emb.item_ids[rows], emb.vectors[rows],
                              item_table=None if table is None else table[rows])
        coords, used = project(view.vectors, "pca")
        _, category = _columns(emb)
        payload = map_payload(view, coords, category, used)
        payload["sampled"] = bool(len(rows) < len(emb))
        model.__dict__["_explorer_map"] = payload
        return payload


@router.get("/map.json", include_in_schema=False)
def item_map(request: Request) -> JSONResponse:
    return JSONResponse(map_for(_model(request)))


def _describe(embeddings, rows: np.ndarray) -> list[dict[str, Any]]:
    title_col, category_col = _columns(embeddings)
    titles, categories = _strings(embeddings, title_col), _strings(embeddings, category_col)
    return [{"item_id": str(embeddings.item_ids[r]),
             "title": None if titles is None else titles[r],
             "category": None if categories is None else categories[r]} for r in rows]


@router.get("/explorer/lookup", include_in_schema=False)
def lookup(request: Request, q: Annotated[str, Query(min_length=1, max_length=200)],
           n: Annotated[int, Query(ge=1, le=LOOKUP_MAX)] = 10) -> JSONResponse:
    """Items whose id equals, starts with, or whose id/title contains ``q`` (case-insensitive)."""
    emb = _model(request).embeddings
    needle = q.strip().lower()
    ids = _lower(emb, "_explorer_ids", emb.item_ids)
    title_col, _ = _columns(emb)
    titles = _strings(emb, title_col)
    exact = [emb.index[q.strip()]] if q.strip() in emb.index else []
    found: list[int] = list(exact)
    for matcher in (lambda s: s.startswith(needle), lambda s: needle in s):
        for haystack in (ids, None if titles is None else _lower(emb, "_explorer_titles", titles)):
            if haystack is None or len(found) >= n:
                continue
            for row in np.flatnonzero([matcher(s) for s in haystack]):
                if int(row) not in found:
                    found.append(int(row))
                if len(found) >= n:
                    break
    return JSONResponse({"items": _describe(emb, np.asarray(found[:n], dtype=np.int64)),
                         "title_column": title_col})


def _lower(embeddings, key: str, values) -> np.ndarray:
    cached = embeddings.__dict__.get(key)
    if cached is None:
        cached = np.asarray([str(v).lower() for v in values], dtype=object)
        embeddings.__dict__[key] = cached
    return cached


@router.get("/explorer/items", include_in_schema=False)
def items(request: Request,
          id: Annotated[list[str], Query(max_length=1000)]) -> JSONResponse:  # noqa: A002
    """Title and category of each known id (unknown ids are left out)."""
    emb = _model(request).embeddings
    rows, _ = emb.known(id)
    title_col, category_col = _columns(emb)
    return JSONResponse({"items": _describe(emb, rows), "title_column": title_col,
                         "category_column": category_col})


__all__ = ["map_for", "page", "router"]
