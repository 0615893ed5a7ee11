"""``itemvec cooccur``: count co-occurrences out of core (local engine) or on Spark."""

from pathlib import Path
from typing import Annotated, Any

import typer

from itemvec.cli.options import (
    INGEST_OPTIONS,
    READ_OPTIONS,
    ConfigFile,
    Quiet,
    build_config,
    config_options,
    configure_logging,
)
from itemvec.counting.spark import count_spark
from itemvec.counting.streamed import count_file, top_k_partners
from itemvec.data.streaming import not_streamable
from itemvec.store.counts import write_counts
from itemvec.util.errors import ConfigError


def register(app: typer.Typer) -> None:
    @app.command()
    @config_options(*INGEST_OPTIONS, *READ_OPTIONS, "cooccurrence.window", "cooccurrence.min_count",
                    "streaming.memory_limit")
    def cooccur(
        events: Annotated[Path, typer.Argument(help="Event log: .parquet or .csv/.tsv "
                                               "(local engine also .jsonl, read whole).")],
        out: Annotated[Path, typer.Option("--out", help="Directory to write: cooccurrence.npz, "
                                          "items.parquet (item_id, count), manifest.json.")],
        engine: Annotated[str, typer.Option(
            "--engine", help="local (streaming, bounded memory) or spark.")] = "local",
        master: Annotated[str, typer.Option(
            "--master", help="Spark master URL (--engine spark).")] = "local[2]",
        chunk_rows: Annotated[int, typer.Option(
            "--chunk-rows", help="Local engine: rows read per chunk.")] = 4_000_000,
        top_k: Annotated[int | None, typer.Option(
            "--top-k", help="Keep only each item's k strongest partners.")] = None,
        config_file: ConfigFile = None,
        quiet: Quiet = False,
        settings: dict[str, Any] | None = None,
    ) -> None:
        """Count co-occurring item pairs into the bundle's matrix format (no training)."""
        configure_logging(quiet)
        config = build_config(config_file, settings or {})
        reason = not_streamable(events, config.ingest)
        if reason:
            raise ConfigError(f"cooccur streams one CSV or Parquet file with a header; {reason}; "
                              "convert the log to one Parquet file (or train with itemvec train, "
                              "which reads every layout)")
        if engine == "local":
            counts = count_file(events, config.ingest, config.cooccurrence, chunk_rows=chunk_rows,
                                memory_limit=config.streaming.memory_limit, top_k=top_k,
                                progress=not quiet)
        elif engine == "spark":
            counts = count_spark(events, config.ingest, config.cooccurrence, master=master)
            if top_k is not None:
                counts.matrix = top_k_partners(counts.matrix, top_k)
        else:
            raise ConfigError(f"--engine must be local or spark, got {engine!r}")
        write_counts(out, counts, engine=engine, ingest=config.ingest,
                     config=config.cooccurrence)
        stats = counts.stats
        rate = stats.get("events_per_second")
        typer.echo(f"counted {counts.n_items} items, {counts.matrix.nnz} non-zero pairs in "
                   f"{stats.get('seconds', 0):.1f}s" + (f" ({rate:,} events/s)" if rate else "")
                   + f"; wrote {out}")
