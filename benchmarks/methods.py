"""Methods compared in the benchmark: itemvec (defaults) and tuned peers.

A method has a grid of *training* parameters (one fit each) and, per fitted model, cheap
*query* variants (history pooling, similarity or scoring choices) that are tuned on the
validation split without refitting. Every scorer implements
``score_histories(list of model-index arrays) -> (queries x items)`` over the same training
vocabulary (``Prepared.item_ids``).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from benchmarks import sequential
from benchmarks.protocol import Prepared, context_matrix
from itemvec.evaluation.baselines import (
    Contexts,
    DenseScorer,
    FoldIn,
    PooledVectors,
    Popularity,
    als_factors,
    ease_weights,
    item2vec_vectors,
)
from itemvec.query.embeddings import ItemEmbeddings
from itemvec.query.pooling import history_matrix
from itemvec.train.pipeline import train_on_log
from itemvec.util.registry import Registry

logger = logging.getLogger(__name__)
methods: Registry = Registry("method")
SEQUENTIAL = ("sasrec", "gru4rec")
PEERS = ("popularity", "itemknn", "ease", "item2vec", "als", *SEQUENTIAL)
ALL = ("itemvec", *PEERS)


def half_lives(data: Prepared, quick: bool) -> tuple[float, ...]:
    """Recency half-lives tried when pooling a history (0 = plain mean)."""
    if quick:
        return (3.0,)
    return (0.0, 1.0, 3.0) if data.train.ordered else (0.0, 3.0)


def sample_grid(space: dict[str, Sequence], n: int, seed: int = 0,
                first: dict | None = None) -> list[dict]:
    """``first`` (a sensible default) plus ``n - 1`` distinct seeded random grid points."""
    points = [dict(zip(space, values, strict=True)) for values in itertools.product(*space.values())]
    rng = np.random.default_rng(seed)
    chosen = [first] if first is not None else []
    for index in rng.permutation(len(points)):
        if len(chosen) >= n:
            break
        if points[index] not in chosen:
            chosen.append(points[index])
    return chosen


class Method:
    """Base: one grid of training params, query variants per fitted model."""

    name = ""

    def grid(self, data: Prepared, quick: bool) -> list[dict]:
        return [{}]

    def fit(self, data: Prepared, params: dict) -> Any:
        raise NotImplementedError

    def variants(self, data: Prepared, model: Any, quick: bool) -> list[tuple[dict, Any]]:
        return [({}, model)]

    def item_vectors(self, model: Any) -> np.ndarray | None:
        return None

    def applies(self, data: Prepared) -> bool:
        """Whether the method is run on ``data`` (sequential peers need ordered contexts)."""
        return True


def _tiebreak(counts: np.ndarray) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    return 1e-9 * counts / max(counts.max(), 1.0)


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


# -- itemvec -------------------------------------------------------------------------------------
@methods.register("itemvec")
class ItemvecMethod(Method):
    """itemvec with default settings, on the benchmark's protocol: every train context is
    trained on, early stopping and query tuning use the validation split (as the peers are
    tuned on it); validation and test are never trained on."""

    name = "itemvec"
    refit: bool | None = None  # True / False: select on the newest 10% of train instead

    def fit(self, data: Prepared, params: dict):
        config = data.config
        if self.refit is False:
            config = config.with_values({"training.refit": False})
        valid = data.valid_log if self.refit is None else None
        model = train_on_log(data.full_train, config, valid=valid, progress=False)
        if self.refit is not False and not np.array_equal(model.embeddings.item_ids,
                                                          data.item_ids):
            raise RuntimeError("itemvec vocabulary differs from the benchmark vocabulary")
        return model

    def variants(self, data, model, quick):
        return [({}, on_vocabulary(model.embeddings, data.item_ids))]

    def item_vectors(self, model):
        return np.asarray(model.embeddings.vectors, dtype=np.float32)


def on_vocabulary(embeddings: ItemEmbeddings, item_ids: np.ndarray) -> ItemEmbeddings:
    """``embeddings`` over the benchmark's vocabulary: items the model lacks get a zero vector
    and a -1e9 logit, so they are never recommended and add no direction to a history."""
    if np.array_equal(embeddings.item_ids, item_ids):
        return embeddings
    position = {item: i for i, item in enumerate(embeddings.item_ids)}
    rows = np.asarray([position.get(item, -1) for item in item_ids])
    known = rows >= 0
    vectors = np.zeros((len(item_ids), embeddings.dim), dtype=np.float32)
    vectors[known] = embeddings.vectors[rows[known]]
    bias = np.full(len(item_ids), -1e9, dtype=np.float32)
    bias[known] = embeddings.item_bias[rows[known]]
    return ItemEmbeddings(item_ids, vectors, bias, embeddings.temperature, embeddings.query)


@methods.register("itemvec-refit")
class ItemvecRefit(ItemvecMethod):
    """As ``itemvec train`` runs: the newest 10% of the train split chooses the schedule, then
    the final model is refit on every train context (the validation split is not used)."""

    name = "itemvec-refit"
    refit = True


@methods.register("itemvec-no-refit")
class ItemvecNoRefit(ItemvecMethod):
    """The same selection, final model trained on the older 90% of the train split only."""

    name = "itemvec-no-refit"
    refit = False


# -- popularity ----------------------------------------------------------------------------------
@methods.register("popularity")
class PopularityMethod(Method):
    name = "popularity"

    def fit(self, data, params):
        return Popularity(data.cooccurrence, data.item_counts)


# -- co-occurrence item-kNN (SAR-style) ----------------------------------------------------------
class SimilarityScorer:
    def __init__(self, similarity: sp.csr_matrix, half_life: float, tiebreak: np.ndarray) -> None:
        self.similarity, self.half_life, self.tiebreak = similarity, half_life, tiebreak

    def score_histories(self, histories):
        weights = history_matrix(histories, self.similarity.shape[0], self.half_life)
        return np.asarray((weights @ self.similarity).todense()) + self.tiebreak[None, :]


def whole_context_cooccurrence(data: Prepared) -> sp.csr_matrix:
    """Contexts sharing both items (SAR's co-occurrence), zero diagonal."""
    x = context_matrix(data.train)
    counts = (x.T @ x).tocsr()
    counts.setdiag(0)
    counts.eliminate_zeros()
    return counts.astype(np.float32)


def sar_similarity(counts: sp.csr_matrix, occurrences: np.ndarray, kind: str) -> sp.csr_matrix:
    """SAR similarities from co-occurrence c_ij and item occurrences d_i (rows = history item)."""
    coo = counts.tocoo()
    c, d = coo.data.astype(np.float64), np.maximum(occurrences.astype(np.float64), 1e-12)
    di, dj = d[coo.row], d[coo.col]
    if kind == "cosine":
        values = c / np.sqrt(di * dj)
    elif kind == "jaccard":
        values = c / np.maximum(di + dj - c, 1e-12)
    elif kind == "lift":
        values = c / (di * dj)
    elif kind == "conditional":  # P(j | i): association-rule confidence
        values = c / di
    else:
        raise ValueError(f"unknown similarity {kind!r}")
    return sp.csr_matrix((values.astype(np.float32), (coo.row, coo.col)), shape=counts.shape)


@methods.register("itemknn")
class ItemKNNMethod(Method):
    """SAR-style item-kNN on windowed (itemvec's counts) or whole-context co-occurrence."""

    name = "itemknn"

    def grid(self, data, quick):
        return [{"cooccurrence": "window"}] if quick else \
            [{"cooccurrence": "window"}, {"cooccurrence": "context"}]

    def fit(self, data, params):
        if params["cooccurrence"] == "window":
            return data.cooccurrence
        return whole_context_cooccurrence(data)

    def variants(self, data, model, quick):
        kinds = ("cosine",) if quick else ("cosine", "jaccard", "lift", "conditional")
        tiebreak = _tiebreak(data.item_counts)
        out = []
        for kind in kinds:
            similarity = sar_similarity(model, data.item_counts, kind)
            for half_life in half_lives(data, quick):
                out.append(({"similarity": kind, "half_life": half_life},
                            SimilarityScorer(similarity, half_life, tiebreak)))
        return out


# -- EASE ----------------------------------------------------------------------------------------
@methods.register("ease")
class EaseMethod(Method):
    name = "ease"
    LAMBDAS = (10.0, 50.0, 250.0, 1250.0)

    def grid(self, data, quick):
        return [{"lambda": 100.0}] if quick else [{"lambda": lam} for lam in self.LAMBDAS]

    def fit(self, data, params):
        return ease_weights(context_matrix(data.train), params["lambda"])

    def variants(self, data, model, quick):
        tiebreak = _tiebreak(data.item_counts)
        return [({"half_life": hl}, DenseScorer(model, hl, tiebreak))
                for hl in half_lives(data, quick)]


# -- item2vec (gensim skip-gram) -----------------------------------------------------------------
@methods.register("item2vec")
class Item2VecMethod(Method):
    """Skip-gram with negative sampling over contexts (Barkan & Koenigstein 2016), grid after
    Caselles-Dupre et al. 2018 ("Word2vec applied to Recommendation: Hyperparameters Matter")."""

    name = "item2vec"
    DIM = 64
    DEFAULT = {"window": 5, "ns_exponent": 0.75, "sample": 1e-3, "epochs": 20}

    def grid(self, data, quick):
        if quick:  # no downsampling: with few items it drops the staples (groceries)
            return [{"window": 5 if data.train.ordered else 0, "ns_exponent": 0.5,
                     "sample": 0.0, "epochs": 5}]
        space = {"window": (3, 5, 10, 20) if data.train.ordered else (0,),
                 "ns_exponent": (-0.5, 0.0, 0.5, 0.75, 1.0),
                 "sample": (0.0, 1e-4, 1e-3),
                 "epochs": (10, 20, 40)}
        first = dict(self.DEFAULT, window=5 if data.train.ordered else 0)
        return sample_grid(space, 6, seed=1, first=first)

    def fit(self, data, params):
        log = data.train
        contexts = Contexts(log.indptr, log.items, log.n_items, log.ordered)
        return item2vec_vectors(contexts, dim=self.DIM, window=params["window"],
                                ns_exponent=params["ns_exponent"], sample=params["sample"],
                                epochs=params["epochs"])

    def variants(self, data, model, quick):
        tiebreak = _tiebreak(data.item_counts)
        unit = _unit(model["in"])
        out = []
        for half_life in half_lives(data, quick):
            out.append(({"scoring": "cosine", "half_life": half_life},
                        PooledVectors(unit, unit, half_life, tiebreak)))
            out.append(({"scoring": "in-out", "half_life": half_life},
                        PooledVectors(model["in"], model["out"], half_life, tiebreak)))
        return out

    def item_vectors(self, model):
        return model["in"]


# -- ALS (implicit) ------------------------------------------------------------------------------
@methods.register("als")
class ALSMethod(Method):
    """implicit's ALS (Hu, Koren, Volinsky 2008) on the binary context x item matrix."""

    name = "als"
    DEFAULT = {"factors": 64, "regularization": 0.1, "alpha": 10.0, "iterations": 15}

    def grid(self, data, quick):
        if quick:
            return [dict(self.DEFAULT, iterations=5)]
        space = {"factors": (8, 16, 32, 64, 128), "regularization": (0.01, 0.1, 1.0, 10.0),
                 "alpha": (1.0, 5.0, 20.0, 50.0), "iterations": (15,)}
        return sample_grid(space, 8, seed=2, first=dict(self.DEFAULT))

    def fit(self, data, params):
        items = als_factors(context_matrix(data.train), params["factors"],
                            params["regularization"], params["alpha"], params["iterations"])
        return {"items": items, **params}

    def variants(self, data, model, quick):
        tiebreak = _tiebreak(data.item_counts)
        items, unit = model["items"], _unit(model["items"])
        out = []
        for half_life in half_lives(data, quick):
            out.append(({"scoring": "pooled-dot", "half_life": half_life},
                        PooledVectors(items, items, half_life, tiebreak)))
            out.append(({"scoring": "pooled-cosine", "half_life": half_life},
                        PooledVectors(unit, unit, half_life, tiebreak)))
            out.append(({"scoring": "fold-in", "half_life": half_life},
                        FoldIn(items, model["regularization"], model["alpha"], half_life,
                               tiebreak)))
        return out

    def item_vectors(self, model):
        return model["items"]


# -- sequential peers: SASRec-CE and GRU4Rec (PyTorch, ``sequential.py``) -----------------------
class SequentialMethod(Method):
    """A next-item model over the history's order; epochs by validation s2i HR@20. Grid:
    dropout {0.2, 0.5}, dim 64, lr 1e-3, batch 128; max_len 50 where train contexts average
    more than 20 items (movielens-100k), else 20; at most 40 epochs, stopping after 4 without a
    better HR@20 on 2,000 of the validation s2i queries. Under 20,000 train events
    (diginetica: 9,041) lr 3e-3, at most 100 epochs, patience 10: with 19 steps an epoch, lr
    1e-3 and patience 4 stopped before the models learnt anything. Where train events x items
    exceeds 5e8 (amazon-beauty: 1.9e9) only dropout 0.5, lr 3e-3 and at most 8 epochs: one
    epoch there took 245-590 s of wall time on the shared 2-core box."""

    kind = ""
    DROPOUTS = (0.2, 0.5)
    STOPPING_QUERIES = 2000  # seeded slice of the validation s2i queries for early stopping
    COSTLY = 5e8  # train events x items above which one epoch of full softmax takes minutes
    SMALL = 20_000  # train events below which lr 1e-3 stops before learning (few steps/epoch)

    def applies(self, data):
        return data.train.ordered

    def grid(self, data, quick):
        long = data.train.n_events / max(data.train.n_contexts, 1) > 20
        costly = data.train.n_events * data.n_items > self.COSTLY
        small = data.train.n_events < self.SMALL
        base = {"dim": 64, "lr": 3e-3 if small or costly else 1e-3,
                "max_len": 50 if long else 20, "max_epochs": 8 if costly else 100 if small else 40,
                "patience": 10 if small else 4}
        if quick:
            return [dict(base, dropout=0.2, max_epochs=3)]
        return [dict(base, dropout=d) for d in ((0.5,) if costly else self.DROPOUTS)]

    def fit(self, data, params):
        log = data.train
        sequences = [log.context(c) for c in range(log.n_contexts)]
        config = sequential.SeqConfig(kind=self.kind, **params)
        valid = sequential.subsample(data.valid["s2i"], self.STOPPING_QUERIES)
        model, fit_log = sequential.fit(sequences, data.n_items, valid, config)
        return {"model": model, "log": fit_log, "max_len": config.max_len}

    def variants(self, data, model, quick):
        log = model["log"]
        scorer = sequential.SequenceScorer(model["model"], model["max_len"], data.n_items)
        return [({"epochs": log.best_epoch, "device": log.device}, scorer)]

    def item_vectors(self, model):
        return model["model"].items.weight[1:].detach().cpu().numpy()


@methods.register("sasrec")
class SASRecMethod(SequentialMethod):
    """SASRec (Kang & McAuley 2018) trained with full-softmax cross-entropy (Klenitskiy &
    Vasilev 2023): two causal self-attention blocks, one head."""

    name = kind = "sasrec"


@methods.register("gru4rec")
class GRU4RecMethod(SequentialMethod):
    """GRU4Rec's encoder (Hidasi et al. 2016): one GRU layer, full-softmax cross-entropy."""

    name = kind = "gru4rec"


def get(name: str) -> Method:
    return methods.get(name)()
