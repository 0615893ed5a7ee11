"""Scale measurements for benchmarks/scale.md.

    python -m benchmarks.scale count FILE.parquet [--time ts]        # streaming counter throughput
    python -m benchmarks.scale compare FILE.parquet --json OUT.json  # itemvec vs gensim item2vec
    python -m benchmarks.scale steps --items 789000 --batch 512 --steps 400  # optimiser step cost

``steps`` times sampled-softmax (infonce) steps on a random co-occurrence matrix of the given
size (20 non-zeros per row, the density of the 10M-event / 1M-item synthetic log) with lazy
(row-sparse) and dense Adam: setup (sampler, encoder) and the mean time of one step.

``compare`` splits the sessions by time (80/10/10), trains itemvec with default settings
(``train_on_log``: counting + training + early stopping on the valid part) and gensim's
Word2Vec skip-gram (item2vec: window 5, 5 negatives, 5 epochs, workers=2) on the same training
sessions, one after the other in the same process, then scores both with the same full-ranking
s2i HR@20 on (a capped number of) test queries. Times are wall-clock seconds and process CPU
seconds: the machine is shared, so CPU time is the steadier number.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np


def _clock():
    return time.perf_counter(), time.process_time()


def _since(start) -> dict:
    wall, cpu = _clock()
    return {"wall_s": round(wall - start[0], 2), "cpu_s": round(cpu - start[1], 2)}


def _peak_rss_gib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def count(args) -> dict:
    from itemvec.config import IngestConfig
    from itemvec.counting.streamed import count_file

    start = _clock()
    counts = count_file(args.events, IngestConfig(context="session_id", item="item_id",
                                                  time=args.time),
                        memory_limit=args.memory_limit, progress=False)
    took = _since(start)
    events = counts.stats["events"]
    return {"task": "count", "file": str(args.events), **counts.stats, **took,
            "events_per_wall_s": round(events / took["wall_s"]),
            "events_per_cpu_s": round(events / took["cpu_s"]), "peak_rss_gib": _peak_rss_gib()}


def _time_steps(trainer, matrix, n_steps: int) -> dict:
    """Setup (sampler, encoder, optimiser) and loop time of one ``fit`` of a single epoch."""
    marks = {}
    original = trainer._epoch

    def timed(*args, **kwargs):
        marks["loop"] = time.perf_counter()
        out = original(*args, **kwargs)
        marks["done"] = time.perf_counter()
        return out

    trainer._epoch = timed
    start = time.perf_counter()
    trainer.fit(matrix)
    loop = marks["done"] - marks["loop"]
    return {"setup_s": round(marks["loop"] - start, 2), "loop_s": round(loop, 2),
            "ms_per_step": round(1000 * loop / n_steps, 2)}


def steps(args) -> dict:
    import scipy.sparse as sp
    import torch

    from itemvec.config import TrainingConfig
    from itemvec.train.trainer import Trainer

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    n, nnz = args.items, 20 * args.items
    upper = sp.csr_matrix((np.ones(nnz, np.float32), (rng.integers(0, n, nnz),
                                                       rng.integers(0, n, nnz))), shape=(n, n))
    matrix = (upper + upper.T).tocsr()
    result = {"task": "steps", "items": n, "nonzeros": int(matrix.nnz), "batch": args.batch,
              "steps": args.steps, "threads": args.threads}
    for mode, key in (("on", "lazy"), ("off", "dense")):
        config = TrainingConfig(objective="infonce", init="random", epochs=1, device="cpu",
                                batch_size=args.batch, pairs_per_epoch=args.batch * args.steps,
                                sparse_updates=mode)
        result[key] = _time_steps(Trainer(config, progress=False), matrix, args.steps)
    result["speedup"] = round(result["dense"]["ms_per_step"] / result["lazy"]["ms_per_step"], 1)
    return result


def compare(args) -> dict:
    import logging

    from gensim.models import Word2Vec

    from itemvec.config import IngestConfig, PipelineConfig
    from itemvec.data.ingest import read_events
    from itemvec.evaluation.protocol import build_queries, evaluate, split_contexts
    from itemvec.query.embeddings import ItemEmbeddings
    from itemvec.train.pipeline import train_on_log, vocabulary_map

    logging.basicConfig(level=logging.WARNING)
    config = PipelineConfig()
    config.ingest = IngestConfig(context="session_id", item="item_id", time="ts")
    if args.threads:
        config.training.threads = args.threads
    start = _clock()
    log = read_events(args.events, config.ingest)
    read = _since(start)
    split = split_contexts(log, seed=0)
    train_log, valid_log, test_log = (log.subset(np.sort(p)) for p in
                                      (split.train, split.valid, split.test))
    result = {"task": "compare", "file": str(args.events), "events": int(log.n_events),
              "items": int(log.n_items), "train_events": int(train_log.n_events), "read": read}

    start = _clock()
    model = train_on_log(train_log, config, valid=valid_log, progress=False)
    result["itemvec"] = {**_since(start), "objective": config.training.objective,
                         "epochs_run": model.stats["epochs_run"],
                         "best_epoch": model.stats["best_epoch"]}
    itemvec = model.embeddings

    sentences = [list(s) for s in np.split(train_log.item_ids[train_log.items].astype(str),
                                           train_log.indptr[1:-1])]
    start = _clock()
    w2v = Word2Vec(sentences, vector_size=64, window=5, sg=1, negative=5, min_count=1,
                   workers=2, epochs=5, seed=0)
    result["gensim"] = {**_since(start), "settings": "sg=1 window=5 negative=5 epochs=5 "
                        "vector_size=64 workers=2"}
    del sentences
    keys = np.asarray(w2v.wv.index_to_key, dtype=object)
    gensim = ItemEmbeddings(keys, w2v.wv.get_normed_vectors(), temperature=1.0)

    for name, scorer in (("itemvec", itemvec), ("gensim", gensim)):
        queries = build_queries(test_log, vocabulary_map(test_log, scorer.item_ids), "s2i",
                                seed=0, max_queries=args.max_queries)
        result[name]["s2i"] = evaluate(scorer, queries, k=20)
    result["speedup_wall"] = round(result["gensim"]["wall_s"] / result["itemvec"]["wall_s"], 2)
    result["speedup_cpu"] = round(result["gensim"]["cpu_s"] / result["itemvec"]["cpu_s"], 2)
    result["peak_rss_gib"] = _peak_rss_gib()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="task", required=True)
    p = sub.add_parser("count")
    p.add_argument("events", type=Path)
    p.add_argument("--time", default="ts")
    p.add_argument("--memory-limit", default="4G")
    p.add_argument("--json", type=Path)
    p = sub.add_parser("compare")
    p.add_argument("events", type=Path)
    p.add_argument("--max-queries", type=int, default=5000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path)
    p = sub.add_parser("steps")
    p.add_argument("--items", type=int, default=789_000)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = {"count": count, "compare": compare, "steps": steps}[args.task](args)
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)


if __name__ == "__main__":
    main()
