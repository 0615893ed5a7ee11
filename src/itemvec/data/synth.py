"""A realistic synthetic shop log with planted structure, for the demo, tests and scale runs.

Items belong to hidden categories; categories come in related pairs (phone <-> phone case);
popularity is power-law inside each category; sessions mostly stay in one category, sometimes
wander to its related one, and a little noise is mixed in. A good model must put items of the
same category next to each other: that is the known answer the tests check.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
from tqdm.auto import tqdm

EVENT_TYPES = np.array(["view", "cart", "purchase"])
_WORDS = ["classic", "organic", "premium", "mini", "family", "eco", "smart", "deluxe", "fresh",
          "light", "pro", "max", "soft", "bold", "pure"]


@dataclass
class SyntheticShop:
    events: pl.DataFrame  # session_id, user_id, item_id, ts, event
    items: pl.DataFrame  # item_id, category, brand, price, title


def category_names(n: int) -> list[str]:
    return [f"cat{c:03d}" for c in range(n)]


def generate(n_events: int = 50_000, n_items: int = 1_000, n_categories: int = 20,
             mean_session_length: float = 6.0, stay_probability: float = 0.85,
             noise: float = 0.05, popularity_exponent: float = 1.1, seed: int = 0,
             start_time: float = 1.7e9) -> SyntheticShop:
    """Generate ``n_events`` events over ``n_items`` items (vectorised, ~10M events/min)."""
    rng = np.random.default_rng(seed)
    catalogue = _catalogue(n_items, n_categories, popularity_exponent, rng)
    lengths = _session_lengths(n_events, mean_session_length, rng)
    session, items = _draw_events(catalogue, lengths, stay_probability, noise, rng)
    return SyntheticShop(_events_frame(session, items, lengths, rng, start_time),
                         _items_frame(catalogue[0], rng))


def _catalogue(n_items: int, n_categories: int, exponent: float, rng: np.random.Generator):
    """Hidden category per item, members per category and their popularity CDFs."""
    category = rng.permutation(np.arange(n_items) % n_categories)
    members = [np.flatnonzero(category == c) for c in range(n_categories)]
    within = [rng.permutation(len(m)) for m in members]
    weights = [np.power(np.arange(1, len(m) + 1, dtype=np.float64), -exponent) for m in members]
    cdfs = [np.cumsum(w) / w.sum() for w in weights]
    return category, members, within, cdfs


def _draw_events(catalogue, lengths: np.ndarray, stay_probability: float, noise: float,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Session index and item of every event: home category, sometimes its partner, noise."""
    category, members, within, cdfs = catalogue
    n_items, n_categories = len(category), len(members)
    n_events, n_sessions = int(lengths.sum()), len(lengths)
    home = rng.integers(n_categories, size=n_sessions)
    session = np.repeat(np.arange(n_sessions), lengths)
    partner = home ^ 1  # categories pair up: 0<->1, 2<->3, ...
    partner = np.where(partner < n_categories, partner, home)
    wander = rng.random(n_events) > stay_probability
    event_category = np.where(wander, partner[session], home[session])
    items = np.empty(n_events, dtype=np.int64)
    for c in range(n_categories):
        slots = np.flatnonzero(event_category == c)
        ranks = np.searchsorted(cdfs[c], rng.random(len(slots)))
        items[slots] = members[c][within[c][np.minimum(ranks, len(members[c]) - 1)]]
    noisy = rng.random(n_events) < noise
    items[noisy] = rng.integers(n_items, size=int(noisy.sum()))
    return session, items


def _session_lengths(n_events: int, mean: float, rng: np.random.Generator) -> np.ndarray:
    lengths = 2 + rng.geometric(1.0 / max(mean - 1.0, 1.0), size=n_events // 2 + 2) - 1
    cumulative = np.cumsum(lengths)
    cut = int(np.searchsorted(cumulative, n_events)) + 1
    lengths = lengths[:cut]
    lengths[-1] -= int(cumulative[cut - 1] - n_events)
    return lengths[lengths > 0]


def _events_frame(session, items, lengths, rng, start_time, session_offset: int = 0,
                  n_users: int | None = None) -> pl.DataFrame:
    n_sessions = len(lengths)
    session_start = start_time + np.sort(rng.uniform(0, 90 * 86400, size=n_sessions))
    # Each event follows the previous one of its session by 20-120 s: times rise in file order.
    gaps = rng.uniform(20, 120, size=len(items))
    starts = np.cumsum(lengths) - lengths
    gaps[starts] = 0.0
    elapsed = np.cumsum(gaps)
    ts = session_start[session] + elapsed - np.repeat(elapsed[starts], lengths)
    event = EVENT_TYPES[rng.choice(3, size=len(items), p=[0.8, 0.15, 0.05])]
    n_users = n_users or max(1, n_sessions // 3)
    return pl.DataFrame({
        "session_id": _ids("s", session + session_offset),
        "user_id": _ids("u", rng.integers(n_users, size=n_sessions)[session]),
        "item_id": _ids("i", items),
        "ts": np.round(ts, 3),
        "event": event,
    })


def _ids(prefix: str, numbers: np.ndarray) -> pl.Series:
    """'s' + number as polars strings (no Python string per row: 100M rows stay fast)."""
    return pl.select(pl.concat_str([pl.lit(prefix), pl.Series(numbers).cast(pl.String)])
                     ).to_series()


def _items_frame(category: np.ndarray, rng: np.random.Generator) -> pl.DataFrame:
    n = len(category)
    names = category_names(int(category.max()) + 1)
    words = rng.choice(_WORDS, size=(n, 2))
    return pl.DataFrame({
        "item_id": [f"i{i}" for i in range(n)],
        "category": [names[c] for c in category],
        "brand": [f"brand{b}" for b in rng.integers(max(2, n // 20), size=n)],
        "price": np.round(np.exp(rng.normal(3.0, 0.8, size=n)), 2),
        "title": [f"{a} {b} {names[c]} item {i}" for i, (c, (a, b)) in
                  enumerate(zip(category, words, strict=True))],
    })


def write(shop: SyntheticShop, out: str | Path) -> tuple[Path, Path]:
    """Write the events to ``out`` (format by extension) and the item table beside it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    items_path = out.with_name(out.name.split(".")[0] + "_items" + "".join(out.suffixes))
    for frame, path in ((shop.events, out), (shop.items, items_path)):
        write_table(frame, path)
    return out, items_path


def write_streamed(out: str | Path, n_events: int, n_items: int, n_categories: int = 20,
                   seed: int = 0, chunk_events: int = 5_000_000, mean_session_length: float = 6.0,
                   stay_probability: float = 0.85, noise: float = 0.05,
                   popularity_exponent: float = 1.1, start_time: float = 1.7e9,
                   progress: bool = True) -> tuple[Path, Path]:
    """Like ``write(generate(...))`` for logs too big for memory: one chunk of sessions at a time.

    The catalogue (categories, popularity) is drawn once; each chunk of ~``chunk_events`` events
    gets its own seeded stream, so memory stays at one chunk. Parquet is written in row groups,
    CSV/TSV appended; sessions stay contiguous (grouped by session_id). The random stream differs
    from ``generate`` with the same seed.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    items_path = out.with_name(out.name.split(".")[0] + "_items" + "".join(out.suffixes))
    rng = np.random.default_rng(seed)
    catalogue = _catalogue(n_items, n_categories, popularity_exponent, rng)
    write_table(_items_frame(catalogue[0], rng), items_path)
    n_users = max(1, int(n_events / mean_session_length / 3))
    parquet = out.name.lower().endswith((".parquet", ".pq"))
    if not parquet and not out.name.lower().endswith((".csv", ".tsv")):
        raise ValueError(f"{out}: streamed synth writes .parquet, .csv or .tsv")
    tmp = out.with_name(f".{out.name}.tmp")
    writer, sessions, done = None, 0, 0
    try:
        with open(tmp, "wb") as sink, tqdm(total=n_events, unit="ev", unit_scale=True,
                                           desc="synth", disable=not progress) as bar:
            for chunk in range(-(-n_events // chunk_events)):
                size = min(chunk_events, n_events - done)
                chunk_rng = np.random.default_rng([seed, chunk + 1])
                lengths = _session_lengths(size, mean_session_length, chunk_rng)
                session, items = _draw_events(catalogue, lengths, stay_probability, noise,
                                              chunk_rng)
                frame = _events_frame(session, items, lengths, chunk_rng, start_time,
                                      session_offset=sessions, n_users=n_users)
                if parquet:
                    table = frame.to_arrow()
                    writer = writer or pq.ParquetWriter(sink, table.schema)
                    writer.write_table(table, row_group_size=1_000_000)
                else:
                    frame.write_csv(sink, include_header=chunk == 0,
                                    separator="\t" if out.name.lower().endswith(".tsv") else ",")
                sessions += len(lengths)
                done += size
                bar.update(size)
            if writer is not None:
                writer.close()
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out, items_path


def write_table(frame: pl.DataFrame, path: Path) -> None:
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        frame.write_parquet(path)
    elif name.endswith((".jsonl", ".ndjson", ".json")):
        frame.write_ndjson(path)
    elif name.endswith(".tsv"):
        frame.write_csv(path, separator="\t")
    else:
        frame.write_csv(path)
