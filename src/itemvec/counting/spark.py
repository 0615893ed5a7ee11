"""The co-occurrence count as a Spark job: same semantics as ``cooccurrence.count_pairs``.

For logs beyond one machine. The job mirrors ``ingest.build_log`` + ``count_pairs`` step by step:

1. read Parquet/CSV (CSV as strings), event weights (unknown types count 1), drop weight <= 0;
2. order each context by (time, file position) - Spark's ``monotonically_increasing_id`` is
   increasing in file order -, split sessions at gaps (``--session-gap``);
3. sessions: drop immediate repeats; baskets: one row per (basket, item) with the max weight;
4. ``--min-count``: drop items seen in fewer contexts (after de-duplication, like the pipeline);
5. number events per context (``row_number``) and self-join each context on
   ``0 < pos_b - pos_a <= window`` (baskets: ``basket_max_size - 1``), weight
   ``sqrt(w_a w_b) * decay / distance`` (harmonic, sessions only), skip same-item pairs;
6. sum by unordered pair, and collect: the item table and the aggregated pair table (one row
   per distinct pair - far smaller than the log) are written by Spark as Parquet into a staging
   directory and read back on the driver, which builds the same CSR and writes the same
   ``DIR/cooccurrence.npz`` + ``DIR/items.parquet`` as the local engine.

On a cluster the staging directory must be readable by the driver (a shared filesystem); pass
``staging`` to choose it. Floating-point sums may differ from the local engine in the last bits
because Spark adds in another order.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp

from itemvec.config import CooccurrenceConfig, IngestConfig
from itemvec.counting.streamed import Counts
from itemvec.data.context_kind import KindDecision
from itemvec.data.ingest import file_format, is_ordered, sniff_separator
from itemvec.data.streaming import resolve_kind
from itemvec.util.errors import ConfigError, DataError

logger = logging.getLogger(__name__)


def spark_available() -> bool:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return False
    return True


def session(master: str = "local[2]", app: str = "itemvec-cooccur"):
    """A SparkSession; local masters bind to 127.0.0.1 unless SPARK_LOCAL_IP says otherwise."""
    if not spark_available():
        raise ConfigError("--engine spark needs pyspark: pip install 'itemvec[spark]'")
    from pyspark.sql import SparkSession

    if master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    return (SparkSession.builder.master(master).appName(app)
            .config("spark.sql.shuffle.partitions", "8")
            .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
            .getOrCreate())


def _read(spark, path: Path, ingest: IngestConfig):
    kind = file_format(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if kind == "parquet":
        frame = spark.read.parquet(str(path))
    elif kind == "csv":
        frame = (spark.read.option("header", True).option("sep", sniff_separator(path))
                 .option("inferSchema", False).option("nullValue", "NA").csv(str(path)))
    else:
        raise DataError(f"{path}: --engine spark reads Parquet or CSV; convert {kind} first")
    for option, column in (("--context", ingest.context), ("--item", ingest.item),
                           ("--time", ingest.time), ("--event", ingest.event)):
        if column is not None and column not in frame.columns:
            raise DataError(f"{path}: column {column!r} (from {option}) not found; columns "
                            f"present: {', '.join(frame.columns)}")
    return frame


def _events(frame, ingest: IngestConfig):
    """Columns context, item, row, weight (and time), with weight > 0, as read_events builds."""
    from pyspark.sql import functions as F

    cols = [F.col(ingest.context).cast("string").alias("context"),
            F.col(ingest.item).cast("string").alias("item"),
            F.monotonically_increasing_id().alias("row")]
    if ingest.time is not None:
        raw = F.col(ingest.time)
        number = raw.cast("double")
        stamp = F.unix_micros(F.to_timestamp(raw.cast("string"))).cast("double") / 1e6
        cols.append(F.when(number.isNotNull(), number).otherwise(stamp).alias("time"))
    weight = F.lit(1.0)
    if ingest.event is not None and ingest.event_weights:
        weight = F.lit(1.0)
        for name, value in ingest.event_weights.items():
            weight = F.when(F.col(ingest.event).cast("string") == name, F.lit(float(value))
                            ).otherwise(weight)
    cols.append(weight.alias("weight"))
    events = frame.select(*cols)
    bad = events.filter(F.col("context").isNull() | F.col("item").isNull()).limit(1).count()
    if bad:
        raise DataError(f"column {ingest.context!r} or {ingest.item!r} has empty values")
    return events.filter(F.col("weight") > 0)


def _contexts(events, ingest: IngestConfig, ordered: bool):
    """Session split and de-duplication; adds ``pos`` (1-based order inside each context)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    has_time = "time" in events.columns
    order = ["time", "row"] if has_time else ["row"]
    if has_time and ingest.session_gap is not None:
        in_context = Window.partitionBy("context").orderBy(*order)
        gap = (F.col("time") - F.lag("time").over(in_context)) > ingest.session_gap
        events = events.withColumn("new", F.when(gap, 1).otherwise(0))
        running = in_context.rowsBetween(Window.unboundedPreceding, Window.currentRow)
        events = events.withColumn("part", F.sum("new").over(running)).drop("new")
    else:
        events = events.withColumn("part", F.lit(0))
    key = ["context", "part"]
    if ordered and ingest.dedupe_consecutive:
        window = Window.partitionBy(*key).orderBy(*order)
        events = events.withColumn("previous", F.lag("item").over(window))
        events = events.filter(F.col("previous").isNull() | (F.col("previous") != F.col("item")))
        events = events.drop("previous")
    elif not ordered:
        aggs = [F.max("weight").alias("weight"), F.min("row").alias("row")]
        if has_time:
            aggs.append(F.min("time").alias("time"))
        events = events.groupBy(*key, "item").agg(*aggs)
        order = ["row"]
    return events, key, order


def count_spark(path: str | Path, ingest: IngestConfig, config: CooccurrenceConfig | None = None,
                master: str = "local[2]", spark=None, staging: str | Path | None = None) -> Counts:
    """Count ``path`` with Spark; the same matrix and vocabulary as ``count_pairs``."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    path = Path(path)
    config = config or CooccurrenceConfig()
    if config.min_support > 1:
        raise ConfigError("cooccurrence.min_support is not supported by --engine spark")
    started = time.perf_counter()
    spark = spark or session(master)
    ingest, decision = _kind(path, ingest)
    ordered = decision.ordered
    events, key, order = _contexts(_events(_read(spark, path, ingest), ingest), ingest, ordered)
    events = events.cache()
    vocabulary = events.groupBy("item").agg(F.count(F.lit(1)).alias("len"))
    if config.min_count > 1:
        support = events.select(*key, "item").distinct().groupBy("item").count()
        keep = support.filter(F.col("count") >= config.min_count).select("item")
        events = events.join(keep, on="item", how="inner")
    events = events.withColumn("pos", F.row_number().over(Window.partitionBy(*key).orderBy(*order)))
    scale = F.col("weight")  # a pair weighs sqrt(w_a w_b) * decay, as in count_pairs
    if config.time_decay_half_life is not None and "time" in events.columns:
        newest = events.agg(F.max("time")).first()[0]
        end = F.max("time").over(Window.partitionBy(*key))
        scale = scale * F.pow(F.lit(0.5), (F.lit(newest) - end) / config.time_decay_half_life)
    events = events.withColumn("scale", F.sqrt(scale))
    reach = config.window if ordered else config.basket_max_size - 1
    a = events.select(*key, F.col("item").alias("a"), F.col("pos").alias("pa"),
                      F.col("scale").alias("sa"))
    b = events.select(*key, F.col("item").alias("b"), F.col("pos").alias("pb"),
                      F.col("scale").alias("sb"))
    pairs = a.join(b, on=key).filter((F.col("pb") > F.col("pa"))
                                     & (F.col("pb") <= F.col("pa") + reach)
                                     & (F.col("a") != F.col("b")))
    weight = F.col("sa") * F.col("sb")
    if ordered and config.distance_weighting == "harmonic":
        weight = weight / (F.col("pb") - F.col("pa"))
    pairs = (pairs.select(F.least("a", "b").alias("lo"), F.greatest("a", "b").alias("hi"),
                          weight.alias("w"))
             .groupBy("lo", "hi").agg(F.sum("w").alias("w")))
    item_counts = events.select(*key, "item").distinct().groupBy("item").count()
    counts = _collect(vocabulary, item_counts, pairs, staging, config.min_count > 1)
    events.unpersist()
    seconds = time.perf_counter() - started
    counts.stats.update({"source": str(path), "engine": "spark", "master": master,
                         "seconds": round(seconds, 3),
                         "context_kind": "session" if ordered else "basket",
                         "context_kind_decision": decision.to_dict()})
    return counts


def _kind(path: Path, ingest: IngestConfig) -> tuple[IngestConfig, KindDecision]:
    """``auto`` judged on the head of a file, as the local engine does; a folder of part
    files keeps the rule without a sample (sessions exactly when there is a time column)."""
    if path.is_file() or ingest.context_kind != "auto":
        return resolve_kind(path, ingest)
    kind = "session" if is_ordered(ingest, ingest.time is not None) else "basket"
    reason = "a folder input is not sampled: sessions exactly when there is a time column"
    return ingest.replace(context_kind=kind), KindDecision(kind, "data", reason)


def _collect(vocabulary, item_counts, pairs, staging, pruned: bool) -> Counts:
    """Write the (small) aggregated tables as Parquet, read them back, build the CSR."""
    root = Path(tempfile.mkdtemp(prefix="itemvec-spark-", dir=staging))
    try:
        vocabulary.join(item_counts, on="item", how="left").write.parquet(str(root / "items"))
        pairs.write.parquet(str(root / "pairs"))
        items = pl.read_parquet(root / "items" / "*.parquet")
        items = items.sort(["len", "item"], descending=[True, False])
        if pruned:
            items = items.filter(pl.col("count").is_not_null())
        items = items.with_columns(pl.int_range(items.height, dtype=pl.Int64).alias("index"))
        index = items.select("item", "index")
        pair_files = list((root / "pairs").glob("*.parquet"))
        table = (pl.read_parquet(pair_files) if pair_files
                 else pl.DataFrame(schema={"lo": pl.String, "hi": pl.String, "w": pl.Float64}))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    table = (table.join(index.rename({"item": "lo", "index": "i"}), on="lo")
             .join(index.rename({"item": "hi", "index": "j"}), on="hi"))
    i, j, w = table["i"].to_numpy(), table["j"].to_numpy(), table["w"].to_numpy()
    n = items.height
    matrix = sp.csr_matrix((np.concatenate([w, w]), (np.concatenate([i, j]),
                                                     np.concatenate([j, i]))), shape=(n, n))
    matrix = matrix.astype(np.float32)
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    stats = {"items": n, "nonzeros": int(matrix.nnz),
             "events": int(items["len"].sum()) if not pruned else None}
    return Counts(items["item"].to_numpy().astype(object),
                  items["count"].fill_null(0).to_numpy().astype(np.int64), matrix, stats)
