"""The study page: offline HTML with the optimisation history, importances and trials."""

from __future__ import annotations

import re

from itemvec.analysis.tuning_page import tuning_page

TRIALS = [
    {"number": 0, "state": "COMPLETE", "value": 0.30, "i2i": 0.2, "s2i": 0.4, "seconds": 1.0,
     "params": {"dim": 64, "history_epochs": None}},
    {"number": 1, "state": "PRUNED", "value": None, "i2i": None, "s2i": None, "seconds": 0.5,
     "params": {"dim": 16, "history_epochs": 0}},
    {"number": 2, "state": "COMPLETE", "value": 0.40, "i2i": 0.3, "s2i": 0.5, "seconds": 1.0,
     "params": {"dim": 128, "history_epochs": 0}},
]
SUMMARY = {"study": "s<1>", "metric": "mean", "best_value": 0.40, "best_trial": 2, "finished": 3,
           "trials_to_within_1pct": 3, "best_params": {"dim": 128, "history_epochs": 0},
           "importances": {"history_epochs": 0.2, "dim": 0.8}, "trials": TRIALS}


def test_the_page_draws_every_trial_and_the_best_so_far():
    page = tuning_page(SUMMARY)
    assert page.count("<circle") == 3
    assert "fill='#aaaaaa'" in page  # the pruned trial, grey
    points = re.search(r"<polyline[^>]*points='([^']*)'", page).group(1).split()
    assert len(points) == 3  # best so far from the first completed trial on
    ys = [float(p.split(",")[1]) for p in points]
    assert ys[0] == ys[1] > ys[2]  # flat through the pruned trial, up (smaller y) at trial 2
    assert "s&lt;1&gt;" in page and "s<1>" not in page  # escaped


def test_importances_are_drawn_most_important_first_and_nothing_is_fetched():
    page = tuning_page(SUMMARY)
    assert page.index(">dim</text>") < page.index(">history_epochs</text>")
    assert "http" not in page and "<script" not in page
    assert "<td>history_epochs</td><td>0</td>" in page
    assert "null" in page  # trial 0's automatic history_epochs, as best_config.json writes it
