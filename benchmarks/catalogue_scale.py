"""Cost of a catalogue-sized item table: ``itemvec train --items`` and ``itemvec similar`` at
``--catalogue`` rows, most of them cold (never in an event), as a user runs them.

A synthetic shop (``itemvec.data.synth``) of ``--active`` items is written as events; the item
table holds its items plus ``--catalogue - --active`` more, each copying a random active item's
category, brand and price. Measured (``/usr/bin/time -v``, one process per command): wall
time and peak resident memory of ``train`` without and with ``--items``, the stage seconds the
bundle's manifest records, bundle size, one ``similar`` command (load included), the mean
latency of in-process ``similar_items`` calls on the loaded bundle (a compact bundle scores its
distinct stored vectors and gathers; the same calls on every item's vector expanded in memory
are timed beside it, with the resident memory each form adds), and ``itemvec embed`` of a
``--new-slice`` of new catalogue rows into the trained bundle (which parts it hard-linked).

    python benchmarks/catalogue_scale.py --catalogue 1000000 --active 50000 --events 1000000 \\
        --out benchmarks/results/catalogue_scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from itemvec.data.synth import generate, write  # noqa: E402
from itemvec.query.embeddings import ItemEmbeddings, load_embeddings  # noqa: E402

CLI = [sys.executable, "-m", "itemvec.cli.main"]


def timed(args: list[str]) -> dict:
    """Wall seconds and peak RSS (MB) of one command, under ``/usr/bin/time -v``."""
    began = time.perf_counter()
    run = subprocess.run(["/usr/bin/time", "-v", *args], capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{run.stderr[-3000:]}")
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", run.stderr)
    cpu = sum(float(x) for x in re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)",
                                           run.stderr))
    return {"seconds": round(time.perf_counter() - began, 1), "cpu_seconds": round(cpu, 1),
            "peak_rss_mb": round(int(peak.group(1)) / 1024) if peak else None,
            "stdout": run.stdout[-2000:]}


def catalogue_table(items: pl.DataFrame, rows: int, seed: int) -> pl.DataFrame:
    """``items`` plus ``rows - len(items)`` copies (new ids) of random items' features."""
    warm = items.select("item_id", "category", "brand", "price")
    extra = warm.sample(rows - warm.height, with_replacement=True, seed=seed).with_columns(
        pl.format("x{}", pl.int_range(pl.len())).alias("item_id"))
    return pl.concat([warm, extra])


def bundle_stats(bundle: Path) -> dict:
    manifest = json.loads((bundle / "manifest.json").read_text())
    stats = manifest.get("stats", {})
    return {"mb": {p.name: round(p.stat().st_size / 2**20, 1) for p in bundle.iterdir()},
            "stage_seconds": stats.get("seconds"), "items": manifest.get("n_items"),
            "format_version": manifest.get("format_version"),
            "stored_vectors": manifest.get("stored_vectors"),
            "cold_items": stats.get("cold_items"),
            "similar_offset": manifest.get("query", {}).get("cold_similarity_offset")}


def rss_mb() -> float:
    """This process's resident memory now (MB)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def similar_latency(bundle: Path, queries: int = 50) -> dict:
    """Mean ms per ``similar_items`` call on the loaded bundle, per cold mode (exact matmul);
    for a compact bundle the same on every item's vector expanded in memory too."""
    before, began = rss_mb(), time.perf_counter()
    emb = load_embeddings(bundle)
    out = {"load_seconds": round(time.perf_counter() - began, 2),
           "load_rss_mb": round(rss_mb() - before)}
    out.update(_latency(emb, emb.item_ids[:queries]))
    if emb.compact:
        before = rss_mb()
        expanded = ItemEmbeddings(emb.item_ids, emb.vectors, emb.item_bias, emb.temperature,
                                  emb.query, n_warm=emb.n_warm, index=emb.index)
        out["expanded_rss_mb"] = round(rss_mb() - before)
        out.update(_latency(expanded, emb.item_ids[:queries], "expanded_"))
    return out


def _latency(emb: ItemEmbeddings, items: np.ndarray, prefix: str = "") -> dict:
    out = {}
    for mode in ("calibrated", "include", "exclude"):
        began = time.perf_counter()
        for item in items:
            emb.similar_items(item, n=20, cold=mode)
        out[f"{prefix}{mode}_ms"] = round((time.perf_counter() - began) / len(items) * 1e3, 1)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalogue", type=int, default=1_000_000)
    parser.add_argument("--active", type=int, default=50_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--new-slice", type=int, default=10_000,
                        help="rows of new catalogue items for `itemvec embed`")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/catalogue_scale.json"))
    args = parser.parse_args(argv)
    result: dict = {"catalogue": args.catalogue, "active": args.active, "events": args.events,
                    "threads": os.environ.get("OMP_NUM_THREADS")}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shop = generate(args.events, args.active, 50, seed=args.seed)
        events, _ = write(shop, root / "events.csv")
        items = root / "catalogue.csv"
        catalogue_table(shop.items, args.catalogue, args.seed).write_csv(items)
        result["catalogue_csv_mb"] = round(items.stat().st_size / 2**20, 1)
        train = [*CLI, "train", str(events), "--context", "session_id", "--item", "item_id",
                 "--time", "ts", "-q", *(["--epochs", str(args.epochs)] if args.epochs else [])]
        for variant, extra in (("behaviour", []), ("catalogue", ["--items", str(items),
                                                               "--features",
                                                               "category:cat,brand:cat,price:num"])):
            bundle = root / variant
            result[f"train_{variant}"] = timed([*train, *extra, "--out", str(bundle)])
            result[f"bundle_{variant}"] = bundle_stats(bundle)
        bundle = root / "catalogue"
        item = str(load_embeddings(bundle, check=False).item_ids[0])
        result["similar_command"] = timed([*CLI, "similar", str(bundle), item, "-n", "20",
                                           "--json"])
        result["similar_in_process"] = similar_latency(bundle)
        result["cold_share_top20"] = float(np.mean(
            json.loads(result["similar_command"]["stdout"])["cold"]))
        new_slice = root / "new_slice.csv"
        catalogue_table(shop.items, shop.items.height + args.new_slice, args.seed + 1).tail(
            args.new_slice).with_columns(pl.format("n{}", pl.int_range(pl.len())).alias(
                "item_id")).write_csv(new_slice)
        result["embed_new_slice"] = {"rows": args.new_slice, **timed(
            [*CLI, "embed", str(bundle), "--items", str(new_slice), "--out",
             str(root / "embedded")])}
        result["embed_new_slice"]["linked"] = sorted(
            part.name for part in (root / "embedded").iterdir() if (bundle / part.name).exists()
            and part.stat().st_ino == (bundle / part.name).stat().st_ino)
        result["bundle_embedded"] = bundle_stats(root / "embedded")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
