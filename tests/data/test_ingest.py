"""Reading event logs: formats, string ids, time order, sessions, weights, dedupe, bad input."""

from __future__ import annotations

import gzip
import os
from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest

from itemvec.config import FeatureConfig, IngestConfig
from itemvec.data.ingest import MAX_ID_BYTES, read_events, read_table, restrict_vocabulary
from itemvec.train.pipeline import items_reading, read_item_table
from itemvec.util.errors import DataError, ItemvecError


def contexts(log) -> dict[str, list[str]]:
    """context id -> item ids in log order."""
    return {str(log.context_ids[c]): [str(log.item_ids[i]) for i in log.context(c)]
            for c in range(log.n_contexts)}


# -- formats and ids -------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "text"), [
    ("comma.csv", "session_id,item_id\ns1,007\ns1,42\ns2,007\n"),
    ("semicolon.csv", "session_id;item_id\ns1;007\ns1;42\ns2;007\n"),
    ("tabs.tsv", "session_id\titem_id\ns1\t007\ns1\t42\ns2\t007\n"),
    ("tabs.txt", "session_id\titem_id\ns1\t007\ns1\t42\ns2\t007\n"),
    ("lines.jsonl", '{"session_id": "s1", "item_id": "007"}\n{"session_id": "s1", "item_id": '
                    '"42"}\n{"session_id": "s2", "item_id": "007"}\n'),
])
def test_text_formats_keep_ids_exactly_as_written(write_file, name, text):
    log = read_events(write_file(name, text), IngestConfig())
    assert contexts(log) == {"s1": ["007", "42"], "s2": ["007"]}
    assert log.item_ids.tolist() == ["007", "42"]  # most frequent first
    assert not log.ordered  # no clock: baskets


def test_gzipped_csv(tmp_path):
    path = tmp_path / "events.csv.gz"
    path.write_bytes(gzip.compress(b"session_id;item_id\ns1;007\ns1;b\n"))
    assert contexts(read_events(path, IngestConfig())) == {"s1": ["007", "b"]}


def test_integer_ids_in_parquet_and_jsonl_become_strings(tmp_path):
    frame = pl.DataFrame({"session_id": [1, 1, 2], "item_id": [7, 8, 7]})
    frame.write_parquet(tmp_path / "e.parquet")
    frame.write_ndjson(tmp_path / "e.jsonl")
    for name in ("e.parquet", "e.jsonl"):
        log = read_events(tmp_path / name, IngestConfig())
        assert contexts(log) == {"1": ["7", "8"], "2": ["7"]}
        assert all(isinstance(i, str) for i in log.item_ids)


def test_float_written_integer_ids_lose_the_dot_zero(tmp_path):
    pl.DataFrame({"session_id": [1.0, 1.0], "item_id": [7.0, 8.5]}).write_parquet(
        tmp_path / "f.parquet")
    assert contexts(read_events(tmp_path / "f.parquet", IngestConfig())) == {
        "1": ["7.0", "8.5"]}  # not all integral: kept as written
    pl.DataFrame({"session_id": [1.0, 1.0], "item_id": [7.0, 8.0]}).write_parquet(
        tmp_path / "g.parquet")
    assert contexts(read_events(tmp_path / "g.parquet", IngestConfig())) == {"1": ["7", "8"]}


def test_quoted_delimiters_and_bom(write_file):
    path = write_file("q.csv", '\ufeffsession_id,item_id\n"s,1","a,b"\n"s,1",c\n')
    assert contexts(read_events(path, IngestConfig())) == {"s,1": ["a,b", "c"]}


def test_custom_column_names(write_file):
    path = write_file("e.csv", "order,sku,extra\no1,x,1\no1,y,2\n")
    log = read_events(path, IngestConfig(context="order", item="sku"))
    assert contexts(log) == {"o1": ["x", "y"]}


# -- time order and sessions ------------------------------------------------------------------------
def test_numeric_time_orders_events_within_a_context(write_file):
    path = write_file("e.csv", "session_id,item_id,ts\ns1,c,30\ns1,a,10\ns2,x,5\ns1,b,20\n")
    log = read_events(path, IngestConfig(time="ts"))
    assert log.ordered
    assert contexts(log) == {"s1": ["a", "b", "c"], "s2": ["x"]}
    np.testing.assert_array_equal(log.times, [10, 20, 30, 5])
    np.testing.assert_array_equal(log.context_end_times(), [30, 5])


def test_iso_time_orders_events_and_parses_to_seconds(write_file):
    path = write_file("e.csv", "session_id,item_id,ts\n"
                               "s1,late,2024-01-02T00:00:00\n"
                               "s1,early,2024-01-01T00:00:00\n"
                               "s1,mid,2024-01-01 12:00:00\n")
    log = read_events(path, IngestConfig(time="ts"))
    assert contexts(log) == {"s1": ["early", "mid", "late"]}
    np.testing.assert_allclose(np.diff(log.times), [43200, 43200])
    assert log.times[0] == pytest.approx(1704067200.0)  # 2024-01-01T00:00:00Z


def test_parquet_datetime_column_orders_events(tmp_path):
    utc = UTC
    pl.DataFrame({"session_id": ["s", "s"], "item_id": ["b", "a"],
                  "ts": [datetime(2024, 1, 2, tzinfo=utc), datetime(2024, 1, 1, tzinfo=utc)]}
                 ).write_parquet(tmp_path / "e.parquet")
    log = read_events(tmp_path / "e.parquet", IngestConfig(time="ts"))
    assert contexts(log) == {"s": ["a", "b"]}
    assert log.times[0] == pytest.approx(1704067200.0)


def test_ties_in_time_keep_file_order(write_file):
    path = write_file("e.csv", "session_id,item_id,ts\ns1,b,1\ns1,a,1\ns1,c,0\n")
    assert contexts(read_events(path, IngestConfig(time="ts"))) == {"s1": ["c", "b", "a"]}


def test_session_gap_splits_a_users_history(write_file):
    path = write_file("e.csv", "user,item_id,ts\n"
                               "u1,a,0\nu1,b,60\nu1,c,7200\nu1,d,7260\nu2,x,0\nu2,y,100000\n"
                               "u3,p,0\nu3,q,10\n")
    log = read_events(path, IngestConfig(context="user", time="ts", session_gap="30m"))
    assert contexts(log) == {"u1#0": ["a", "b"], "u1#1": ["c", "d"], "u2#0": ["x"],
                             "u2#1": ["y"], "u3": ["p", "q"]}


def test_without_session_gap_a_user_is_one_context(write_file):
    path = write_file("e.csv", "user,item_id,ts\nu1,a,0\nu1,b,60\nu1,c,7200\n")
    log = read_events(path, IngestConfig(context="user", time="ts"))
    assert contexts(log) == {"u1": ["a", "b", "c"]}


# -- weights and dedupe -------------------------------------------------------------------------
def test_event_weights_apply_and_zero_weight_drops_events(write_file):
    path = write_file("e.csv", "session_id,item_id,ts,event\n"
                               "s1,a,1,view\ns1,b,2,cart\ns1,c,3,purchase\ns1,d,4,ignored\n"
                               "s1,e,5,other\n")
    config = IngestConfig(time="ts", event="event",
                          event_weights="view=1,cart=3,purchase=5,ignored=0")
    log = read_events(path, config)
    assert contexts(log) == {"s1": ["a", "b", "c", "e"]}
    np.testing.assert_array_equal(log.weights, [1, 3, 5, 1])  # unknown types weigh 1


def test_all_events_weighted_zero_is_an_error(write_file):
    path = write_file("e.csv", "session_id,item_id,event\ns1,a,view\n")
    with pytest.raises(DataError, match="no events left"):
        read_events(path, IngestConfig(event="event", event_weights="view=0"))


def test_consecutive_duplicates_collapse_in_sessions(write_file):
    path = write_file("e.csv", "session_id,item_id,ts\n"
                               "s1,a,1\ns1,a,2\ns1,b,3\ns1,a,4\ns1,a,5\ns2,a,1\n")
    log = read_events(path, IngestConfig(time="ts"))
    assert contexts(log) == {"s1": ["a", "b", "a"], "s2": ["a"]}
    kept = read_events(path, IngestConfig(time="ts", dedupe_consecutive=False))
    assert contexts(kept) == {"s1": ["a", "a", "b", "a", "a"], "s2": ["a"]}


def test_baskets_are_deduplicated_keeping_max_weight(write_file):
    path = write_file("e.csv", "basket,item_id,event\n"
                               "b1,a,view\nb1,b,view\nb1,a,buy\nb2,b,view\nb2,b,view\n")
    log = read_events(path, IngestConfig(context="basket", event="event",
                                         event_weights="view=1,buy=4"))
    assert not log.ordered
    assert contexts(log) == {"b1": ["a", "b"], "b2": ["b"]}
    np.testing.assert_array_equal(log.weights, [4, 1, 1])


def test_basket_end_time_is_its_latest_event(write_file):
    path = write_file("e.csv", "basket,item_id,ts\nb1,a,50\nb1,b,10\nb2,c,5\nb2,d,7\n")
    log = read_events(path, IngestConfig(context="basket", time="ts", context_kind="basket"))
    assert contexts(log) == {"b1": ["a", "b"], "b2": ["c", "d"]}  # file order kept
    np.testing.assert_array_equal(log.context_end_times(), [50, 7])


def test_context_kind_forces_sessions_or_baskets(write_file):
    path = write_file("e.csv", "session_id,item_id,ts\ns1,a,1\ns1,b,2\ns1,a,3\n")
    basket = read_events(path, IngestConfig(time="ts", context_kind="basket"))
    assert not basket.ordered and contexts(basket) == {"s1": ["a", "b"]}
    session = read_events(path, IngestConfig(context_kind="session"))
    assert session.ordered and contexts(session) == {"s1": ["a", "b", "a"]}


def test_vocabulary_is_most_frequent_first_then_by_id(write_file):
    path = write_file("e.csv", "session_id,item_id\n"
                               "1,z\n1,m\n2,z\n2,b\n3,z\n3,m\n4,a\n")
    log = read_events(path, IngestConfig())
    assert log.item_ids.tolist() == ["z", "m", "a", "b"]
    np.testing.assert_array_equal(log.item_counts(), [3, 2, 1, 1])


def test_item_counts_leave_the_log_untouched(write_file):
    """Counts dedupe within each context; the session order itself must not change."""
    path = write_file("e.csv", "session_id,item_id\n1,z\n1,m\n1,z\n1,a\n2,m\n2,z\n")
    log = read_events(path, IngestConfig(context_kind="session"))
    items, indptr = log.items.copy(), log.indptr.copy()
    np.testing.assert_array_equal(log.item_counts(), [2, 2, 1])
    np.testing.assert_array_equal(log.items, items)
    np.testing.assert_array_equal(log.indptr, indptr)
    assert contexts(log) == {"1": ["z", "m", "z", "a"], "2": ["m", "z"]}


def test_subset_and_restrict_vocabulary(write_file):
    path = write_file("e.csv", "session_id,item_id\n1,a\n1,b\n2,a\n2,c\n3,b\n")
    log = read_events(path, IngestConfig())
    part = log.subset(np.array([2, 0]))
    assert contexts(part) == {"3": ["b"], "1": ["a", "b"]}
    kept = restrict_vocabulary(log, log.item_counts() >= 2)
    assert kept.item_ids.tolist() == ["a", "b"]
    assert contexts(kept) == {"1": ["a", "b"], "2": ["a"], "3": ["b"]}


# -- bad input -------------------------------------------------------------------------------------
def test_missing_column_names_it_and_the_columns_present(write_file):
    path = write_file("e.csv", "sess,product\ns1,a\n")
    with pytest.raises(DataError) as info:
        read_events(path, IngestConfig(item="product"))
    message = str(info.value)
    assert str(path) in message and "'session_id'" in message and "--context" in message
    assert "columns present: sess, product" in message


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("empty.csv", b"", "file is empty"),
    ("blank.jsonl", b"\n \n", "file is empty"),
    ("header.csv", b"session_id,item_id\n", "header but no rows"),
    ("events.xlsx", b"PK", "unknown file extension '.xlsx'; known: .csv"),
    ("ragged.csv", b"session_id,item_id\ns1,a\ns1,b,extra\n", "row 3 has 3 fields but the header "
                                                                "has 2"),
    ("quote.csv", b'session_id,item_id\ns1,"a\ns1,b\n', "row 3"),
    ("bad.parquet", b"PAR1 not really PAR1", "cannot parse as parquet"),
    ("bad.jsonl", b'{"session_id": 1, "item_id": \n', "cannot parse as jsonl"),
    ("array.json", b'[{"session_id": 1, "item_id": 2}]', "cannot parse as jsonl"),
    ("utf16.csv", "session_id,item_id\ns1,a\n".encode("utf-16"), "UTF-16"),
    ("nested.jsonl", b'{"session_id": 1, "item_id": {"a": 1}}\n', "column 'item_id' holds Struct"),
])
def test_unusable_files_raise_data_error_naming_the_file(write_file, name, content, expected):
    path = write_file(name, content)
    with pytest.raises(DataError) as info:
        read_events(path, IngestConfig())
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_events(tmp_path / "nope.csv", IngestConfig())
    (tmp_path / "dir.csv").mkdir()  # a directory is read as its files: here none
    with pytest.raises(DataError, match="holds no data files"):
        read_events(tmp_path / "dir.csv", IngestConfig())


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root can read files without read permission")
def test_unreadable_file(write_file):
    path = write_file("locked.csv", "session_id,item_id\ns1,a\n")
    path.chmod(0)
    try:
        with pytest.raises(DataError, match="locked.csv"):
            read_events(path, IngestConfig())
    finally:
        path.chmod(0o600)


@pytest.mark.parametrize(("content", "row", "value"), [
    ("session_id,item_id,ts\ns1,a,2024-01-01\ns1,b,yesterday\n", 3, "'yesterday'"),
    ("session_id,item_id,ts\ns1,a,1\ns1,b,2\ns1,c,2024-13-45\n", 4, "'2024-13-45'"),
    ("session_id,item_id,ts\ns1,a,2024-01-01\ns1,b,17\n", 3, "'17'"),
])
def test_unparsable_time_names_file_row_and_value(write_file, content, row, value):
    path = write_file("e.csv", content)
    with pytest.raises(DataError) as info:
        read_events(path, IngestConfig(time="ts"))
    message = str(info.value)
    assert str(path) in message and f"row {row}" in message and "'ts'" in message
    assert value in message


def test_non_finite_and_empty_times_are_errors(write_file):
    path = write_file("e.csv", "session_id,item_id,ts\ns1,a,1\ns1,b,inf\n")
    with pytest.raises(DataError, match="row 3: column 'ts': time inf is not a finite number"):
        read_events(path, IngestConfig(time="ts"))
    path = write_file("f.csv", "session_id,item_id,ts\ns1,a,1\ns1,b,\n")
    with pytest.raises(DataError, match="row 3: column 'ts' is empty"):
        read_events(path, IngestConfig(time="ts"))
    path = write_file("g.jsonl", '{"session_id": 1, "item_id": "a", "ts": [1]}\n')
    with pytest.raises(DataError, match="column 'ts' holds List"):
        read_events(path, IngestConfig(time="ts"))


@pytest.mark.parametrize(("name", "content", "row", "column"), [
    ("e.csv", "session_id,item_id\ns1,a\ns1,\ns1,b\n", 3, "item_id"),
    ("e.csv", "session_id,item_id\ns1,a\n,b\n", 3, "session_id"),
    ("e.csv", "session_id,item_id\ns1,a\ns1,   \n", 3, "item_id"),
    ("e.jsonl", '{"session_id": 1, "item_id": "a"}\n{"session_id": 1, "item_id": null}\n', 2,
     "item_id"),
    ("e.jsonl", '{"session_id": 1, "item_id": "a"}\n{"session_id": 1, "item_id": ""}\n', 2,
     "item_id"),
])
def test_null_or_blank_ids_name_file_row_and_column(write_file, name, content, row, column):
    path = write_file(name, content)
    with pytest.raises(DataError) as info:
        read_events(path, IngestConfig())
    message = str(info.value)
    assert str(path) in message and f"row {row}:" in message and f"'{column}'" in message


def test_latin1_file_is_read_without_merging_distinct_ids(write_file):
    path = write_file("e.csv", "session_id,item_id\ns1,caf\xe9\ns1,caf\xe8\ns1,b\n"
                      .encode("latin-1"))
    log = read_events(path, IngestConfig(encoding="latin-1"))
    assert set(log.item_ids.tolist()) == {"b", "café", "cafè"}


@pytest.mark.parametrize("name,layout", [("e.csv", "auto"), ("e.jsonl", "auto"),
                                         ("e.txt", "sequences")])
def test_one_latin1_byte_in_a_utf8_file_is_an_error_naming_row_and_byte(write_file, name,
                                                                         layout):
    """No fallback decode: reading the file as latin-1 would turn every 'café' into 'cafÃ©'."""
    lines = {"e.csv": ["session_id,item_id", "s1,café", "s1,b", "s2,caf\udce9"],
             "e.jsonl": ['{"session_id": "s1", "item_id": "café"}',
                         '{"session_id": "s2", "item_id": "caf\udce9"}'],
             "e.txt": ["s1 café b", "s2 caf\udce9"]}[name]
    data = ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")
    path = write_file(name, data)
    with pytest.raises(DataError) as info:
        read_events(path, IngestConfig(format=layout))
    row, offset = len(lines), data.index(b"\xe9")
    assert str(info.value) == (f"{path}: row {row}, byte {offset}: b'\\xe9' is not valid UTF-8; "
                               "say the file's encoding, e.g. --encoding latin-1 or cp1252")


def test_read_table_errors_are_itemvec_errors(write_file):
    with pytest.raises(ItemvecError):
        read_table(write_file("x.csv", b""))


# -- layouts: headerless, separators, encodings, RecBole, --order ---------------------------------
def test_headerless_tsv_with_columns_and_a_typed_backslash_t(write_file):
    path = write_file("u.data", "196\t242\t3\t881250949\n196\t302\t3\t881250000\n")
    config = IngestConfig(sep="\\t", header=False, columns="user,item,rating,ts", context="user",
                          item="item", time="ts")
    assert config.sep == "\t"
    log = read_events(path, config)
    assert contexts(log) == {"196": ["302", "242"]}  # time order
    assert list(log.times) == [881250000.0, 881250949.0]


def test_no_header_needs_columns_and_columns_must_count_right(write_file):
    with pytest.raises(ItemvecError, match="--no-header.*--columns user,item"):
        IngestConfig(header=False)
    path = write_file("u.data", "196\t242\t3\n")
    with pytest.raises(DataError, match=r"u\.data: --columns names 2 columns but the file has 3"):
        read_events(path, IngestConfig(sep="\t", header=False, columns="user,item",
                                       context="user", item="item"))


def test_unknown_extension_suggests_sep(write_file):
    with pytest.raises(DataError, match="unknown file extension '.data'.*--sep"):
        read_events(write_file("u.data", "a\tb\n"), IngestConfig())


def test_explicit_latin1_encoding(write_file):
    path = write_file("items.csv", "session_id|item_id\ns1|Caf\xe9\ns1|Na\xefve\n".encode("latin-1"))
    log = read_events(path, IngestConfig(sep="|", encoding="latin-1"))
    assert contexts(log) == {"s1": ["Café", "Naïve"]}
    with pytest.raises(ItemvecError, match="unknown encoding 'latin-9x'"):
        IngestConfig(encoding="latin-9x")


def test_recbole_atomic_file_drops_the_type_suffixes(write_file):
    path = write_file("ml.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                                  "1\t10\t4\t300\n1\t11\t5\t200\n2\t10\t3\t100\n")
    log = read_events(path, IngestConfig(context="user_id", item="item_id", time="timestamp"))
    assert contexts(log) == {"1": ["11", "10"], "2": ["10"]}


def test_order_column_orders_events_without_a_clock(write_file):
    path = write_file("e.csv", "order_id,product_id,pos\n1,a,3\n1,b,1\n1,c,2\n2,a,1\n")
    log = read_events(path, IngestConfig(context="order_id", item="product_id", order="pos",
                                         context_kind="session"))
    assert contexts(log) == {"1": ["b", "c", "a"], "2": ["a"]}
    assert log.times is None  # no clock: the held-out slice is random
    with pytest.raises(DataError, match=r"row 3: column 'pos': --order needs numbers"):
        read_events(write_file("f.csv", "order_id,product_id,pos\n1,a,1\n1,b,x\n"),
                    IngestConfig(context="order_id", item="product_id", order="pos"))


def test_session_gap_needs_a_unit():
    with pytest.raises(ItemvecError, match=r"ingest\.session_gap needs a unit, got '30'.*30s or 30m"):
        IngestConfig(time="ts", session_gap="30")
    assert IngestConfig(time="ts", session_gap="30m").session_gap == 1800.0
    assert IngestConfig(time="ts", session_gap=1800).session_gap == 1800.0  # numbers: seconds


def test_event_weights_for_absent_types_list_the_types_present(write_file):
    path = write_file("e.csv", "session_id,item_id,event\ns1,a,view\ns1,b,cart\ns2,a,view\n")
    with pytest.raises(DataError, match=r"e\.csv: --event-weights names 'basket' but column "
                                        r"'event' holds only: 'cart', 'view'"):
        read_events(path, IngestConfig(event="event", event_weights="view=1,basket=3"))
    log = read_events(path, IngestConfig(event="event", event_weights="view=1,cart=3"))
    assert sorted(log.weights.tolist()) == [1.0, 1.0, 3.0]


def test_item_table_with_its_own_layout(write_file):
    path = write_file("u.item", "1|Caf\xe9 (1995)|01-Jan-1995\n2|GoldenEye (1995)|\n"
                      .encode("latin-1"))
    side = FeatureConfig(items_sep="|", items_columns="movie,title,date",
                         items_encoding="latin-1")
    table = read_item_table(path, "movie", items_reading(side))
    assert table["item_id"].to_list() == ["1", "2"]
    assert table["title"].to_list() == ["Café (1995)", "GoldenEye (1995)"]


def test_order_breaks_the_ties_of_a_coarse_clock(write_file):
    rows = "".join(f"s{s},i{(s + k) % 9},2016-05-0{1 + s % 3},{100 * k}\n"
                   for s in range(40) for k in range(4))
    path = write_file("views.csv", "session_id,item_id,day,offset\n" + rows)
    tied = read_events(path, IngestConfig(time="day"))
    assert not tied.ordered and "timestamp" in tied.decision.describe()  # ties: baskets
    log = read_events(path, IngestConfig(time="day", order="offset"))
    assert "timestamp" not in log.decision.describe()  # judged on the day + offset order
    assert contexts(log)["s1"] == ["i1", "i2", "i3", "i4"]


# -- adversarial layouts: repeated headers, duplicate names, NA ids, non-finite weights ----------
def test_a_header_repeated_mid_file_is_an_error_naming_the_row(write_file):
    path = write_file("e.csv", "session_id,item_id\ns1,a\ns1,b\nsession_id,item_id\ns2,a\n")
    with pytest.raises(DataError, match=r"e\.csv: row 4 repeats the header \(session_id,item_id; "
                                        r"1 such rows\)"):
        read_events(path, IngestConfig())
    ok = write_file("ok.csv", "session_id,item_id\ns1,item_id\ns1,b\n")  # one cell alone: data
    assert "item_id" in read_events(ok, IngestConfig()).item_ids.tolist()


def test_a_column_name_twice_in_the_header_is_an_error(write_file):
    path = write_file("e.csv", "session_id,item_id,item_id\ns1,a,b\n")
    with pytest.raises(DataError, match=r"e\.csv: column name 'item_id' appears twice in the "
                                        r"header \(columns 2 and 3\); rename one"):
        read_events(path, IngestConfig())


def test_na_and_null_ids_are_counted_and_the_first_row_named(write_file):
    path = write_file("e.csv", "session_id,item_id\ns1,a\ns1,NA\ns1,null\ns2,\ns2,b\n")
    with pytest.raises(DataError) as info:
        read_events(path, IngestConfig())
    assert str(info.value) == (f"{path}: row 3: column 'item_id' is empty, NA or null: 3 rows "
                               "have missing ids, first at row 3; fill them in or drop those rows")


@pytest.mark.parametrize("weights,shown", [("view=nan", "view=nan"), ("view=1,cart=inf",
                                                                      "cart=inf")])
def test_a_non_finite_event_weight_is_named(weights, shown):
    with pytest.raises(ItemvecError, match=f"ingest.event_weights: {shown} is not a finite "
                                           "number"):
        IngestConfig(event="event", event_weights=weights)


def test_an_id_over_the_length_limit_is_refused_naming_the_row(write_file):
    at_limit, over = "a" * MAX_ID_BYTES, "é" * (MAX_ID_BYTES // 2 + 1)  # 2 bytes per é
    path = write_file("e.csv", f"session_id,item_id\ns1,b\ns1,{at_limit}\ns2,{over}\ns2,b\n")
    with pytest.raises(DataError, match=rf"e\.csv: row 4: column 'item_id': id of "
                                        rf"{MAX_ID_BYTES + 2:,} bytes is longer than the limit "
                                        rf"of {MAX_ID_BYTES:,} bytes \(1 rows\)"):
        read_events(path, IngestConfig())
    fine = write_file("ok.csv", f"session_id,item_id\ns1,b\ns1,{at_limit}\n")
    assert at_limit in read_events(fine, IngestConfig()).item_ids.tolist()
    lines = write_file("s.txt", f"u1 a b\nu2 a {over}\n")
    with pytest.raises(DataError, match=r"s\.txt: row 2: column 'item'"):
        read_events(lines, IngestConfig(format="sequences"))
