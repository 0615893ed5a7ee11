"""Recommendations through the recommendation index against the previous paths, in process.

    OMP_NUM_THREADS=1 python -m benchmarks.recommend_index --bundle /tmp/iv-bundles3/items-100000
    OMP_NUM_THREADS=1 python -m benchmarks.recommend_index --bundle /tmp/iv-bundles3/items-1000000

The bundles are ``benchmarks.serving_bench workers``'s synthetic ones (IVF and recommendation
index stored; a bundle without a stored recommendation index gets one built and stored).
Queries: ``--histories`` seeded random 5-item histories, not the index's tuning sample.
recall@10 counts a result as found when its logit reaches the exact 10th logit less 1e-4 (tied
items are not misses). Times: best of 3 rounds over 256 queries, microseconds per query, one
thread, as ``recommend_batch`` calls (batch 1 and 16); "previous" is the same model with the
recommendation index switched off (exact below 200,000 items, the similar-items index's
candidate proof above).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from itemvec.query.embeddings import ItemEmbeddings, load_embeddings  # noqa: E402
from itemvec.serve.state import limit_threads  # noqa: E402

ROUNDS, CALLS = 3, 256


def per_query_us(call: Callable[[int, int], object], batch: int, calls: int = CALLS) -> float:
    """Best of ``ROUNDS`` rounds: microseconds per query when queries come ``batch`` at a time."""
    best = np.inf
    for _ in range(ROUNDS):
        began = time.perf_counter()
        for start in range(0, calls, batch):
            call(start, start + batch)
        best = min(best, (time.perf_counter() - began) / calls * 1e6)
    return round(float(best), 1)


def recall_at_10(model: ItemEmbeddings, histories: list[list[str]], floor: np.ndarray) -> float:
    scores = model.recommend_batch(histories, n=10).scores
    return round(float(np.mean([np.sum(s >= f) / 10 for s, f in zip(scores, floor,
                                                                      strict=True)])), 4)


def measure(bundle: Path, count: int, seed: int = 11) -> dict:
    model = load_embeddings(bundle, mmap=True)
    began = time.perf_counter()
    model.use_index("ivf", bundle=bundle, save=True, mmap=True)
    loaded = time.perf_counter() - began
    previous = model.with_query()
    previous.recommend_index = None  # the paths before the recommendation index
    rng = np.random.default_rng(seed)
    histories = [[str(x) for x in model.item_ids[rng.choice(len(model), 5, replace=False)]]
                 for _ in range(count)]
    rows = [model.indices(h) for h in histories]
    _, exact = model.top_logits(model.pool(rows), 10, None, rows)
    floor = np.asarray([s[-1] - 1e-4 for s in exact])
    out = {"items": len(model), "params": model.recommend_index.params,
           "load_or_build_s": round(loaded, 1), "histories": count}
    for name, which in (("index", model), ("previous", previous)):
        which.recommend_batch(histories[:16], n=10)  # warm
        out[name] = {"recall@10": recall_at_10(which, histories, floor)}
        calls = CALLS if name == "index" or len(model) < 200_000 else 64
        for batch in (1, 16):
            out[name][f"us_batch_{batch}"] = per_query_us(
                lambda a, b, m=which: m.recommend_batch(histories[a:b], n=10), batch, calls)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--histories", type=int, default=1000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    limit_threads(1)
    result = measure(args.bundle, args.histories)
    print(json.dumps(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
