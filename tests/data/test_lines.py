"""One context per line: --format sequences (id item item ...) and --format baskets."""

from __future__ import annotations

import pytest

from itemvec.config import IngestConfig
from itemvec.data.ingest import read_events
from itemvec.data.lines import line_events
from itemvec.util.errors import DataError


def contexts(log) -> dict[str, list[str]]:
    return {str(log.context_ids[c]): [str(log.item_ids[i]) for i in log.context(c)]
            for c in range(log.n_contexts)}


def test_sequences_first_token_is_the_context_rest_its_items_in_order(write_file):
    path = write_file("Beauty.txt", "u1 c b a\nu2  a\tb\n\nu3\nu4 a c\n")
    log = read_events(path, IngestConfig(format="sequences"))
    assert contexts(log) == {"u1": ["c", "b", "a"], "u2": ["a", "b"], "u4": ["a", "c"]}
    assert log.times is None


def test_sequences_are_ordered_so_auto_judges_them(write_file):
    # the same pair order in every line: auto reads an order with signal as sessions
    lines = "".join(f"u{i} a{i % 7} b{i % 7} c{i % 7} d{i % 7}\n" for i in range(300))
    log = read_events(write_file("seq.txt", lines), IngestConfig(format="sequences"))
    assert log.decision.chosen_by == "data" and log.decision.evidence


def test_sequences_with_a_separator(write_file):
    path = write_file("seq.csv", "u1,a,b\nu2, c ,a\n")
    assert contexts(read_events(path, IngestConfig(format="sequences"))) == {
        "u1": ["a", "b"], "u2": ["c", "a"]}
    path = write_file("seq.txt", "u1;a b;c\n")
    assert contexts(read_events(path, IngestConfig(format="sequences", sep=";"))) == {
        "u1": ["a b", "c"]}


def test_baskets_are_lines_of_items_numbered_by_line(write_file):
    path = write_file("baskets.csv", "milk,bread\n\nbread,jam,milk\n")
    log = read_events(path, IngestConfig(format="baskets"))
    assert contexts(log) == {"1": ["milk", "bread"], "3": ["bread", "jam", "milk"]}
    assert not log.ordered  # items only, no order: baskets


def test_baskets_whitespace_separated_by_default_for_txt(write_file):
    path = write_file("baskets.txt", "a b\nc a\n")
    assert contexts(read_events(path, IngestConfig(format="baskets"))) == {
        "1": ["a", "b"], "2": ["c", "a"]}


def test_line_events_counts_lines_from_one():
    events = line_events("x a b\ny c\n", "sequences", None)
    assert events.rows() == [("x", "a", 1), ("x", "b", 1), ("y", "c", 2)]


def test_a_file_without_items_is_an_error(write_file):
    with pytest.raises(DataError, match=r"ids\.txt: no items found in --format sequences"):
        read_events(write_file("ids.txt", "u1\nu2\n"), IngestConfig(format="sequences"))
