"""Text search: does an exact title find its item first, and does a name find its family?

    python -m benchmarks.search [--datasets movielens-100k,instacart-sample] [--out benchmarks/results]

Each data set is trained with itemvec defaults (``benchmarks.datasets`` reads the events), its
item table is attached whole, as a user attaches it with ``--items`` (MovieLens ``u.item``: title,
release date, genre flags; Instacart ``products.csv``: name, aisle, department), and every item
of the model is searched for:

* exact-title hit@1: the query is the title as stored ("Empire Strikes Back, The (1980)");
  a hit when the first result has that title (several items may share one);
* typed-title hit@1: the title as a person types it ("the empire strikes back": lower case,
  article in front, no year); a hit when the first result's title reads the same typed;
* the same for the previous ranking (centroid of the character n-gram TF-IDF matches, then its
  nearest items), for comparison;
* named checks: "star wars" on MovieLens must return Star Wars, The Empire Strikes Back and
  Return of the Jedi in the top 5; "organic milk" on Instacart must return "Organic Milk" first;
  the ranks by behaviour alone (no attribute fusion) beside them;
* cost: building the attribute index, and a typed-title query with n=20 (neighbours fill it).

Writes ``search.md`` and ``search.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from benchmarks import datasets as data_sets  # noqa: E402
from itemvec.config import PipelineConfig  # noqa: E402
from itemvec.data.ingest import Reading, read_table  # noqa: E402
from itemvec.query.embeddings import ItemEmbeddings, load_embeddings  # noqa: E402
from itemvec.query.search import ItemSearch, aligned_table, title_forms  # noqa: E402
from itemvec.train.pipeline import save_model, train_on_log  # noqa: E402
from itemvec.util.files import atomic_write_bytes  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ("movielens-100k", "instacart-sample")
COMMAND = "python -m benchmarks.search"
CHECKS = {
    "movielens-100k": ("star wars", 5, ("Star Wars (1977)", "Empire Strikes Back, The (1980)",
                                        "Return of the Jedi (1983)")),
    "instacart-sample": ("organic milk", 1, ("Organic Milk",)),
}


def item_table(name: str, root: Path) -> pl.DataFrame:
    """The data set's item table as a user attaches it with ``--items`` (every column; nothing
    copied): MovieLens ``u.item`` named as in docs/user-guide.md (title, release date, 19 genre
    flags), Instacart ``products.csv`` (name, aisle, department)."""
    if name == "movielens-100k":
        columns = ("item_id", "title", "date", "video_date", "url", *(f"g{k}" for k in range(19)))
        return read_table(root / "u.item", Reading(sep="|", header=False, columns=columns,
                                                    encoding="latin-1"))
    products = pl.read_csv(root / "products.csv", infer_schema=False)
    return products.rename({"product_id": "item_id", "product_name": "title"})


def trained(name: str, data_dir: Path, cache: Path | None) -> tuple[ItemEmbeddings, float | None]:
    """The default model of the data set (a bundle under ``cache`` is reused when there)."""
    bundle = cache / name if cache is not None else None
    began = time.perf_counter()
    if bundle is not None and (bundle / "manifest.json").exists():
        embeddings = load_embeddings(bundle)
        embeddings.item_table = item_table(name, data_dir / name)
        return embeddings, None  # trained by an earlier run
    dataset = data_sets.load(name, data_dir)
    config = PipelineConfig(ingest=dataset.ingest)
    model = train_on_log(dataset.log, config, progress=False)
    if bundle is not None:
        save_model(model, bundle, config)
    embeddings = model.embeddings
    seconds = time.perf_counter() - began
    embeddings.item_table = item_table(name, data_dir / name)
    return embeddings, seconds


def previous_top(search: ItemSearch, query: str) -> str | None:
    """The ranking before lexical-first: nearest item to the TF-IDF matches' centroid."""
    encoded = search.encoder().encode(query)
    if encoded.vector is None or not np.any(encoded.vector):
        return None
    ids, _ = search.embeddings.similar_to_vector(encoded.vector, n=1)
    return str(ids[0]) if len(ids) else None


def title_hits(search: ItemSearch, titles: list[str], ids: list[str]) -> dict:
    """hit@1 of exact and typed titles, now and with the previous ranking."""
    title_of = dict(zip(ids, titles, strict=True))
    typed_of = {i: title_forms(t)[1] for i, t in title_of.items()}
    found = {"exact": [], "typed": [], "exact_previous": [], "typed_previous": []}
    began = time.perf_counter()
    for title in titles:
        for kind, query, want, lookup in (("exact", title, title, title_of),
                                          ("typed", title_forms(title)[1],
                                           title_forms(title)[1], typed_of)):
            top, _, _ = search.by_text(query, n=1)
            found[kind].append(len(top) > 0 and lookup[str(top[0])] == want)
    seconds = time.perf_counter() - began
    for title in titles:
        for kind, query, want, lookup in (("exact_previous", title, title, title_of),
                                          ("typed_previous", title_forms(title)[1],
                                           title_forms(title)[1], typed_of)):
            top = previous_top(search, query)
            found[kind].append(top is not None and lookup[top] == want)
    misses = [t for t, hit in zip(titles, found["exact"], strict=True) if not hit]
    return {**{f"{k}_hit@1": round(float(np.mean(v)), 4) for k, v in found.items()},
            "queries": len(titles), "ms_per_query": round(1000 * seconds / (2 * len(titles)), 2),
            "exact_misses": misses[:20]}


def fill_cost(search: ItemSearch, titles: list[str], queries: int = 200) -> dict:
    """Time to build the attribute index, then per typed-title query with n=20 (the list
    filled with neighbours)."""
    began = time.perf_counter()
    search.attributes()
    built = time.perf_counter() - began
    picked = np.random.default_rng(0).choice(len(titles), min(queries, len(titles)),
                                             replace=False)
    began = time.perf_counter()
    for k in picked:
        search.by_text(title_forms(titles[k])[1], n=20)
    return {"attribute_index_seconds": round(built, 2),
            "ms_per_query_n20": round(1000 * (time.perf_counter() - began) / len(picked), 2)}


def named_check(search: ItemSearch, name: str) -> dict:
    query, within, wanted = CHECKS[name]
    shown, scores, matches = titled_results(search, query)
    alone, _, _ = titled_results(ItemSearch(search.embeddings, attributes=False), query)
    return {"query": query, "top10": shown[:10], "scores": [round(float(s), 4) for s in
                                                            scores[:10]],
            "lexical_matches": len(matches), "wanted": list(wanted), "within": within,
            "wanted_ranks": ranks_of(wanted, shown),
            "wanted_ranks_behaviour_alone": ranks_of(wanted, alone),
            "passed": all(w in shown[:within] for w in wanted)}


def titled_results(search: ItemSearch, query: str) -> tuple[list, np.ndarray, list]:
    """The top 100 of a text query as titles, with their scores and the lexical matches."""
    ids, scores, matches = search.by_text(query, n=100)
    table = aligned_table(search.embeddings)
    title_of = dict(zip(table["item_id"].to_list(), table["title"].to_list(), strict=True))
    return [title_of.get(str(i)) for i in ids], scores, matches


def ranks_of(wanted: tuple[str, ...], shown: list) -> dict:
    return {w: shown.index(w) + 1 if w in shown else None for w in wanted}


def measure(name: str, data_dir: Path, cache: Path | None = None) -> dict:
    embeddings, train_seconds = trained(name, data_dir, cache)
    search = ItemSearch(embeddings)
    began = time.perf_counter()
    search.lexical()
    index_seconds = time.perf_counter() - began
    table = aligned_table(embeddings).filter(pl.col("title").is_not_null())
    result = {"items": len(embeddings), "titled_items": table.height,
              "train_seconds": None if train_seconds is None else round(train_seconds, 1),
              "index_seconds": round(index_seconds, 2),
              **title_hits(search, table["title"].to_list(), table["item_id"].to_list()),
              **fill_cost(search, table["title"].to_list()),
              "check": named_check(search, name)}
    print(name, json.dumps({k: v for k, v in result.items() if k != "exact_misses"}), flush=True)
    return result


def markdown(results: dict, command: str) -> str:
    lines = ["# Text search: lexical matches first, then neighbours\n",
             f"Command: `{command}`. Every titled item of the trained model is searched for by "
             "its exact stored title and by its typed title (lower case, article in front, no "
             "year); hit@1 = the first result has that title. *previous* = the ranking before "
             "lexical-first (nearest item to the centroid of the character n-gram TF-IDF "
             "matches).\n",
             "| data set | items | exact hit@1 | typed hit@1 | exact hit@1 previous | "
             "typed hit@1 previous | ms/query (n=1) | ms/query (n=20) | check | passed |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        c = r["check"]
        lines.append(f"| {name} | {r['titled_items']} | {r['exact_hit@1']:.4f} | "
                     f"{r['typed_hit@1']:.4f} | {r['exact_previous_hit@1']:.4f} | "
                     f"{r['typed_previous_hit@1']:.4f} | {r['ms_per_query']} | "
                     f"{r['ms_per_query_n20']} | "
                     f"\"{c['query']}\" top {c['within']} | {'yes' if c['passed'] else 'NO'} |")
    for name, r in results.items():
        c = r["check"]
        lines += ["", f"## {name}: \"{c['query']}\" (n=10)", "",
                  f"{c['lexical_matches']} lexical matches first, then neighbours:", ""]
        lines += [f"{k + 1}. {t} ({s})" for k, (t, s) in
                  enumerate(zip(c["top10"], c["scores"], strict=True))]
        for label, key in (("Wanted in the top " + str(c["within"]), "wanted_ranks"),
                           ("By behaviour alone (no attributes)", "wanted_ranks_behaviour_alone")):
            lines += ["", label + ": " + "; ".join(
                f"{w} at {'rank ' + str(r) if r else 'not in the top 100'}"
                for w, r in c[key].items())]
        if r["exact_misses"]:
            lines += ["", "Exact-title misses (first 20): "
                      + "; ".join(f"`{m}`" for m in r["exact_misses"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--data-dir", type=Path, default=data_sets.DEFAULT_DATA_DIR)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--cache", type=Path, default=None,
                        help="keep the trained bundles here and reuse them on the next run")
    args = parser.parse_args(argv)
    command = COMMAND if args.datasets == ",".join(DATASETS) else \
        f"{COMMAND} --datasets {args.datasets}"
    results = {name: measure(name, args.data_dir, args.cache)
               for name in args.datasets.split(",")}
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {"command": command, "results": results}
    atomic_write_bytes(args.out / "search.json", json.dumps(payload, indent=1).encode())
    atomic_write_bytes(args.out / "search.md", markdown(results, command).encode())


if __name__ == "__main__":
    main()
