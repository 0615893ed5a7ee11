"""Item side information: typed feature columns turned into padded index tensors.

An item table (``--items``) holds one row per item and columns such as ``category``, ``brand``,
``price`` or ``title``. Each column used as a feature is a *field* of one kind:

- ``cat``: one or several values (``a|b|c``, or a list column); each value is a vocabulary index;
- ``num``: a number, bucketed at quantiles of the fitting table (log scale for skewed positives);
- ``text``: word unigrams and bigrams plus character 3-grams of words, hashed (crc32, stable
  across processes, no network) into a fixed number of buckets.

``FeatureSpec.fit`` learns vocabularies and bucket edges from a table; ``transform`` turns any
table into ``{field: int64 [n_items, max_len]}`` with 0 as padding (and for unknown values), so
new items are featurised exactly like the training ones. The spec is plain JSON (no pickle) and
lives in the bundle as ``features.json``; ``itemvec embed`` reads it back.
"""

from __future__ import annotations

import json
import logging
import re
import zlib
from dataclasses import asdict, dataclass, field
from dataclasses import fields as dataclasses_fields
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch

from itemvec.config import FeatureConfig, from_dict
from itemvec.data.columns import infer_kind
from itemvec.data.ingest import align_items
from itemvec.data.relations import add_relations, relation_matrix
from itemvec.model.encoder import FeatureEncoder
from itemvec.model.spectral import popularity_logits, spectral_vectors
from itemvec.util.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

KINDS = ("cat", "num", "text")
SPEC_FILE = "features.json"
SPEC_VERSION = 1
RESERVED = ("item_id", "count")
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass
class Field:
    """One fitted feature column: its kind and whatever maps raw values to indices."""

    name: str
    kind: str
    vocab: list[str] = field(default_factory=list)  # cat: index i+1 <-> vocab[i]
    edges: list[float] = field(default_factory=list)  # num: bucket edges
    log: bool = False  # num: bucket log1p(x)
    buckets: int = 0  # text: hash buckets
    max_len: int = 1  # width of the padded index tensor

    @property
    def size(self) -> int:
        """Rows of this field's embedding table (index 0 is padding)."""
        if self.kind == "cat":
            return len(self.vocab) + 1
        if self.kind == "num":
            return len(self.edges) + 2
        return self.buckets + 1


# -- parsing the --features option -----------------------------------------------------------------
def parse_feature_option(text: str | None) -> dict[str, str] | None:
    """'category:cat,price:num,title' -> {'category': 'cat', 'price': 'num', 'title': 'auto'}.

    None -> every column auto-typed; 'none' -> {} (the table is stored but not used as features).
    """
    if text is None:
        return None
    if text.strip().lower() in ("", "none", "off"):
        return {}
    chosen: dict[str, str] = {}
    for part in text.split(","):
        name, _, kind = part.strip().partition(":")
        kind = kind.strip().lower() or "auto"
        if not name.strip():
            raise ConfigError(f"--features must look like category:cat,price:num,title:text, "
                              f"got {text!r}")
        if kind not in (*KINDS, "auto", "skip"):
            raise ConfigError(f"--features {name}:{kind}: unknown kind {kind!r}; known: "
                              "cat, num, text, auto, skip")
        chosen[name.strip()] = kind
    return chosen


# -- auto-typing ---------------------------------------------------------------------------------
def choose_fields(table: pl.DataFrame, chosen: dict[str, str] | None,
                  separator: str = "|") -> dict[str, str]:
    """Columns to use and their kinds: the override's, else auto-typed ones."""
    columns = [c for c in table.columns if c not in RESERVED]
    if chosen is None:
        kinds = {c: infer_kind(table[c], separator) for c in columns}
        picked = {c: k for c, k in kinds.items() if k is not None}
        logger.info("auto-typed features: %s (skipped: %s)", picked,
                    [c for c, k in kinds.items() if k is None])
        return picked
    out = {}
    for name, kind in chosen.items():
        if name not in table.columns:
            raise DataError(f"--features: column {name!r} not in the item table; columns "
                            f"present: {', '.join(table.columns)}")
        if kind == "skip":
            continue
        if kind == "auto":
            kind = infer_kind(table[name], separator)
            if kind is None:
                logger.warning("--features: column %r is constant or id-like; skipped", name)
                continue
        out[name] = kind
    return out


# -- the spec ------------------------------------------------------------------------------------
class FeatureSpec:
    """Fitted fields; turns item tables into padded index tensors the same way every time."""

    def __init__(self, fields: list[Field], config: FeatureConfig | None = None) -> None:
        self.fields = fields
        self.config = config or FeatureConfig()

    def __len__(self) -> int:
        return len(self.fields)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    @classmethod
    def fit(cls, table: pl.DataFrame, chosen: dict[str, str] | None = None,
            config: FeatureConfig | None = None) -> FeatureSpec:
        """Learn vocabularies / bucket edges from ``table`` (one row per item)."""
        config = config or FeatureConfig()
        kinds = choose_fields(table, chosen, config.separator)
        fields = [_fit_field(name, kind, table[name], config) for name, kind in kinds.items()]
        return cls(fields, config)

    def transform(self, table: pl.DataFrame) -> dict[str, np.ndarray]:
        """``{field: int64 [rows, max_len]}``; 0 = padding / unknown value / missing."""
        out = {}
        for f in self.fields:
            if f.name not in table.columns:
                raise DataError(f"item table has no column {f.name!r}, which the model was "
                                f"trained with; columns present: {', '.join(table.columns)}")
            out[f.name] = _transform_field(f, table[f.name], self.config)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"version": SPEC_VERSION, "config": self.config.featurisation(),
                "fields": [asdict(f) for f in self.fields]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSpec:
        if data.get("version") != SPEC_VERSION:
            raise ConfigError(f"features spec version {data.get('version')!r} is not "
                              f"{SPEC_VERSION}; upgrade itemvec")
        config = from_dict(FeatureConfig, data.get("config", {}), "features.config")
        fields = [_field_from_dict(f) for f in data.get("fields", [])]
        return cls(fields, config)

    def describe(self) -> str:
        return ", ".join(f"{f.name}:{f.kind}({f.size})" for f in self.fields)


def _field_from_dict(data: Any) -> Field:
    """A fitted field from ``features.json``; unknown keys mean a newer or damaged file."""
    names = [f.name for f in dataclasses_fields(Field)]
    unknown = sorted(set(data) - set(names)) if isinstance(data, dict) else ["<not a mapping>"]
    if unknown:
        raise ConfigError(f"features.fields[]: unknown key {unknown[0]!r}; known: "
                          f"{', '.join(names)}")
    return Field(**data)


def _cell_values(series: pl.Series, separator: str) -> pl.DataFrame:
    """One row per (row, value) of a categorical column, cells split and stripped, empty values
    dropped, in row then cell order; in polars, so a million-row catalogue takes about a
    second, not tens of seconds of Python per field."""
    if isinstance(series.dtype, pl.List | pl.Array):
        values = series.cast(pl.List(pl.String))
    else:
        values = series.cast(pl.String).str.split(separator)
    frame = pl.DataFrame({"v": values}).with_row_index("row").explode("v")
    frame = frame.with_columns(pl.col("v").str.strip_chars())
    return frame.filter(pl.col("v").is_not_null() & (pl.col("v") != ""))


def _fit_field(name: str, kind: str, series: pl.Series, config: FeatureConfig) -> Field:
    if kind == "cat":
        values = _cell_values(series, config.separator)
        counts = values["v"].value_counts(name="n").sort(["n", "v"], descending=[True, False])
        vocab = counts["v"].head(config.max_vocab).to_list()
        width = int(values["row"].value_counts()["count"].max() or 1) if values.height else 1
        return Field(name, "cat", vocab=vocab, max_len=min(width, config.max_values))
    if kind == "num":
        x = _numbers(name, series)
        finite = x[np.isfinite(x)]
        log = bool(len(finite) and finite.min() >= 0 and
                   finite.max() > 10 * max(np.median(finite), 1e-9))
        scaled = np.log1p(finite) if log else finite
        quantiles = np.linspace(0, 1, config.num_buckets + 1)[1:-1]
        edges = np.unique(np.quantile(scaled, quantiles)) if len(scaled) else np.zeros(0)
        return Field(name, "num", edges=[float(e) for e in edges], log=log)
    if kind == "text":
        return Field(name, "text", buckets=config.text_buckets, max_len=config.max_tokens)
    raise ConfigError(f"feature {name!r}: unknown kind {kind!r}; known: {', '.join(KINDS)}")


def _numbers(name: str, series: pl.Series) -> np.ndarray:
    if series.dtype.is_numeric():
        return series.cast(pl.Float64).fill_null(np.nan).to_numpy()
    parsed = series.cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
    bad = parsed.is_null() & series.is_not_null()
    if bad.any():
        row = int(bad.arg_true()[0])
        raise DataError(f"item table: row {row + 1}: column {name!r}: {series[row]!r} is not a "
                        f"number; use --features {name}:cat or fix the value")
    return parsed.fill_null(np.nan).to_numpy()


def _transform_field(f: Field, series: pl.Series, config: FeatureConfig) -> np.ndarray:
    n = len(series)
    if f.kind == "num":
        x = _numbers(f.name, series)
        scaled = np.log1p(np.maximum(x, 0)) if f.log else x
        index = 1 + np.searchsorted(np.asarray(f.edges), scaled, side="right")
        return np.where(np.isfinite(x), index, 0).astype(np.int64).reshape(n, 1)
    out = np.zeros((n, f.max_len), dtype=np.int64)
    if f.kind == "cat":  # known values, first occurrence, in cell order, up to max_len per row
        vocab = pl.DataFrame({"v": pl.Series(f.vocab, dtype=pl.String),
                              "index": np.arange(1, len(f.vocab) + 1, dtype=np.int64)})
        found = _cell_values(series, config.separator).join(vocab, on="v", how="inner",
                                                             maintain_order="left")
        rows, index = found["row"].to_numpy().astype(np.int64), found["index"].to_numpy()
        first = np.sort(np.unique(rows * (len(f.vocab) + 1) + index, return_index=True)[1])
        rows, index = rows[first], index[first]  # repeated values in a cell count once
        slot = np.arange(len(rows)) - np.searchsorted(rows, rows, side="left")
        keep = slot < f.max_len
        out[rows[keep], slot[keep]] = index[keep]
        return out
    salt = f.name.encode() + b"\x00"
    for row, cell in enumerate(series.cast(pl.String).to_list()):
        tokens = text_tokens(cell or "")[:f.max_len]
        out[row, :len(tokens)] = [1 + zlib.crc32(salt + t.encode()) % f.buckets for t in tokens]
    return out


def text_tokens(text: str) -> list[str]:
    """Distinct word unigrams, word bigrams and character 3-grams of words, in that order."""
    words = _WORD.findall(text.lower())
    grams = [f"w:{w}" for w in words]
    grams += [f"b:{a} {b}" for a, b in zip(words, words[1:], strict=False)]
    for w in words:
        padded = f"<{w}>"
        grams += [f"c:{padded[i:i + 3]}" for i in range(max(len(padded) - 2, 0))]
    return list(dict.fromkeys(grams))


def incidence(index: np.ndarray, size: int):
    """Row-normalised sparse (items x values) matrix: mean pooling as a matrix."""
    rows, cols = np.nonzero(index)
    values = index[rows, cols]
    counts = np.maximum((index > 0).sum(axis=1), 1)
    return sp.csr_matrix((1.0 / counts[rows], (rows, values)), shape=(len(index), size))


# -- training with side information ----------------------------------------------------------------
@dataclass
class SideInformation:
    """What ``train_on_log`` needs besides the log: item table, feature choice, relation triples.

    ``chosen`` None auto-types every column of ``table``; ``{}`` uses no features (relations
    only, or the table kept for display).
    """

    table: pl.DataFrame | None = None  # item_id + feature columns, one row per item
    chosen: dict[str, str] | None = None
    relations: pl.DataFrame | None = None  # head, relation, tail
    config: FeatureConfig = field(default_factory=FeatureConfig)


@dataclass
class SidePlan:
    """The vocabulary (warm items, then cold ones), training targets and encoder to train."""

    item_ids: np.ndarray
    n_warm: int
    targets: Any  # scipy CSR, warm x warm
    encoder: Any = None  # FeatureEncoder (joint: trained with behaviour; behaviour-first: after)
    spec: FeatureSpec | None = None
    index: list[np.ndarray] | None = None  # feature index rows per field, warm then cold items
    coldstart: dict[str, Any] | None = None  # behaviour-first: tower fit and calibration report

    @property
    def n_cold(self) -> int:
        return len(self.item_ids) - self.n_warm

    @property
    def behaviour_first(self) -> bool:
        """Train the plain encoder on behaviour; the feature tower is fitted afterwards."""
        return self.spec is not None and self.spec.config.mode == "behaviour-first"

    def files(self) -> dict[str, bytes]:
        """Bundle files that let ``itemvec embed`` featurise new items identically."""
        if self.spec is None or self.encoder is None:
            return {}
        data = self.spec.to_dict()
        data["encoder"] = {"n_items": self.n_warm, "dim": self.encoder.dim,
                           "hidden": self.encoder.hidden,
                           "field_sizes": [f.size for f in self.spec.fields]}
        if self.coldstart is not None:
            data["coldstart"] = self.coldstart
        return {SPEC_FILE: json.dumps(data, indent=1).encode()}


def prepare_side(side: SideInformation, warm_ids: np.ndarray, cooccurrence,
                 training) -> SidePlan:
    """Relations added to the targets; with features, a spectrally started ``FeatureEncoder``."""

    targets = cooccurrence
    if side.relations is not None:
        targets = add_relations(cooccurrence, relation_matrix(side.relations, warm_ids),
                                side.config.relation_weight)
    warm_ids = np.asarray(warm_ids, dtype=object)
    if side.table is None or side.chosen == {}:
        return SidePlan(warm_ids, len(warm_ids), targets)
    spec = FeatureSpec.fit(side.table, side.chosen, side.config)
    if len(spec) == 0:
        logger.warning("item table has no usable feature columns; training on behaviour only")
        return SidePlan(warm_ids, len(warm_ids), targets)
    warm = set(warm_ids.tolist())
    cold = np.asarray([i for i in side.table["item_id"].to_list() if i not in warm], dtype=object)
    item_ids = np.concatenate([warm_ids, cold])
    index = spec.transform(align_items(side.table, item_ids))
    listed = set(side.table["item_id"].to_list())  # np.isin on object ids is quadratic
    missing = sum(item not in listed for item in warm_ids.tolist())
    if missing:
        logger.warning("%d of %d items in the events are not in the item table; they have no "
                       "features", missing, len(warm_ids))
    logger.info("features: %s; %d warm + %d cold items (%s)", spec.describe(), len(warm_ids),
                len(cold), spec.config.mode)
    rows = [index[n] for n in spec.names]
    if spec.config.mode == "behaviour-first":  # the tower is fitted after behaviour training
        return SidePlan(item_ids, len(warm_ids), targets, None, spec, rows)
    torch.manual_seed(training.seed)
    encoder = FeatureEncoder(len(warm_ids), training.dim, training.hidden,
                             [f.size for f in spec.fields], rows,
                             side.config.id_dropout, side.config.field_dropout,
                             training.temperature)
    if training.init == "svd":
        vectors = spectral_vectors(targets, training.dim, training.seed)
        encoder.initialise(vectors, popularity_logits(targets))
    encoder.initialise_features(encoder.item_embedding.weight.detach().cpu().numpy())
    return SidePlan(item_ids, len(warm_ids), targets, encoder, spec, rows)


def load_feature_encoder(files: dict[str, bytes], state: dict):
    """(spec, encoder) from a bundle's ``features.json`` and encoder weights."""
    data = json.loads(files[SPEC_FILE])
    spec = FeatureSpec.from_dict({k: v for k, v in data.items() if k != "encoder"})
    shape = data["encoder"]
    encoder = FeatureEncoder(shape["n_items"], shape["dim"], shape["hidden"],
                             shape["field_sizes"])
    defaults = encoder.state_dict()  # bundles from before behaviour-first lack its buffers
    encoder.load_state_dict({**{k: defaults[k] for k in ("cold_offset", "id_only",
                                                         "feature_share")}, **state})
    encoder.eval()
    return spec, encoder
