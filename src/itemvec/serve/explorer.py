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
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, JSONResponse

from itemvec.analysis.plots import (
    default_color_column,
    map_payload,
    project,
    static_text,
)
from itemvec.query.embeddings import ItemEmbeddings
from itemvec.query.labels import label_column
from itemvec.query.search import aligned_table
from itemvec.serve.deps import Holder, Model

logger = logging.getLogger(__name__)
router = APIRouter()
MAP_MAX_ITEMS = 50_000
LOOKUP_MAX = 50
_map_lock = threading.Lock()
_texts_lock = threading.Lock()


@lru_cache(maxsize=1)
def page() -> str:
    """The explorer page with its script and styles inlined."""
    text = static_text("explorer.html")
    for marker, name in (("/*ITEMMAP_CSS*/", "itemmap.css"), ("/*EXPLORER_CSS*/", "explorer.css"),
                         ("/*ITEMMAP_JS*/", "itemmap.js"), ("/*EXPLORER_JS*/", "explorer.js")):
        text = text.replace(marker, static_text(name))
    return text


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def explorer_page(holder: Holder) -> HTMLResponse:
    if holder.ready and "_explorer_map" not in holder.current().__dict__:
        # start the map while the browser parses the page; /map.json then finds it ready
        threading.Thread(target=map_for, args=(holder.current(),), daemon=True,
                         name="itemvec-map").start()
    return HTMLResponse(page())


def _columns(embeddings) -> tuple[str | None, str | None]:
    """(title column, category column) of the item table, when it has them."""
    category = default_color_column(embeddings)
    return label_column(embeddings), (None if category == "count" else category)


@dataclass(frozen=True)
class _Texts:
    """Display and lookup strings of one loaded model's items, aligned with ``item_ids``."""

    title_column: str | None
    category_column: str | None
    titles: np.ndarray | None
    categories: np.ndarray | None
    ids_lower: np.ndarray
    titles_lower: np.ndarray | None


def _column_strings(embeddings, column: str | None) -> np.ndarray | None:
    table = aligned_table(embeddings)
    if column is None or table is None or column not in table.columns:
        return None
    return np.asarray(["" if v is None else str(v) for v in table[column].to_list()], dtype=object)


def _lowered(values: np.ndarray | None) -> np.ndarray | None:
    return None if values is None else np.asarray([str(v).lower() for v in values], dtype=object)


def _texts(model) -> _Texts:
    """The model's item strings, built once per loaded model and kept on it (never on the
    shared ``ItemEmbeddings``, which queries leave untouched)."""
    with _texts_lock:
        cached = model.__dict__.get("_explorer_texts")
        if cached is None:
            emb = model.embeddings
            title_col, category_col = _columns(emb)
            titles = _column_strings(emb, title_col)
            cached = _Texts(title_col, category_col, titles, _column_strings(emb, category_col),
                            _lowered(emb.item_ids), _lowered(titles))
            model.__dict__["_explorer_texts"] = cached
        return cached


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
        view = ItemEmbeddings(emb.item_ids[rows], emb.vectors_of(rows),
                              item_table=None if table is None else table[rows])
        coords, used = project(view.vectors, "pca")
        _, category = _columns(emb)
        payload = map_payload(view, coords, category, used)
        payload["sampled"] = bool(len(rows) < len(emb))
        model.__dict__["_explorer_map"] = payload
        return payload


@router.get("/map.json", include_in_schema=False)
def item_map(model: Model) -> JSONResponse:
    return JSONResponse(map_for(model))


def _describe(model, rows: np.ndarray) -> list[dict[str, Any]]:
    texts = _texts(model)
    return [{"item_id": str(model.embeddings.item_ids[r]),
             "title": None if texts.titles is None else texts.titles[r],
             "category": None if texts.categories is None else texts.categories[r]} for r in rows]


@router.get("/explorer/lookup", include_in_schema=False)
def lookup(model: Model, q: Annotated[str, Query(min_length=1, max_length=200)],
           n: Annotated[int, Query(ge=1, le=LOOKUP_MAX)] = 10) -> JSONResponse:
    """Items whose id equals, starts with, or whose id/title contains ``q`` (case-insensitive)."""
    emb, texts = model.embeddings, _texts(model)
    needle = q.strip().lower()
    found: list[int] = [emb.index[q.strip()]] if q.strip() in emb.index else []
    for matcher in (lambda s: s.startswith(needle), lambda s: needle in s):
        for haystack in (texts.ids_lower, texts.titles_lower):
            if haystack is None or len(found) >= n:
                continue
            for row in np.flatnonzero([matcher(s) for s in haystack]):
                if int(row) not in found:
                    found.append(int(row))
                if len(found) >= n:
                    break
    return JSONResponse({"items": _describe(model, np.asarray(found[:n], dtype=np.int64)),
                         "title_column": texts.title_column})


@router.get("/explorer/items", include_in_schema=False)
def items(model: Model,
          id: Annotated[list[str], Query(max_length=1000)]) -> JSONResponse:  # noqa: A002
    """Title and category of each known id (unknown ids are left out)."""
    rows, _ = model.embeddings.known(id)
    texts = _texts(model)
    return JSONResponse({"items": _describe(model, rows), "title_column": texts.title_column,
                         "category_column": texts.category_column})


__all__ = ["map_for", "page", "router"]
