"""The HTTP API (FastAPI): related items, recommendations, search, explanations, reload.

Every error is JSON ``{"error": "..."}`` with a code a client can act on: 404 unknown item,
413 body too large, 422 invalid request (n, history length, vector size are all bounded; numbers
and booleans are strict, so ``true`` is not 1), 401 bad API key, 503 not loaded yet, and 500
(JSON too, keeping the connection open) for a server bug. Handlers take the current model once
per request, so a reload (``POST /admin/reload``, SIGHUP, or ``--watch``) swaps models without
dropping a request. Security defaults: bind 127.0.0.1, CORS off, optional API key compared in
constant time, error bodies and ``/info`` free of absolute paths, nothing loaded with pickle or
eval. ``POST /admin/reload`` changes what every client is served, so it is off unless an API key
is set or ``allow_reload`` is given, wants ``Content-Type: application/json`` (a cross-site
form or body-less POST cannot send it without a CORS preflight), loads only under the models
root and is rate-limited (429 with Retry-After).

Request path: ``GET /similar/{id}`` and ``POST /recommend`` without filters are answered by one
batching thread per process (``serve.batching``: concurrent recommendations share one pass over
the vectors, each answer the one it would get alone); their plainest forms skip FastAPI's
routing and validation (``HotPaths``), with the same answer bytes. Measurements:
benchmarks/serving.md, "Request path, profiled".
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import math
import re
import threading
import time
from collections.abc import Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from itemvec.query.embeddings import Results as QueryResults
from itemvec.query.search import aligned_table
from itemvec.serve.batching import Batcher
from itemvec.serve.deps import Holder, Model
from itemvec.serve.responses import FastJSONResponse, orjson
from itemvec.serve.state import LoadedModel, ModelHolder, NotReady, cap_this_thread
from itemvec.util.errors import ItemvecError, UnknownItemError
from itemvec.util.version import VERSION as __version__

logger = logging.getLogger(__name__)

MAX_N = 1000
MAX_HISTORY = 1000
MAX_BATCH = 256
MAX_LIST = 100_000
MAX_BODY = 1 << 20
MAX_QUERY_CHARS = 500
SIMILAR_BATCH = 16  # FAISS scores its coarse quantizer with BLAS from 20 queries on
DOCS_ASSETS = "/docs-assets"  # Swagger UI and ReDoc scripts, served from the package
OPEN_PATHS = ("/health", "/")  # the explorer page itself holds no data; its API calls need the key

ItemId = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Scalar = str | int | float | bool
RELOAD_INTERVAL = 2.0  # seconds between client reloads (serve.reload_interval)
N = Annotated[int, Field(strict=True, ge=1, le=MAX_N, description="How many results (1-1000).")]
Flag = Annotated[bool, Field(strict=True)]
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]


# -- request and response bodies -------------------------------------------------------------------
class Filters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    exclude: list[ItemId] = Field(default_factory=list, max_length=MAX_LIST,
                                  description="Item ids never to return.")
    where: dict[str, Scalar | list[Scalar]] | None = Field(
        None, description='Item-table conditions, e.g. {"category": "shoes"} or '
        '{"brand": ["a", "b"]}.')
    allowed: list[ItemId] | None = Field(None, max_length=MAX_LIST,
                                         description="Only return these (e.g. items in stock).")


ColdMode = Literal["calibrated", "include", "exclude"]
COLD_HELP = ("Cold items (item table only, never in behaviour): calibrated (cosine plus the offset "
             "chosen on validation), include (plain cosine) or exclude.")


class SimilarIn(Filters):
    items: list[ItemId] = Field(min_length=1, max_length=MAX_BATCH)
    n: N = 10
    cold: ColdMode = Field("calibrated", description=COLD_HELP)


class RecommendIn(Filters):
    history: list[ItemId] = Field(max_length=MAX_HISTORY, description="Oldest first.")
    n: N = 10
    filter_seen: Flag = True
    explain: Flag = False


class RecommendBatchIn(Filters):
    histories: list[Annotated[list[ItemId], Field(max_length=MAX_HISTORY)]] = Field(
        min_length=1, max_length=MAX_BATCH)
    n: N = 10
    filter_seen: Flag = True


class SearchIn(Filters):
    text: Annotated[str, StringConstraints(min_length=1, max_length=MAX_QUERY_CHARS)] | None = None
    vector: list[Number] | None = Field(None, max_length=4096)
    item: ItemId | None = None
    n: N = 10

    @model_validator(mode="after")
    def _one_kind(self) -> SearchIn:
        given = [k for k in ("text", "vector", "item") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of text, vector or item")
        return self


class ExplainIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    history: list[ItemId] = Field(max_length=MAX_HISTORY)
    item: ItemId


class ReloadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: Annotated[str, StringConstraints(min_length=1, max_length=1024)] | None = Field(
        None, description="Bundle directory relative to the models root (default: reload the "
        "current one).")


class Results(BaseModel):
    items: list[str]
    scores: list[float]
    cold: list[bool] | None = Field(None, description="True where the item is cold (no "
                                    "behaviour, placed by its features).")
    labels: list[str | None] | None = Field(None, description="Item-table labels (when the "
                                            "bundle has a label column).")


class RecommendOut(Results):
    skipped: int = 0
    explanations: list[dict] | None = None


class SearchOut(Results):
    matches: list[dict] | None = None


class ErrorOut(BaseModel):
    error: str


ERRORS = {404: {"model": ErrorOut}, 413: {"model": ErrorOut}, 422: {"model": ErrorOut}}
RELOAD_ERRORS = {status: {"model": ErrorOut} for status in (400, 403, 415, 422, 429)}


# -- helpers -----------------------------------------------------------------------------------------
def _json(payload: Any, status: int = 200) -> JSONResponse:
    return FastJSONResponse(payload, status_code=status)


def _results(ids: np.ndarray, scores: np.ndarray, marks: LoadedModel | None = None,
             **extra: Any) -> dict[str, Any]:
    """``items`` and ``scores``, with ``marks``' parallel ``cold`` and ``labels`` lists."""
    return {"items": [str(i) for i in ids], "scores": [round(float(s), 6) for s in scores],
            **(marks.marks(ids) if marks is not None else {}), **extra}


def _error(status: int, message: str) -> JSONResponse:
    return _json({"error": message}, status)


class BodyTooLarge(Exception):
    pass


class Guard:
    """ASGI middleware: API key (constant-time compare) and a hard cap on request bodies."""

    def __init__(self, app, api_key: str | None, max_body: int) -> None:
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.max_body = max_body

    def too_large(self) -> JSONResponse:
        """The 413 answer (built when needed, not for every request)."""
        return _error(413, f"request body over {self.max_body} bytes")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or ())
        if self.api_key is not None:
            given = headers.get(b"x-api-key", b"")
            auth = headers.get(b"authorization", b"")
            if not given and auth.lower().startswith(b"bearer "):
                given = auth[7:].strip()
            keyed = hmac.compare_digest(given, self.api_key)
            scope.setdefault("state", {})["keyed"] = keyed  # open paths show less without it
            if not keyed and scope["path"] not in OPEN_PATHS:
                return await _error(401, "missing or wrong API key (send X-API-Key or "
                                    "Authorization: Bearer)")(scope, receive, send)
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return await self.too_large()(scope, receive, send)
        received, started, overflow = 0, False, False

        async def limited_receive():
            nonlocal received, overflow
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    overflow = True
                    raise BodyTooLarge()
            return message

        async def guarded_send(message):
            # The framework may turn BodyTooLarge into its own 400; answer 413 instead.
            nonlocal started
            if overflow:
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await self.too_large()(scope, receive, send)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyTooLarge:
            if not started:
                await self.too_large()(scope, receive, send)
        except Exception as exc:
            # Answered here, not re-raised: the server would close the keep-alive connection.
            logger.exception("unhandled error: %s", exc)
            if not started:
                await _error(500, "internal error; see the server log")(scope, receive, send)


class HotPaths:
    """ASGI middleware: the two hot queries in their plain form, ``GET /similar/{id}`` with at
    most ``n`` and ``POST /recommend`` with only ``history``, ``n`` and ``filter_seen``,
    answered without FastAPI's routing, dependency and validation passes (about a fifth of a
    millisecond a request), through the same batcher and answer-building code as their routes.

    Everything else goes on to the app, and so does any plain query that fails (an unknown id,
    no model yet): the app answers it as it always has, errors included, so no answer differs.
    """

    def __init__(self, app, holder: ModelHolder, batcher: Batcher) -> None:
        self.app = app
        self.holder = holder
        self.batcher = batcher

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            response = None
            if scope["method"] == "GET" and scope["path"].startswith("/similar/"):
                response = await self._similar(scope["path"][len("/similar/"):],
                                               scope["query_string"])
            elif scope["method"] == "POST" and scope["path"] == "/recommend" and _json_body(scope):
                body, receive = await _buffered(receive)
                response = await self._recommend(body)
            if response is not None:
                return await response(scope, receive, send)
        await self.app(scope, receive, send)

    async def _similar(self, item_id: str, query: bytes) -> JSONResponse | None:
        n = _plain_n(query)
        if n is None or not 0 < len(item_id) <= 256 or "\n" in item_id:
            return None  # the route's ``{item_id:path}`` (``.*``) stops at a newline
        try:
            return await _batched_similar(self.batcher, self.holder.current(), item_id, n,
                                          "calibrated")
        except Exception:  # the route answers it (404, 503, ...) as it always has
            return None

    async def _recommend(self, body: bytes) -> JSONResponse | None:
        plain = _plain_recommend(body)
        if plain is None:
            return None
        history, n, filter_seen = plain
        try:
            return await _batched_recommend(self.batcher, self.holder.current(), history, n,
                                            filter_seen)
        except Exception:
            return None


PLAIN_N = re.compile(r"n=([1-9][0-9]{0,3})")
RECOMMEND_KEYS = frozenset(("history", "n", "filter_seen"))


def _plain_n(query: bytes) -> int | None:
    """``n`` of a query string that holds nothing else (10 when empty), else None."""
    if not query:
        return 10
    match = PLAIN_N.fullmatch(query.decode("latin-1"))
    n = int(match.group(1)) if match else 0
    return n if 1 <= n <= MAX_N else None


def _json_body(scope) -> bool:
    """Whether the request's first Content-Type (the one Starlette reads) is exactly JSON."""
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            return value == b"application/json"
    return False


async def _buffered(receive):
    """The whole request body, and a ``receive`` that hands it on again (for the app)."""
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return b"", _replay([message], receive)
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    body = b"".join(chunks)
    return body, _replay([{"type": "http.request", "body": body, "more_body": False}], receive)


def _replay(messages: list[dict], receive):
    async def replayed():
        return messages.pop(0) if messages else await receive()

    return replayed


def _plain_recommend(body: bytes) -> tuple[list[str], int, bool] | None:
    """(history, n, filter_seen) of a body ``RecommendIn`` accepts with nothing else set, else
    None. Strict like the model: n an int (not bool) 1-1000, filter_seen a bool, ids strings
    of 1-256 characters, at most 1000 of them."""
    try:
        data = orjson.loads(body) if orjson is not None else json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict) or "history" not in data or not data.keys() <= RECOMMEND_KEYS:
        return None
    history, n, seen = data["history"], data.get("n", 10), data.get("filter_seen", True)
    if (type(n) is not int or not 1 <= n <= MAX_N or type(seen) is not bool
            or type(history) is not list or len(history) > MAX_HISTORY):
        return None
    if not all(type(i) is str and 0 < len(i) <= 256 for i in history):
        return None
    if orjson is None:  # json accepts lone surrogates ("\ud800"), which the model refuses
        try:
            "".join(history).encode()
        except UnicodeEncodeError:
            return None
    return history, n, seen


def _clean_errors(errors: Sequence[dict]) -> list[dict]:
    return [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")),
             "type": str(e.get("type", ""))} for e in errors]


def _describe(errors: list[dict]) -> str:
    parts = []
    for e in errors[:3]:
        loc = ".".join(str(x) for x in e["loc"] if x not in ("body", "query", "path"))
        parts.append(f"{loc}: {e['msg']}" if loc else e["msg"])
    return "invalid request: " + "; ".join(parts)


# -- the app -----------------------------------------------------------------------------------------
class ReloadGate:
    """Admits one client reload per ``interval`` seconds and none while one runs: each reload
    reads a whole bundle, and a client repeating them would starve every query."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._next = 0.0
        self._running = False

    def wait(self) -> float:
        """Seconds until a reload may start (0: now), reserving nothing."""
        with self._lock:
            return self._wait()

    def admit(self) -> float:
        """0 when a reload may start now (call ``done`` after it), else seconds to wait."""
        with self._lock:
            wait = self._wait()
            if wait == 0:
                self._running, self._next = True, time.monotonic() + self.interval
            return wait

    def _wait(self) -> float:
        if self._running:
            return max(self.interval, 1.0)
        return max(0.0, self._next - time.monotonic())

    def done(self) -> None:
        with self._lock:
            self._running = False
            self._next = max(self._next, time.monotonic() + self.interval)


def create_app(holder: ModelHolder, api_key: str | None = None,
               cors_origins: Sequence[str] = (), max_body: int = MAX_BODY,
               allow_reload: bool = False, reload_interval: float = RELOAD_INTERVAL,
               threads: int = 1) -> FastAPI:
    """The FastAPI app serving ``holder``'s model (loaded at startup if it is not yet).

    ``POST /admin/reload`` works only with ``api_key`` set or ``allow_reload``. ``threads``:
    BLAS/OpenMP threads of the thread that answers batched queries (``serve.batching``).
    """
    batcher = Batcher(threads=threads)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        if not holder.ready:
            await asyncio.to_thread(holder.load)
        try:
            yield
        finally:
            batcher.close()

    app = offline_docs_app(title="itemvec", version=__version__, lifespan=lifespan,
                           description="Related items, recommendations and search over learned "
                           "item embeddings.")
    _install_errors(app)
    for router in ROUTERS:
        app.include_router(router)
    _include_explorer(app)
    app.add_middleware(HotPaths, holder=holder, batcher=batcher)  # inside Guard: keyed, capped
    app.add_middleware(Guard, api_key=api_key, max_body=max_body)
    if cors_origins:  # outside Guard: preflights need no key, and 401/413 carry CORS headers
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins),
                           allow_methods=["GET", "POST"], allow_headers=["*"])
    app.state.holder = holder
    app.state.batcher = batcher
    app.state.reload_gate = (ReloadGate(reload_interval) if allow_reload or api_key is not None
                             else None)
    return app


def offline_docs_app(**params: Any) -> FastAPI:
    """A FastAPI app whose /docs and /redoc load their scripts from this server, not a CDN.

    Servers are often offline; ``fastapi-offline`` (the serve extra) ships Swagger UI and ReDoc.
    Without it the pages fall back to FastAPI's CDN links, with a warning.
    """
    try:
        from fastapi_offline import FastAPIOffline
    except ModuleNotFoundError:
        logger.warning("fastapi-offline is not installed: /docs and /redoc load their scripts "
                       "from a CDN (pip install 'itemvec[serve]')")
        return FastAPI(**params)
    return FastAPIOffline(static_url=DOCS_ASSETS, **params)


def _include_explorer(app: FastAPI) -> None:
    """Mount the web explorer (another module's ``router``) when it is installed."""
    try:
        from itemvec.serve.explorer import router
    except ModuleNotFoundError as exc:
        if exc.name != "itemvec.serve.explorer":
            raise
        return
    app.include_router(router)


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(UnknownItemError)
    async def _unknown(_request: Request, exc: UnknownItemError) -> JSONResponse:
        return _error(404, str(exc))

    @app.exception_handler(ItemvecError)
    async def _user(request: Request, exc: ItemvecError) -> JSONResponse:
        return _error(400, request.app.state.holder.public(str(exc)))

    @app.exception_handler(NotReady)
    async def _not_ready(_request: Request, _exc: NotReady) -> JSONResponse:
        return _error(503, "model is loading; retry shortly")

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _clean_errors(exc.errors())
        return _json({"error": _describe(errors), "detail": errors}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, exc.status_code, headers=exc.headers)

    @app.exception_handler(json.JSONDecodeError)
    async def _bad_json(_request: Request, exc: json.JSONDecodeError) -> JSONResponse:
        return _error(422, f"body is not valid JSON ({exc.msg})")


# -- routes: module-level routers; the loaded model comes in through a dependency --------------------
PathId = Annotated[str, Path(min_length=1, max_length=256)]
QueryN = Annotated[int, Query(ge=1, le=MAX_N)]

status_router = APIRouter(tags=["status"])
items_router = APIRouter(tags=["items"], responses=ERRORS)
search_router = APIRouter(tags=["search"], responses=ERRORS)
admin_router = APIRouter(tags=["admin"], responses=ERRORS)
ROUTERS = (status_router, items_router, search_router, admin_router)


def _unpadded(ids: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One row of a batch answer without its padding (score -inf)."""
    keep = np.isfinite(scores)
    return ids[keep], scores[keep]


def _parse_where(clauses: list[str] | None) -> dict[str, list[str]] | None:
    """``column:value`` query parameters as conditions; 422 when one has no colon."""
    conditions: dict[str, list[str]] = {}
    for clause in clauses or []:
        column, sep, value = clause.partition(":")
        if not sep or not column:
            raise StarletteHTTPException(422, f"where must look like column:value, got {clause!r}")
        conditions.setdefault(column, []).append(value)
    return conditions or None


@status_router.get("/health", summary="200 once a model is loaded (status ok, or degraded "
                  "when the last background reload failed), 503 before")
def health(holder: Holder, request: Request) -> JSONResponse:
    """Open to load balancers; with an API key set, a degraded reload's error text is shown
    only to callers that send the key."""
    if not holder.ready or not holder.peers_ready():
        return _error(503, "model is loading")
    model = holder.current()
    body = {"status": "ok", "items": len(model.embeddings), "bundle": model.path.name,
            **holder.identity(model)}
    if holder.failure is not None:  # still serving the last good bundle
        body["status"] = "degraded"
        if getattr(request.state, "keyed", True):
            body["error"] = f"reload failed: {holder.failure}"
    return _json(body)


@status_router.get("/info", summary="Model information: size, config, training statistics")
def info(holder: Holder) -> JSONResponse:
    model = holder.current()
    return _json({**model.info(), **holder.identity(model)})


@items_router.get("/similar/{item_id:path}", response_model=Results,
                  summary="Items most similar (cosine) to one item")
async def similar(request: Request, model: Model, item_id: PathId, n: QueryN = 10,
                  exclude: Annotated[list[str] | None, Query(max_length=1000)] = None,
                  where: Annotated[list[str] | None, Query(
                      max_length=20, description="column:value, e.g. category:shoes")] = None,
                  cold: Annotated[ColdMode, Query(description=COLD_HELP)] = "calibrated",
                  ) -> JSONResponse:
    if exclude or where:
        return await run_in_threadpool(_similar_filtered, model, item_id, n, exclude, where,
                                       cold)
    return await _batched_similar(request.app.state.batcher, model, item_id, n, cold)


async def _batched_similar(batcher: Batcher, model: LoadedModel, item_id: str, n: int,
                           cold: str) -> JSONResponse:
    """One item's neighbours through the batching thread: the route's and ``HotPaths``' path."""
    ids, scores = await batcher.submit(("similar", id(model), n, cold), item_id,
                                       functools.partial(_similar_each, model, n, cold))
    return _json(_results(ids, scores, model))


def _similar_filtered(model: LoadedModel, item_id: str, n: int, exclude: list[str] | None,
                      where: list[str] | None, cold: str) -> JSONResponse:
    cap_this_thread()
    filters = model.filters(exclude=exclude, where=_parse_where(where))
    return _json(_results(*model.embeddings.similar_items(item_id, n=n, cold=cold, **filters),
                          model))


def _similar_each(model: LoadedModel, n: int, cold: str, items: Sequence[str]
                  ) -> list[QueryResults | Exception | None]:
    """``similar_items`` of each item (on the batching thread): an unknown id is that request's
    404, not its neighbours'. Through a FAISS index up to ``SIMILAR_BATCH`` items are searched
    in one call; other backends answer one by one (a matrix product's bits depend on the
    batch's shape)."""
    emb = model.embeddings
    answers: list[QueryResults | Exception | None] = [None] * len(items)
    known = []
    for position, item in enumerate(items):
        try:
            emb.row(item)
            known.append(position)
        except ItemvecError as exc:
            answers[position] = exc
    if not getattr(emb.vector_index, "approximate", False):
        for position in known:
            answers[position] = emb.similar_items(items[position], n=n, cold=cold)
        return answers
    for start in range(0, len(known), SIMILAR_BATCH):
        part = known[start:start + SIMILAR_BATCH]
        found = emb.similar_items_many([items[p] for p in part], n=n, cold=cold)
        for position, result in zip(part, found, strict=True):
            answers[position] = result
    return answers


@items_router.post("/similar", summary="Similar items for a batch of items")
def similar_batch(model: Model, body: SimilarIn) -> JSONResponse:
    cap_this_thread()
    filters = model.filters(body.exclude, body.where, body.allowed)
    ids, scores = model.embeddings.similar_items_batch(body.items, n=body.n, cold=body.cold,
                                                       **filters)
    return _json({"results": [_results(*_unpadded(i, s), model, item=q) for q, i, s in
                              zip(body.items, ids, scores, strict=True)]})


@items_router.post("/recommend", response_model=RecommendOut,
                   summary="Recommendations for one history (oldest first); unknown items skipped")
async def recommend(request: Request, model: Model, body: RecommendIn) -> JSONResponse:
    if body.explain or body.exclude or body.where or body.allowed is not None:
        return await run_in_threadpool(_recommend_filtered, model, body)
    return await _batched_recommend(request.app.state.batcher, model, body.history, body.n,
                                    body.filter_seen)


async def _batched_recommend(batcher: Batcher, model: LoadedModel, history: list[str], n: int,
                             filter_seen: bool) -> JSONResponse:
    """One history's recommendations through the batching thread, scored with the others
    queued: the route's and ``HotPaths``' path."""
    result = await batcher.submit(("recommend", id(model), n, filter_seen), history,
                                  functools.partial(_recommend_all, model, n, filter_seen))
    return _json(_results(*result, model, skipped=result.skipped))


def _recommend_filtered(model: LoadedModel, body: RecommendIn) -> JSONResponse:
    cap_this_thread()
    filters = model.filters(body.exclude, body.where, body.allowed)
    result = model.embeddings.recommend(body.history, n=body.n, filter_seen=body.filter_seen,
                                        **filters)
    extra: dict[str, Any] = {"skipped": result.skipped}
    if body.explain:
        extra["explanations"] = model.labelled([model.explainer.explain(body.history, str(i))
                                                for i in result.ids])
    return _json(_results(*result, model, **extra))


def _recommend_all(model: LoadedModel, n: int, filter_seen: bool,
                   histories: Sequence[list[str]]) -> list[QueryResults]:
    """Recommendations for histories scored together (on the batching thread); each is the
    one ``recommend`` gives for it alone."""
    return model.embeddings.recommend_many(histories, n=n, filter_seen=filter_seen)


@items_router.post("/recommend/batch", summary="Recommendations for many histories")
def recommend_batch(model: Model, body: RecommendBatchIn) -> JSONResponse:
    cap_this_thread()
    filters = model.filters(body.exclude, body.where, body.allowed)
    result = model.embeddings.recommend_batch(body.histories, n=body.n,
                                              filter_seen=body.filter_seen, **filters)
    return _json({"results": [_results(*_unpadded(i, s), model, skipped=int(k)) for i, s, k in
                              zip(result.ids, result.scores, result.skipped, strict=True)]})


@items_router.get("/items/{item_id:path}", summary="An item's embedding and attributes")
def item(model: Model, item_id: PathId) -> JSONResponse:
    emb = model.embeddings
    row = emb.row(item_id)
    table = aligned_table(emb)
    attributes = {} if table is None else {
        k: v for k, v in table.row(row, named=True).items() if k != "item_id"}
    return _json({"item_id": item_id, "embedding": [round(float(x), 7) for x in emb.vectors_of(row)],
                  "popularity": round(float(emb.item_bias[row]), 6),
                  "attributes": json.loads(json.dumps(attributes, default=str))})


@items_router.post("/explain",
                   summary="Why an item is recommended for a history: per-item share and evidence")
def explain(model: Model, body: ExplainIn) -> JSONResponse:
    cap_this_thread()
    return _json(model.labelled([model.explainer.explain(body.history, body.item)])[0])


def _search_results(model: LoadedModel, ids: np.ndarray, scores: np.ndarray,
                    matches: list[tuple[str, float]]) -> JSONResponse:
    return _json(_results(ids, scores, model,
                          matches=[{"item_id": i, "score": s} for i, s in matches]))


@search_router.get("/search", response_model=SearchOut,
                   summary="Text search: items whose text matches, then their neighbourhood")
def search_text(model: Model,
                q: Annotated[str, Query(min_length=1, max_length=MAX_QUERY_CHARS)],
                n: QueryN = 10) -> JSONResponse:
    cap_this_thread()
    return _search_results(model, *model.search.by_text(q, n=n))


@search_router.post("/search", response_model=SearchOut,
                    summary="Search by text, vector or item id, with filters")
def search(model: Model, body: SearchIn) -> JSONResponse:
    cap_this_thread()
    filters = model.filters(body.exclude, body.where, body.allowed)
    if body.text is not None:
        return _search_results(model, *model.search.by_text(body.text, n=body.n, **filters))
    if body.vector is not None:
        dim = model.embeddings.dim
        if len(body.vector) != dim:
            return _error(422, f"vector has {len(body.vector)} values; this model's vectors have "
                          f"{dim}")
        return _json(_results(*model.search.by_vector(np.asarray(body.vector), n=body.n,
                                                      **filters), model))
    return _json(_results(*model.search.by_id(body.item, n=body.n, **filters), model))


def _too_soon_text(wait: float) -> tuple[str, dict[str, str]]:
    seconds = str(math.ceil(wait))
    return f"reload rate limit; retry in {seconds} s", {"Retry-After": seconds}


def _too_soon(wait: float) -> JSONResponse:
    message, headers = _too_soon_text(wait)
    return JSONResponse({"error": message}, 429, headers=headers)


async def reload_gate(request: Request) -> ReloadGate:
    """The reload policy, on the event loop so a flood of refused reloads costs no worker
    thread: 403 when reloading over HTTP is off, 415 without a JSON content type, 429 too
    soon after the last reload."""
    gate = request.app.state.reload_gate
    if gate is None:
        raise StarletteHTTPException(403, "reload over HTTP is off; start itemvec serve with "
                                     "--api-key-file or --allow-reload (SIGHUP always works)")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise StarletteHTTPException(415, "send Content-Type: application/json")
    wait = gate.wait()
    if wait > 0:
        raise StarletteHTTPException(429, *_too_soon_text(wait))
    return gate


@admin_router.post("/admin/reload", responses=RELOAD_ERRORS,
                   summary="Load a bundle (default: the current path again) and swap it in")
def reload(holder: Holder, gate: Annotated[ReloadGate, Depends(reload_gate)],
           body: ReloadIn | None = None) -> JSONResponse:
    wait = gate.admit()  # reserves the slot; 429 if another request took it meanwhile
    if wait > 0:
        return _too_soon(wait)
    try:
        model = holder.reload(body.path if body else None)
    finally:
        gate.done()
    return _json({"status": "reloaded", "bundle": model.path.name,
                  "items": len(model.embeddings), "reloads": holder.reloads})
