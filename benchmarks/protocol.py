"""itemvec's evaluation protocol, shared by every method: split, vocabulary, queries, ranks.

The split is ``itemvec.evaluation.protocol.split_contexts`` (80/10/10 by the time of each context's last
event, seeded random without a clock). The vocabulary is what ``itemvec.train.pipeline.train_on_log``
keeps from the train split with default settings (items seen in >= ``min_count`` train contexts),
so every method ranks the same items and answers the same queries.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from itemvec.config import PipelineConfig
from itemvec.counting.cooccurrence import count_pairs, prune_rare_items
from itemvec.data.ingest import EventLog, restrict_vocabulary
from itemvec.evaluation.protocol import (
    TASKS,
    Queries,
    Split,
    build_queries,
    metrics_from_ranks,
    split_contexts,
    target_ranks,
)
from itemvec.train.pipeline import vocabulary_map

logger = logging.getLogger(__name__)
K = 20
VALID_QUERIES = 5000  # cap per task for tuning; test queries are never capped


@dataclass
class Prepared:
    """Everything a method may train on (``train``) and is scored with (``valid``/``test``)."""

    name: str
    config: PipelineConfig
    split: Split
    full_train: EventLog  # train contexts over the full log's vocabulary (what itemvec gets)
    valid_log: EventLog
    train: EventLog  # train contexts over the model vocabulary
    cooccurrence: sp.csr_matrix  # itemvec's windowed co-occurrence of ``train``
    item_counts: np.ndarray  # contexts per item in ``train``
    valid: dict[str, Queries]
    test: dict[str, Queries]

    @property
    def item_ids(self) -> np.ndarray:
        return self.train.item_ids

    @property
    def n_items(self) -> int:
        return self.train.n_items


def prepare(name: str, log: EventLog, config: PipelineConfig, seed: int = 0,
            valid_queries: int | None = VALID_QUERIES) -> Prepared:
    split = split_contexts(log, seed=seed)
    train_log, valid_log, test_log = (log.subset(np.sort(part)) for part in
                                      (split.train, split.valid, split.test))
    train = restrict_vocabulary(train_log, prune_rare_items(train_log,
                                                           config.cooccurrence.min_count))
    matrix = count_pairs(train, config.cooccurrence)
    items = train.item_ids

    def queries(part: EventLog, cap: int | None) -> dict[str, Queries]:
        to_model = vocabulary_map(part, items)
        return {task: build_queries(part, to_model, task, seed=seed, max_queries=cap)
                for task in TASKS}

    return Prepared(name, config, split, train_log, valid_log, train, matrix,
                    train.item_counts(), queries(valid_log, valid_queries), queries(test_log, None))


def context_matrix(log: EventLog, binary: bool = True) -> sp.csr_matrix:
    """(contexts x items) matrix of ``log``: 1 where the item occurs (or event counts)."""
    rows = np.repeat(np.arange(log.n_contexts), log.lengths())
    matrix = sp.csr_matrix((np.ones(log.n_events, dtype=np.float32), (rows, log.items)),
                           shape=(log.n_contexts, log.n_items))
    matrix.sum_duplicates()
    if binary:
        matrix.data[:] = 1.0
    return matrix


def ranks(scorer, queries: Queries) -> np.ndarray:
    return target_ranks(scorer, queries, batch_size=512)


def metrics(rank: np.ndarray) -> dict[str, float]:
    return metrics_from_ranks(rank, K)


def popularity_strata(item_counts: np.ndarray) -> np.ndarray:
    """0/1/2 = head/torso/tail: items sorted by training popularity, cut at thirds of the mass."""
    order = np.argsort(-item_counts, kind="stable")
    sorted_counts = item_counts[order].astype(np.float64)
    before = (np.cumsum(sorted_counts) - sorted_counts) / max(sorted_counts.sum(), 1.0)
    stratum = np.empty(len(item_counts), dtype=np.int64)
    stratum[order] = np.minimum(np.floor(before * 3), 2).astype(np.int64)
    return stratum


def stratified_hr(rank: np.ndarray, targets: np.ndarray, strata: np.ndarray) -> dict[str, float]:
    out = {}
    for index, label in enumerate(("head", "torso", "tail")):
        mask = strata[targets] == index
        out[label] = float((rank[mask] < K).mean()) if mask.any() else float("nan")
        out[f"{label}_queries"] = int(mask.sum())
    return out


def encode_hits(rank: np.ndarray) -> str:
    """Per-query hits (rank < K) packed to bits, base64: results.json keeps them for paired
    comparisons between methods (same queries, same order) without pickle or a second file."""
    return base64.b64encode(np.packbits(np.asarray(rank) < K).tobytes()).decode("ascii")


def decode_hits(text: str, n: int) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8), count=n)
    return bits.astype(bool)
