"""Property-based tests of the readers: any input gives a valid ``EventLog`` or a ``DataError``.

Never another exception (a polars error, a panic, a UnicodeDecodeError) and never a hang. Each
class of bad input below gets its own strategy; example counts stay modest so the file runs in
a few seconds.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import signal
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from itemvec.config import CooccurrenceConfig, IngestConfig
from itemvec.counting.cooccurrence import count_pairs
from itemvec.data.ingest import MAX_ID_BYTES, EventLog, read_events
from itemvec.util.errors import DataError

FUZZ = settings(max_examples=50, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
HANG_SECONDS = 20
NULLS = {"", "NA", "null", "NULL"}


@contextlib.contextmanager
def no_hang(seconds: int = HANG_SECONDS):
    """Fail (instead of hanging the suite) when a read takes longer than ``seconds``."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def _alarm(*_):
        raise TimeoutError(f"reader took longer than {seconds}s")

    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def check_log(log: EventLog) -> None:
    """Structural invariants every successfully read log satisfies."""
    assert isinstance(log, EventLog)
    assert log.n_events > 0 and log.n_items > 0 and log.n_contexts > 0
    assert log.indptr[0] == 0 and log.indptr[-1] == log.n_events
    assert np.all(np.diff(log.indptr) > 0), "empty context"
    assert log.items.min() >= 0 and log.items.max() < log.n_items
    assert np.all(log.weights > 0)
    assert all(isinstance(i, str) and i.strip() for i in log.item_ids)
    assert len(set(log.item_ids.tolist())) == log.n_items
    assert len(log.context_ids) == log.n_contexts
    assert np.all(np.bincount(log.items, minlength=log.n_items) > 0)
    if log.times is not None:
        assert np.all(np.isfinite(log.times))
        for c in range(log.n_contexts if log.ordered else 0):  # baskets keep file order
            assert np.all(np.diff(log.times[log.indptr[c]:log.indptr[c + 1]]) >= 0)


def read_or_data_error(path: Path, config: IngestConfig) -> EventLog | None:
    """Read ``path``: a valid log, or None after a DataError; anything else fails the test."""
    try:
        with no_hang():
            log = read_events(path, config)
    except DataError as exc:
        message = str(exc)
        assert "\n" not in message.strip(), "error messages are one line"
        assert str(path) in message, "error messages name the file"
        return None
    check_log(log)
    return log


CONFIGS = [IngestConfig(), IngestConfig(time="ts"),
           IngestConfig(time="ts", session_gap=60, context_kind="session")]


# -- 1. garbage bytes --------------------------------------------------------------------------
@FUZZ
@given(data=st.binary(max_size=2000), ext=st.sampled_from([".csv", ".tsv", ".jsonl", ".parquet",
                                                           ".csv.gz", ".txt"]),
       config=st.sampled_from(CONFIGS))
def test_garbage_bytes(tmp_path, data, ext, config):
    path = tmp_path / f"garbage{ext}"
    path.write_bytes(gzip.compress(data) if ext.endswith(".gz") else data)
    read_or_data_error(path, config)


@FUZZ
@given(body=st.binary(max_size=500), config=st.sampled_from(CONFIGS))
def test_garbage_after_a_valid_header(tmp_path, body, config):
    path = tmp_path / "e.csv"
    path.write_bytes(b"session_id,item_id,ts\n" + body)
    read_or_data_error(path, config)


# -- 2. well-formed CSV with hostile ids round-trips exactly --------------------------------------
# Any character but surrogates: control characters, NUL, CR and LF included (quoted by csv).
ID_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)
ids = ID_TEXT.filter(lambda s: s.strip() != "" and s not in NULLS and not s.startswith("\ufeff"))


@st.composite
def event_rows(draw, id_strategy=ids, max_rows=30):
    n = draw(st.integers(1, max_rows))
    contexts = draw(st.lists(id_strategy, min_size=1, max_size=4))
    items = draw(st.lists(id_strategy, min_size=1, max_size=8))
    rows = []
    for _ in range(n):
        rows.append((draw(st.sampled_from(contexts)), draw(st.sampled_from(items)),
                     draw(st.integers(0, 10_000))))
    return rows


def write_csv(path: Path, rows, separator: str, bom: bool, encoding: str = "utf-8") -> None:
    buffer = io.StringIO()
    # "\r\n" makes csv quote any field holding \r or \n (with "\n" a bare \r goes unquoted)
    writer = csv.writer(buffer, delimiter=separator, lineterminator="\r\n")
    writer.writerow(["session_id", "item_id", "ts"])
    writer.writerows(rows)
    path.write_bytes(("\ufeff" if bom else "").encode(encoding) + buffer.getvalue().encode(encoding))


def expected_contexts(rows) -> dict[str, list[str]]:
    """context -> items in (time, file) order with consecutive repeats collapsed."""
    out: dict[str, list[str]] = {}
    for context, item, _ in sorted(rows, key=lambda r: r[2]):  # stable: ties keep file order
        seq = out.setdefault(context, [])
        if not seq or seq[-1] != item:
            seq.append(item)
    return out


def read_contexts(log: EventLog) -> dict[str, list[str]]:
    return {str(log.context_ids[c]): [str(log.item_ids[i]) for i in log.context(c)]
            for c in range(log.n_contexts)}


@FUZZ
@given(rows=event_rows(), separator=st.sampled_from([",", ";", "\t"]), bom=st.booleans())
def test_unicode_whitespace_and_quoted_ids_round_trip(tmp_path, rows, separator, bom):
    path = tmp_path / "e.csv"
    write_csv(path, rows, separator, bom)
    log = read_or_data_error(path, IngestConfig(time="ts", context_kind="session"))
    if log is None:
        # The only acceptable failure: a header the separator sniffer cannot see because an id
        # holds another separator... which cannot happen in the header; so no failure at all.
        pytest.fail("a well-formed CSV was rejected")
    assert read_contexts(log) == expected_contexts(rows)


@FUZZ
@given(rows=event_rows(id_strategy=st.text(st.characters(min_codepoint=32, max_codepoint=255),
                                           min_size=1, max_size=8)
                       .filter(lambda s: s.strip() != "" and s not in NULLS)))
def test_latin1_files_keep_distinct_ids_distinct(tmp_path, rows):
    path = tmp_path / "e.csv"
    write_csv(path, rows, ",", bom=False, encoding="latin-1")
    log = read_or_data_error(path, IngestConfig(time="ts", context_kind="session",
                                                encoding="latin-1"))
    assert log is not None
    assert read_contexts(log) == expected_contexts(rows)


@FUZZ
@given(rows=event_rows(max_rows=20), duplicate=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_duplicate_and_unsorted_rows(tmp_path, rows, duplicate, seed):
    rows = rows * duplicate
    rng = np.random.default_rng(seed)
    rows = [rows[i] for i in rng.permutation(len(rows))]
    path = tmp_path / "e.csv"
    write_csv(path, rows, ",", bom=False)
    log = read_or_data_error(path, IngestConfig(time="ts", context_kind="session"))
    assert log is not None
    assert read_contexts(log) == expected_contexts(rows)


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(length=st.integers(10_000, 200_000), separator=st.sampled_from([",", ";"]))
def test_very_long_lines(tmp_path, length, separator):
    """Long lines parse; an id over ``MAX_ID_BYTES`` is refused naming its row, one at the
    limit is kept whole."""
    long_id, note = "x" * length, "n" * length
    path = tmp_path / "e.csv"
    path.write_text(f"session_id{separator}item_id{separator}note\n"
                    f"s1{separator}{long_id}{separator}{note}\ns1{separator}b{separator}{note}\n")
    with pytest.raises(DataError, match=f"row 2: column 'item_id': id of {length:,} bytes"):
        read_events(path, IngestConfig())
    at_limit = "y" * MAX_ID_BYTES
    path.write_text(f"session_id{separator}item_id{separator}note\n"
                    f"s1{separator}{at_limit}{separator}{note}\ns1{separator}b{separator}{note}\n")
    log = read_or_data_error(path, IngestConfig())
    assert log is not None and set(log.item_ids) == {at_limit, "b"}



@FUZZ
@given(rows=event_rows(max_rows=25), kinds=st.lists(st.sampled_from(["view", "cart", "buy"]),
                                                    min_size=25, max_size=25),
       zero=st.sets(st.sampled_from(["view", "cart", "buy"])))
def test_contexts_emptied_by_zero_weights_disappear(tmp_path, rows, kinds, zero):
    path = tmp_path / "e.csv"
    frame = pl.DataFrame({"session_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
                          "ts": [r[2] for r in rows], "event": kinds[:len(rows)]})
    frame.write_csv(path)
    present = set(kinds[:len(rows)])  # a weight for an absent type is an error of its own
    weights = ",".join(f"{k}={0 if k in zero else 2}" for k in ("view", "cart", "buy")
                       if k in present)
    log = read_or_data_error(path, IngestConfig(time="ts", event="event", event_weights=weights,
                                                  context_kind="session"))
    kept = [r for r, k in zip(rows, kinds, strict=False) if k not in zero]
    if not kept:
        assert log is None  # "no events left after applying event weights"
        return
    assert log is not None and np.all(log.weights == 2)
    assert read_contexts(log) == expected_contexts(kept)

# -- 3. mixed types, nulls and nesting in JSONL and Parquet -------------------------------------
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                        st.floats(allow_nan=False, allow_infinity=False), ID_TEXT)
json_value = st.one_of(json_scalar, st.lists(json_scalar, max_size=3),
                       st.dictionaries(st.sampled_from(["a", "b"]), json_scalar, max_size=2))


@FUZZ
@given(records=st.lists(st.fixed_dictionaries(
           {"session_id": json_value, "item_id": json_value},
           optional={"ts": json_value, "other": json_value}), min_size=1, max_size=15),
       config=st.sampled_from(CONFIGS))
def test_jsonl_with_mixed_types(tmp_path, records, config):
    path = tmp_path / "e.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    read_or_data_error(path, config)


@FUZZ
@given(columns=st.fixed_dictionaries({
    "session_id": st.sampled_from(["int", "str", "float", "null", "bool"]),
    "item_id": st.sampled_from(["int", "str", "float", "null", "list"]),
    "ts": st.sampled_from(["int", "float", "str", "datetime", "null", "nan"]),
}), n=st.integers(1, 20), seed=st.integers(0, 2**16), config=st.sampled_from(CONFIGS))
def test_parquet_with_assorted_column_types(tmp_path, columns, n, seed, config):
    rng = np.random.default_rng(seed)

    def column(kind: str) -> pl.Series:
        values = rng.integers(0, 5, size=n)
        if kind == "int":
            return pl.Series(values)
        if kind == "float":
            return pl.Series(values * 0.5)
        if kind == "str":
            return pl.Series([f" {v}" if v % 2 else str(v) for v in values])
        if kind == "bool":
            return pl.Series(values % 2 == 0)
        if kind == "null":
            return pl.Series([None if v == 0 else int(v) for v in values])
        if kind == "nan":
            return pl.Series(np.where(values == 0, np.nan, values.astype(float)))
        if kind == "list":
            return pl.Series([[int(v)] for v in values])
        return pl.Series((values * 86_400_000).astype("datetime64[ms]"))

    path = tmp_path / "e.parquet"
    pl.DataFrame({name: column(kind) for name, kind in columns.items()}).write_parquet(path)
    read_or_data_error(path, config)


# -- 4. degenerate logs ------------------------------------------------------------------------
@pytest.mark.parametrize("content", [
    "session_id,item_id\ns1,a\n",  # one event
    "session_id,item_id\ns1,a\ns1,a\ns1,a\n",  # one item
    "session_id,item_id\ns1,a\ns2,b\ns3,c\n",  # only singleton contexts
    "session_id,item_id,ts\ns1,a,1\ns1,a,2\n",  # a session of repeats collapses to one event
])
def test_tiny_logs_are_valid(tmp_path, content):
    path = tmp_path / "e.csv"
    path.write_text(content)
    config = IngestConfig(time="ts", context_kind="session") if ",ts" in content else IngestConfig()
    log = read_or_data_error(path, config)
    assert log is not None
    assert count_pairs(log, CooccurrenceConfig()).nnz == 0


def test_one_huge_context_is_read_and_counted_in_bounded_time(tmp_path):
    """O(events x window): 200k events in one session, well under the limit (1M is fine too)."""
    n = 200_000
    rng = np.random.default_rng(0)
    frame = pl.DataFrame({"session_id": np.zeros(n, dtype=np.int64),
                          "item_id": rng.integers(0, 5_000, size=n), "ts": np.arange(n)})
    path = tmp_path / "big.parquet"
    frame.write_parquet(path)
    started = time.perf_counter()
    for kind in ("session", "basket"):
        log = read_events(path, IngestConfig(time="ts", context_kind=kind))
        assert log.n_contexts == 1
        matrix = count_pairs(log, CooccurrenceConfig(window=5, basket_max_size=50))
        assert matrix.nnz > 0
        assert abs(matrix - matrix.T).max() == 0
    assert time.perf_counter() - started < 20
