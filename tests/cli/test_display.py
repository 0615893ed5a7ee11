"""Result tables fit the terminal: rank, id, label cut with an ellipsis, score; nothing else."""

from __future__ import annotations

import pytest

from itemvec.cli.display import results_table, terminal_width

LONG = "Star Wars: Episode IV - A New Hope, the special edition with every scene restored (1977)"


@pytest.mark.parametrize("width", [40, 60, 80, 120])
def test_table_fits_the_width_and_cuts_labels(width):
    text = results_table("items similar to 50", ["50", "181", "172"], [0.91, 0.8, 0.5],
                         [LONG, None, "Empire Strikes Back, The (1980)"], "title", width=width)
    lines = text.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= width
    header = next(line for line in lines if "item_id" in line)
    assert "#" in header and "score" in header
    assert "0.9100" in text and "0.5000" in text and "181" in text  # scores and ids never cut
    if width < len(LONG):
        assert "…" in text and LONG not in text
    else:
        assert LONG in text


def test_table_without_labels_has_three_columns():
    text = results_table("search: x", ["a", "b"], [1.0, 0.5], width=80)
    header = next(line for line in text.splitlines() if "item_id" in line)
    assert [c.strip() for c in header.strip("┃ ").split("┃")] == ["#", "item_id", "score"]


def test_terminal_width_follows_columns(monkeypatch):
    monkeypatch.setenv("COLUMNS", "73")
    assert terminal_width() == 73
    monkeypatch.setenv("COLUMNS", "10")
    assert terminal_width() == 40  # never narrower than a usable table


def test_cold_items_are_marked_after_their_id():
    text = results_table("items similar to a", ["b", "c1"], [0.9, 0.7], cold=[False, True],
                         width=80)
    rows = {line.split("┃" if "┃" in line else "│")[2].strip(): line for line in text.splitlines()
            if line.count("│") >= 3}
    assert set(rows) == {"b", "c1 (cold)"}
