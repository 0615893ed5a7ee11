"""How sure is a ratio of two HR@20s: paired bootstrap over the test queries.

Every method answers the same test queries in the same order, and results.json keeps each one's
per-query hits (``protocol.encode_hits``). Resampling queries with replacement, the same draw for
both methods, gives a percentile interval for itemvec's HR@20 divided by the best peer's in each
(data set, task) cell, and for the geometric mean of those ratios (each cell resampled on its
own, as the cells' query sets are independent). The discordant counts (queries only itemvec hits,
queries only the peer hits) are McNemar's test statistic in plain numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from benchmarks.protocol import decode_hits

DRAWS = 2000


@dataclass(frozen=True)
class PairedCell:
    """One (data set, task): itemvec's and one peer's hits on the same queries."""

    name: str
    task: str
    peer: str
    ours: np.ndarray  # bool per query
    theirs: np.ndarray

    @property
    def ratio(self) -> float:
        return float(self.ours.mean() / self.theirs.mean())

    @property
    def discordant(self) -> tuple[int, int]:
        """(only itemvec hits, only the peer hits)."""
        return int((self.ours & ~self.theirs).sum()), int((~self.ours & self.theirs).sum())


def paired_cell(block: dict, name: str, task: str, peer: str) -> PairedCell | None:
    """The cell's hits, or None where an entry predates stored hits."""
    n = block["stats"]["test_queries"][task]
    entries = [block["methods"][m]["tasks"][task] for m in ("itemvec", peer)]
    if any("hits" not in e for e in entries):
        return None
    ours, theirs = (decode_hits(e["hits"], n) for e in entries)
    return PairedCell(name, task, peer, ours, theirs)


def bootstrap_ratios(cells: list[PairedCell], draws: int = DRAWS,
                     seed: int = 0) -> np.ndarray:
    """(draws x cells) ratios, each draw resampling every cell's queries with replacement.

    A paired draw of binary hits is fully described by how many queries fall in each of the
    four (ours, theirs) outcomes, so one multinomial draw per replicate is the same resampling
    as drawing query indices, without a draws x queries index array."""
    rng = np.random.default_rng(seed)
    out = np.empty((draws, len(cells)))
    for j, cell in enumerate(cells):
        n = len(cell.ours)
        only_ours, only_theirs = cell.discordant
        both = int((cell.ours & cell.theirs).sum())
        counts = np.array([both, only_ours, only_theirs, n - both - only_ours - only_theirs])
        drawn = rng.multinomial(n, counts / n, size=draws)
        ours = drawn[:, 0] + drawn[:, 1]
        theirs = np.maximum(drawn[:, 0] + drawn[:, 2], 1)  # a draw with no peer hit
        out[:, j] = ours / theirs
    return out


def intervals(cells: list[PairedCell], level: float = 0.95, draws: int = DRAWS,
              seed: int = 0) -> tuple[list[tuple[float, float]], tuple[float, float]]:
    """Percentile intervals of each cell's ratio and of their geometric mean."""
    if not cells:
        return [], (float("nan"), float("nan"))
    ratios = bootstrap_ratios(cells, draws, seed)
    tails = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    per_cell = [tuple(np.percentile(ratios[:, j], tails)) for j in range(len(cells))]
    geomean = np.exp(np.log(np.maximum(ratios, 1e-12)).mean(axis=1))
    return per_cell, tuple(np.percentile(geomean, tails))
