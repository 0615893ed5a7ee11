"""Where one request's time goes: itemvec's ASGI app driven in process, beside the ceiling app.

    python -m benchmarks.request_path --bundle /tmp/h20-bundles/items-100000 --calls 3000
    python -m benchmarks.request_path --bundle ... --profile similar   # cProfile, top 25

No sockets and no uvicorn: each request is one call of the ASGI app with a prepared scope, one
after another on one event loop, so the numbers are the app's own cost per request (routing,
validation, dependencies, the threadpool hop, the query, the JSON answer). Rows:

- ``ceiling``: ``benchmarks.serving_ceiling`` (a constant 10-item answer), the same requests;
- ``itemvec``: ``create_app`` over the bundle (loaded as a worker loads it: memory-mapped);
- ``query``: the query alone (``similar_items`` / ``recommend``), no HTTP at all;
- ``marks``: the ``cold`` and ``labels`` lists of one answer.

``--batches 1,8,32``: per-query cost of ``recommend_batch`` / ``similar_items_batch`` in batches
of each size. ``--stages``: which candidate-set size proves a recommendation through the index.

Requests are the load generator's (``benchmarks.loadgen.request_bytes``: random ids, random
5-item histories). Times are microseconds of wall time per request (median and mean of
``--calls`` requests after ``--warmup``); run it with ``OMP_NUM_THREADS=1`` as a worker runs.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.loadgen import request_bytes


def scope_of(raw: bytes) -> tuple[dict[str, Any], bytes]:
    """An ASGI HTTP scope and body from one request as the load generator sends it."""
    head, _, body = raw.partition(b"\r\n\r\n")
    first, *lines = head.split(b"\r\n")
    method, target, _ = first.split(b" ")
    path, _, query = target.partition(b"?")
    headers = [(k.strip().lower(), v.strip()) for k, v in (x.split(b":", 1) for x in lines)]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method.decode(), "scheme": "http", "path": path.decode(),
             "raw_path": path, "query_string": query, "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000)}
    return scope, body


async def call(app: Any, scope: dict[str, Any], body: bytes) -> tuple[int, bytes]:
    """One request through ``app``: its status and body."""
    sent = False
    out: dict[str, Any] = {"body": b""}

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
        elif message["type"] == "http.response.body":
            out["body"] += message.get("body", b"")

    await app(dict(scope), receive, send)
    return out["status"], out["body"]


async def per_request(app: Any, plan: list[tuple[dict, bytes]], calls: int, warmup: int
                      ) -> list[float]:
    """Wall seconds of each of ``calls`` requests (after ``warmup`` untimed ones)."""
    times = []
    for i in range(warmup + calls):
        scope, body = plan[i % len(plan)]
        began = time.perf_counter()
        status, answer = await call(app, scope, body)
        if status != 200:
            raise SystemExit(f"{scope['path']}: {status} {answer[:200]!r}")
        if i >= warmup:
            times.append(time.perf_counter() - began)
    return times


def summary(times: list[float]) -> dict[str, float]:
    us = np.asarray(times) * 1e6
    return {"median_us": round(float(np.median(us)), 1), "mean_us": round(float(us.mean()), 1)}


def timed_calls(fn: Callable[[Any], Any], args: list[Any], calls: int) -> dict[str, float]:
    fn(args[0])
    times = []
    for i in range(calls):
        began = time.perf_counter()
        fn(args[i % len(args)])
        times.append(time.perf_counter() - began)
    return summary(times)


def itemvec_app(bundle: Path, index: str) -> tuple[Any, Any]:
    """The app a worker serves (bundle memory-mapped), and its holder."""
    from itemvec.serve.http import create_app
    from itemvec.serve.state import ModelHolder

    cache = Path(tempfile.mkdtemp(prefix="itemvec-request-path-"))

    class Mapped(ModelHolder):
        def load_options(self) -> dict[str, Any]:
            return {"mmap": True, "mapped_cache": cache}

    holder = Mapped(bundle, index=index)
    holder.load()
    return create_app(holder), holder


async def started(app: Any) -> None:
    """Run the app's lifespan startup (so a lifespan-made state exists), not its shutdown."""
    queue: asyncio.Queue = asyncio.Queue()
    await queue.put({"type": "lifespan.startup"})
    done = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        if message["type"].startswith("lifespan.startup"):
            done.set()

    asyncio.get_running_loop().create_task(app({"type": "lifespan", "asgi": {"version": "3.0"},
                                                "state": {}}, queue.get, send))
    await done.wait()


def plan_for(endpoint: str, items: int, seed: int = 0) -> list[tuple[dict, bytes]]:
    rng = random.Random(seed)
    return [scope_of(request_bytes(endpoint, items, rng)) for _ in range(4096)]


def measure(bundle: Path, index: str, calls: int, warmup: int) -> list[dict]:
    from benchmarks.serving_ceiling import create

    app, holder = itemvec_app(bundle, index)
    model = holder.current()
    items = len(model.embeddings)
    ceiling = create()
    emb = model.embeddings
    rows = []
    loop = asyncio.new_event_loop()
    loop.run_until_complete(started(app))
    loop.run_until_complete(started(ceiling))
    for endpoint in ("similar", "recommend"):
        plan = plan_for(endpoint, items)
        row: dict[str, Any] = {"endpoint": endpoint, "items": items, "index": model.index_name}
        for name, target in (("ceiling", ceiling), ("itemvec", app)):
            row[name] = summary(loop.run_until_complete(per_request(target, plan, calls, warmup)))
        args = [json.loads(b) if b else s["path"].rsplit("/", 1)[1] for s, b in plan]
        if endpoint == "similar":
            row["query"] = timed_calls(lambda a: emb.similar_items(a, n=10), args, calls)
            ids = [emb.similar_items(a, n=10)[0] for a in args[:64]]
        else:
            row["query"] = timed_calls(lambda a: emb.recommend(a["history"], n=10), args, calls)
            ids = [emb.recommend(a["history"], n=10)[0] for a in args[:64]]
        row["marks"] = timed_calls(model.marks, ids, calls)
        row["beyond_query_us"] = round(row["itemvec"]["median_us"] - row["query"]["median_us"], 1)
        print(json.dumps(row), flush=True)
        rows.append(row)
    loop.close()
    return rows


def batch_costs(bundle: Path, index: str, sizes: list[int], queries: int,
                exact: bool = False) -> list[dict]:
    """Per-query cost of ``recommend_batch`` and ``similar_items_batch`` in batches of each
    size (the same random histories and ids as the load generator's), microseconds;
    ``exact``: recommendations score every item whatever the catalogue's size."""
    import itemvec.query.embeddings as embeddings_module

    if exact:
        embeddings_module.INDEX_RECOMMEND_MIN_ITEMS = 1 << 62
        embeddings_module.RECOMMEND_INDEX_MIN_ITEMS = 1 << 62
    _, holder = itemvec_app(bundle, index)
    emb = holder.current().embeddings
    items = len(emb)
    rng = random.Random(1)
    histories = [[f"i{rng.randrange(items)}" for _ in range(5)] for _ in range(queries)]
    singles = [f"i{rng.randrange(items)}" for _ in range(queries)]
    rows = []
    for size in sizes:
        row: dict[str, Any] = {"items": items, "index": holder.current().index_name,
                               "batch": size, "exact_recommend": exact}
        for name, fn, args in (("recommend", emb.recommend_batch, histories),
                               ("similar", emb.similar_items_batch, singles)):
            fn(args[:size], n=10)
            began = time.perf_counter()
            for start in range(0, queries - size + 1, size):
                fn(args[start:start + size], n=10)
            done = (queries // size) * size
            row[f"{name}_us_per_query"] = round((time.perf_counter() - began) / done * 1e6, 1)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


IMPORTS = ("numpy", "fastapi", "uvicorn", "threadpoolctl", "scipy.sparse", "polars", "faiss",
           "itemvec.query.embeddings", "itemvec.query.search", "itemvec.query.explain",
           "itemvec.serve.http", "itemvec.serve.workers")


IMPORT_SCRIPT = """
import importlib, json, sys
from pathlib import Path

def private_mib():
    fields = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        fields[key] = int(value.split()[0]) / 1024
    return round(fields["Private_Clean"] + fields["Private_Dirty"], 1)

out = {"interpreter": private_mib()}
for name in sys.argv[1:]:
    before = private_mib()
    importlib.import_module(name)
    out[name] = round(private_mib() - before, 1)
out["total"] = private_mib()
print(json.dumps(out))
"""


def import_costs() -> dict:
    """Private MiB (Linux smaps_rollup) each module a worker imports adds, in a worker's order,
    in a fresh interpreter."""
    done = subprocess.run([sys.executable, "-c", IMPORT_SCRIPT, *IMPORTS], capture_output=True,
                          text=True, check=True)
    out = json.loads(done.stdout)
    print(json.dumps(out), flush=True)
    return out


def proof_stages(bundle: Path, index: str, queries: int) -> dict:
    """Which candidate-set size proves a recommendation through the index (the old policy:
    200 first, widened 8-fold twice), and single-query cost of each way, microseconds."""
    import itemvec.query.index as index_module

    _, holder = itemvec_app(bundle, index)
    emb = holder.current().embeddings
    rng = random.Random(2)
    rows = [np.asarray([rng.randrange(len(emb)) for _ in range(5)]) for _ in range(queries)]
    proved: dict[str, int] = {}
    bound = index_module._bound_holds

    def counted(*args: Any) -> bool:
        held = bound(*args)
        key = f"{args[-1]}:{'proved' if held else 'not proved'}"
        proved[key] = proved.get(key, 0) + 1
        return held

    index_module._bound_holds = counted
    try:
        for history in rows:
            index_module.recommend_top(emb.vector_index, emb, [history], 10, None, [history],
                                       candidates=200, widen=2)
    finally:
        index_module._bound_holds = bound
    out: dict[str, Any] = {"items": len(emb), "queries": queries, "stages": proved}
    for name, kwargs in (("index_200_widen_2", {"candidates": 200, "widen": 2}),
                         ("index_1600_widen_1", {})):
        out[name] = timed_calls(lambda h, k=kwargs: index_module.recommend_top(
            emb.vector_index, emb, [h], 10, None, [h], **k), rows, queries)
    out["exact"] = timed_calls(lambda h: emb.top_logits(emb.pool([h]), 10, None, [h]), rows,
                               queries)
    if emb.recommend_index is not None:  # query.recommend_index, stored or built on load
        out["recommend_index"] = timed_calls(lambda h: emb.recommend_index.search(
            emb.pool([h]), 10, None, [h]), rows, queries)
    print(json.dumps(out), flush=True)
    return out


def profile(bundle: Path, index: str, endpoint: str, calls: int, top: int) -> None:
    app, holder = itemvec_app(bundle, index)
    plan = plan_for(endpoint, len(holder.current().embeddings))
    loop = asyncio.new_event_loop()
    loop.run_until_complete(started(app))
    loop.run_until_complete(per_request(app, plan, 50, 0))
    profiler = cProfile.Profile()
    profiler.enable()
    loop.run_until_complete(per_request(app, plan, calls, 0))
    profiler.disable()
    pstats.Stats(profiler).sort_stats("tottime").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path)
    parser.add_argument("--index", default="ivf")
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--profile", choices=("similar", "recommend"))
    parser.add_argument("--batches", help="per-query cost in process at these batch sizes, "
                        "e.g. 1,8,32 (no HTTP)")
    parser.add_argument("--exact", action="store_true", help="with --batches: recommendations "
                        "score every item, not through the index")
    parser.add_argument("--imports", action="store_true", help="private MiB each module a "
                        "worker imports adds (no bundle is read)")
    parser.add_argument("--stages", action="store_true", help="which candidate-set size proves "
                        "recommendations through the index, and what each way costs")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.imports:
        import_costs()
        return
    if args.bundle is None:
        parser.error("--bundle is required (except with --imports)")
    from itemvec.serve.state import limit_threads

    limit_threads(1)
    if args.profile:
        profile(args.bundle, args.index, args.profile, args.calls, args.top)
        return
    if args.stages:
        rows = [proof_stages(args.bundle, args.index, args.calls)]
    elif args.batches:
        rows = batch_costs(args.bundle, args.index, [int(b) for b in args.batches.split(",")],
                           args.calls, args.exact)
    else:
        rows = measure(args.bundle, args.index, args.calls, args.warmup)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
