"""One typed, validated configuration for every stage (pydantic v2).

Sections: ``ingest``, ``cooccurrence``, ``training``, ``query``, ``side`` (item table, features,
relations), ``streaming``, ``update`` and ``serve``. Types are strict (2.5 or "3" for an integer
is an error, not a silent coercion), unknown keys are errors, and every problem becomes one line
naming the field path, the value and the fix (``training.lr must be > 0, got -1``), raised as
``ConfigError`` before any work starts. Field descriptions are also the CLI help
(``itemvec.cli.options``), so defaults and help are written once. Each field has a *flat* name
(dim, lr, window, ...) unique across sections, for ``PipelineConfig.from_flat``.
"""

from __future__ import annotations

import codecs
import json
import math
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

from itemvec.util.errors import ConfigError

S = TypeVar("S", bound="Section")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
_BARE_NUMBER = re.compile(r"^\s*\d+(?:\.\d+)?\s*$")
_SEPARATORS = {"\\t": "\t", "tab": "\t", "\t": "\t", "space": " ", "comma": ",",
               "semicolon": ";", "pipe": "|"}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)

# The objectives registered in itemvec.model.objectives (a test keeps the two in step); a
# Literal here keeps this module free of model imports.
Objective = Literal["auto", "infonce", "sgns", "softmax"]


def parse_duration(text: str | float | int, field_name: str = "duration") -> float:
    """'30m' -> 1800.0 seconds; bare numbers are seconds."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        return float(text)
    match = _DURATION.match(str(text))
    if not match:
        raise ConfigError(
            f"{field_name} must be a duration like 90s, 30m, 2h or 7d, got {text!r}"
        )
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]


def parse_size(text: str | int | None, name: str = "--memory-limit") -> int | None:
    """'12G', '500MB', '2.5GiB' or a number of bytes -> bytes."""
    if text is None or (isinstance(text, int) and not isinstance(text, bool)):
        return text
    match = _SIZE.match(str(text))
    if not match:
        raise ConfigError(f"{name} must be a size like 4G, 500M or 1073741824, got {text!r}")
    power = " kmgt".index(match.group(2).lower() or " ")
    return int(float(match.group(1)) * 1024**power)


def parse_separator(value: Any, field_name: str) -> Any:
    """'\\t' (backslash-t as typed in a shell), 'tab', 'space' ... -> the one character."""
    if not isinstance(value, str):
        return value
    sep = _SEPARATORS.get(value.lower() if len(value) > 1 else value, value)
    if len(sep) != 1:
        raise ConfigError(f"{field_name} must be one character (or \\t, tab, space), got "
                          f"{value!r}")
    return sep


def parse_names(value: Any, field_name: str) -> Any:
    """'a,b,c' -> ['a', 'b', 'c']; blank or repeated names are errors."""
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",")]
    if isinstance(value, list | tuple):
        value = list(value)
        blank = [i for i, name in enumerate(value) if not str(name).strip()]
        if blank:
            raise ConfigError(f"{field_name} has an empty name at position {blank[0] + 1}, got "
                              f"{value!r}; write names like user,item,rating,ts")
        repeated = sorted({n for n in value if value.count(n) > 1})
        if repeated:
            raise ConfigError(f"{field_name} names {repeated[0]!r} twice; column names must "
                              "be distinct")
    return value


def check_encoding(value: Any, field_name: str) -> Any:
    """A text encoding Python knows (latin-1, cp1252, utf-8 ...)."""
    if isinstance(value, str):
        try:
            codecs.lookup(value)
        except LookupError:
            raise ConfigError(f"{field_name}: unknown encoding {value!r}; try utf-8, latin-1 or "
                              "cp1252") from None
    return value


def parse_event_weights(text: str | dict | None) -> dict[str, float]:
    """'view=1,cart=3,purchase=5' -> {'view': 1.0, 'cart': 3.0, 'purchase': 5.0}."""
    if text is None or text == "":
        return {}
    if isinstance(text, dict):
        pairs = list(text.items())
    else:
        pairs = []
        for part in str(text).split(","):
            name, sep, value = part.partition("=")
            if not sep or not name.strip():
                raise ConfigError(
                    f"event_weights must look like view=1,cart=3,purchase=5, got {text!r}"
                )
            pairs.append((name.strip(), value.strip()))
    weights = {}
    for name, value in pairs:
        try:
            weights[str(name)] = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"event_weights[{name}] must be a number, got {value!r}") from None
        if not math.isfinite(weights[str(name)]):
            raise ConfigError(f"ingest.event_weights: {name}={value} is not a finite number")
        if weights[str(name)] < 0:
            raise ConfigError(f"event_weights[{name}] must be >= 0, got {value!r}")
    return weights


def setting(default: Any, description: str, *, fix: str = "", flat: str = "", flag: str = "",
            default_text: str = "", parse: str = "", **constraints: Any) -> Any:
    """A config field: ``description`` is its CLI help, ``fix`` ends its error messages, ``flat``
    its name in ``PipelineConfig.from_flat`` (default: the field name), ``flag`` its CLI option
    (default: --flat-name), ``default_text`` how help shows a None default and ``parse`` the
    text it also accepts (duration, size, weights, features: the CLI passes it as a string)."""
    extra = {k: v for k, v in dict(fix=fix, flat=flat, flag=flag, default_text=default_text,
                                   parse=parse).items() if v}
    return Field(default, description=description, json_schema_extra=extra or None,
                 **constraints)


def meta(info: FieldInfo, key: str) -> str:
    """One of ``setting``'s extras ('' when not given)."""
    extra = info.json_schema_extra
    return str(extra.get(key, "")) if isinstance(extra, dict) else ""


class Section(BaseModel):
    """A validated config section: constructing one with a bad value raises ``ConfigError``."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)
    section: ClassVar[str] = "config"

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(explain(exc, type(self))) from None

    @classmethod
    def from_dict(cls: type[S], data: Any) -> S:
        """Validate a mapping (a config file's or a manifest's section)."""
        return from_dict(cls, data, f"config.{cls.section}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable values (what bundles store)."""
        return self.model_dump()

    def replace(self: S, **changes: Any) -> S:
        """A validated copy with ``changes`` (``model_copy`` would skip validation)."""
        return type(self)(**{**dict(self), **changes})


class IngestConfig(Section):
    """Which columns of the event log mean what, and how contexts are formed."""

    section: ClassVar[str] = "ingest"
    context: str = setting("session_id", "Column with the session, basket, order or user id "
                           "that groups co-occurring events.", min_length=1)
    item: str = setting("item_id", "Column with the item id (read as a string).", min_length=1)
    time: str | None = setting(None, "Column with a timestamp (number or ISO-8601); orders "
                               "events and splits by time.")
    event: str | None = setting(None, "Column with the event type.")
    event_weights: dict[str, float] = setting(
        {}, "Weights per event type, e.g. view=1,cart=3,purchase=5.", default_text="all 1",
        parse="weights")
    session_gap: float | None = setting(
        None, "Split a context into sessions at gaps longer than this (e.g. 30m); needs --time.",
        gt=0, parse="duration")
    context_kind: Literal["auto", "session", "basket"] = setting(
        "auto", "session (order matters, windowed pairs), basket (all pairs) or auto (decided "
        "from the data: tied times, a sort order or an order without signal are baskets).")
    dedupe_consecutive: bool = setting(True, "Drop an event repeating the item just before it "
                                       "in its context.")
    order: str | None = setting(None, "Column with each event's position in its context, for "
                                "logs without a clock (events are ordered by it; the held-out "
                                "slice is then random).")
    format: Literal["auto", "table", "sequences", "baskets", "recbole"] = setting(
        "auto", "How the file is laid out: table (one event per row; .csv/.tsv/.parquet/.jsonl), "
        "sequences (one context per line: id item item ...), baskets (one context per line, "
        "items only), recbole (.inter atomic file, typed header) or auto (from the extension).")
    sep: str | None = setting(None, "Field separator of text files, e.g. ',' ';' '|' or '\\t' "
                              "(tab); sequences and baskets split on it too.",
                              default_text="sniffed; whitespace for sequences/baskets")
    header: bool = setting(True, "Whether the file starts with a header row (--no-header: name the "
                           "columns with --columns).",
                           flag="--no-header")
    columns: list[str] | None = setting(
        None, "Column names, comma-separated, for a file without a header (or to rename the "
        "header's).", default_text="from the header", parse="list")
    encoding: str | None = setting(None, "Text encoding of the files, e.g. latin-1.",
                                   default_text="utf-8; other bytes are an error")

    @field_validator("event_weights", mode="before")
    @classmethod
    def _weights(cls, value: Any) -> Any:
        return parse_event_weights(value) if isinstance(value, str | dict) or value is None \
            else value

    @field_validator("session_gap", mode="before")
    @classmethod
    def _gap(cls, value: Any) -> Any:
        if isinstance(value, str) and _BARE_NUMBER.match(value):  # 30 seconds or 30 minutes?
            raise ConfigError(f"ingest.session_gap needs a unit, got {value!r}; write e.g. "
                              f"{value.strip()}s or {value.strip()}m")
        return parse_duration(value, "ingest.session_gap") if isinstance(value, str) else value

    @field_validator("sep", mode="before")
    @classmethod
    def _sep(cls, value: Any) -> Any:
        return parse_separator(value, "ingest.sep")

    @field_validator("columns", mode="before")
    @classmethod
    def _columns(cls, value: Any) -> Any:
        return parse_names(value, "ingest.columns")

    @field_validator("encoding", mode="before")
    @classmethod
    def _encoding(cls, value: Any) -> Any:
        return check_encoding(value, "ingest.encoding")

    @model_validator(mode="after")
    def _needs(self) -> IngestConfig:
        if self.session_gap is not None and self.time is None:
            raise ConfigError(f"ingest.session_gap needs --time, got {self.session_gap!r}; "
                              "name the time column with --time")
        if self.event_weights and self.event is None:
            raise ConfigError("ingest.event_weights needs ingest.event; name the column with --event")
        if not self.header and not self.columns and self.format in ("auto", "table", "recbole"):
            raise ConfigError("ingest.header is false (--no-header) but ingest.columns is not "
                              "set; name the columns, e.g. --columns user,item,rating,ts")
        return self


class CooccurrenceConfig(Section):
    """How pairs are counted inside a context."""

    section: ClassVar[str] = "cooccurrence"
    window: int = setting(5, "Sessions: count pairs at most this far apart.", ge=1)
    basket_max_size: int = setting(50, "Baskets: all pairs up to this size, windowed beyond it.",
                                   ge=2)
    distance_weighting: Literal["harmonic", "uniform"] = setting(
        "harmonic", "How a pair's weight falls with distance: harmonic (1/d) or uniform.")
    min_count: int = setting(1, "Drop items seen in fewer contexts.", ge=1)
    time_decay_half_life: float | None = setting(
        None, "Older contexts count less: weight halves every this long (e.g. 30d).", gt=0,
        default_text="no decay", parse="duration")
    min_support: int = setting(1, "Privacy: store (and explain with) only item pairs seen in at "
                               "least this many distinct contexts.", ge=1)

    @field_validator("time_decay_half_life", mode="before")
    @classmethod
    def _half_life(cls, value: Any) -> Any:
        return parse_duration(value, "cooccurrence.time_decay_half_life") \
            if isinstance(value, str) else value


class TrainingConfig(Section):
    """Encoder, objective and optimiser settings."""

    section: ClassVar[str] = "training"
    objective: Objective = setting(
        "auto", "auto (softmax up to 50k items, infonce beyond), softmax, infonce or sgns.")
    dim: int = setting(64, "Embedding size.", ge=2)
    epochs: int = setting(40, "Maximum epochs (early stopping may end sooner).", ge=1)
    batch_size: int = setting(512, "Anchor rows (or pairs) per batch.", ge=1)
    lr: float = setting(0.01, "Learning rate.", gt=0, fix="try 0.01")
    temperature: float = setting(0.2, "Softmax temperature on cosines.", gt=0)
    weight_decay: float = setting(0.0, "Adam weight decay.", ge=0)
    target_power: float = setting(1.0, "Co-occurrence counts ** power form the target "
                                  "distribution.", gt=0)
    row_weight_power: float = setting(0.5, "How much frequent anchors weigh: row mass ** power.")
    pairs_per_epoch: int | None = setting(
        None, "infonce/sgns: pairs drawn per epoch, to bound an epoch on a huge catalogue.", ge=1,
        fix="or leave it unset for one pass over the non-zeros",
        default_text="one per non-zero co-occurrence, at most 10M")
    negatives: int = setting(5, "sgns: negatives per pair.", ge=1)
    negative_power: float = setting(0.75, "sgns: negatives drawn from unigram ** power.")
    init: Literal["svd", "random"] = setting(
        "svd", "svd: truncated SVD of shifted PPMI; random: small normal.")
    hidden: int = setting(0, "Width of the residual MLP on top of the id embedding; 0 = none.",
                          ge=0)
    tune_query: bool = setting(True, "Choose query settings on the validation slice after "
                               "training.")
    history_epochs: int | None = setting(
        None, "Maximum epochs of fine-tuning on history -> next item after training, kept only "
        "if validation prefers it; 0 = off.", ge=0,
        fix="use 0 to turn history fine-tuning off, or leave it unset for auto",
        default_text="auto: 10 up to 2M training events, off above")
    history_lr: float = setting(0.002, "Learning rate of history fine-tuning.", gt=0,
                                fix="try 0.002")
    validation_fraction: float = setting(0.1, "Newest contexts held out for early stopping and "
                                         "tuning.", ge=0, lt=0.5)
    refit: bool = setting(True, "After choosing epochs, history fine-tuning and query settings on "
                          "the held-out contexts, train the final model on every context with "
                          "that schedule (false: keep the model of the first pass).")
    patience: int = setting(2, "Evaluations without a new best before stopping.", ge=1)
    patience_batches: int = setting(120, "... and batches since the best before stopping.", ge=0,
                                    fix="use 0 to count evaluations only")
    eval_every: int = setting(2, "Epochs between validation evaluations.", ge=1)
    validation_task: Literal["s2i", "i2i", "mean"] = setting(
        "s2i", "Held-out HR@20 that early stopping follows: s2i (history -> next item), i2i "
        "(item -> next item) or the mean of both; `itemvec tune --metric` sets it.")
    seed: int = setting(0, "Random seed.")
    device: str = setting("auto", "auto, cpu, cuda or cuda:N.")
    threads: int | None = setting(None, "CPU threads for torch.", ge=1, default_text="torch's")
    precision: Literal["fp32", "bf16", "fp16"] = setting(
        "fp32", "fp32; bf16 (mixed precision, CPU or CUDA); fp16 (mixed precision with loss "
        "scaling, CUDA only).")
    accumulate: int = setting(1, "Gradient accumulation: one optimiser step per this many "
                              "batches (a larger effective batch in the same memory).", ge=1)
    sparse_updates: Literal["auto", "on", "off"] = setting(
        "auto", "Lazy Adam on the id rows a batch touches; auto: sampled objectives above 50k "
        "items.")
    checkpoint_every: float | None = setting(
        None, "Save a resumable checkpoint at the end of an epoch once this long (e.g. 10m, 90s; "
        "0 = every epoch) has passed since the last; kept in OUT/.checkpoint until the bundle "
        "is written.", ge=0, fix="use 0 to checkpoint after every epoch", default_text="off",
        parse="duration")
    checkpoint_dir: str | None = setting(
        None, "Keep the checkpoint here instead of OUT/.checkpoint (outside --out).")

    @field_validator("checkpoint_every", mode="before")
    @classmethod
    def _interval(cls, value: Any) -> Any:
        return parse_duration(value, "training.checkpoint_every") if isinstance(value, str) \
            else value

    @field_validator("checkpoint_dir", mode="before")
    @classmethod
    def _directory(cls, value: Any) -> Any:
        return str(value) if isinstance(value, Path) else value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if value != "auto" and value.split(":")[0] not in ("cpu", "cuda", "mps"):
            raise ConfigError(f"training.device must be auto, cpu, cuda or cuda:N, got {value!r}")
        return value

    @model_validator(mode="after")
    def _needs(self) -> TrainingConfig:
        if self.checkpoint_dir is not None and self.checkpoint_every is None:
            raise ConfigError(f"training.checkpoint_dir needs training.checkpoint_every, got "
                              f"{self.checkpoint_dir!r}; add --checkpoint-every, e.g. 10m")
        return self


class QueryConfig(Section):
    """How the bundle scores recommendations; stored in the manifest, overridable per call."""

    section: ClassVar[str] = "query"
    recency_half_life: float = setting(3.0, "History positions over which an item's weight in "
                                       "the query halves; 0 = plain mean.", ge=0)
    popularity_weight: float = setting(1.0, "Multiplies the learned per-item popularity logit.",
                                       ge=0)
    evidence_power: float = setting(0.25, "Pooled history scaled by (effective history length) "
                                    "** power.", ge=0, le=1)
    cold_similarity_offset: float | None = setting(
        None, "Added to the cosine of cold items (features only, no behaviour) in similar "
        "results; chosen on validation at train time so cold items cost warm neighbours at most "
        "features.max_warm_drop.", default_text="calibrated (uncalibrated: cold items rank "
        "below every warm item)", ge=-2, le=2)


class FeatureConfig(Section):
    """Side information: the item table and relations to use, and how they are featurised and
    trained. Everything but the inputs is stored in a bundle's ``features.json``."""

    section: ClassVar[str] = "side"
    inputs: ClassVar[tuple[str, ...]] = ("items", "item_key", "features", "relations",
                                         "items_sep", "items_columns", "items_encoding")
    items: str | None = setting(None, "Item table (id + columns such as category, title); "
                                "stored in the bundle and shown beside results.")
    item_key: str = setting("item_id", "Id column of --items.", min_length=1)
    items_sep: str | None = setting(None, "Field separator of --items, e.g. '|' or '\\t'.",
                                    default_text="sniffed")
    items_columns: list[str] | None = setting(
        None, "Column names of an --items file without a header (giving them means it has "
        "none), comma-separated.", default_text="from the header", parse="list")
    items_encoding: str | None = setting(None, "Text encoding of --items, e.g. latin-1.",
                                         default_text="utf-8; other bytes are an error")
    features: str | dict[str, str] | None = setting(
        None, "Feature columns of --items and their kinds, e.g. category:cat,price:num,title:text "
        "(kind auto/skip too); 'none' = no features.", default_text="every column, auto-typed",
        parse="features")
    relations: str | None = setting(None, "Triples head,relation,tail (item -> brand, item -> "
                                    "item, ...) added as extra training signal.")
    separator: str = setting("|", "Multi-valued categorical cells: a|b|c.", min_length=1)
    max_values: int = setting(16, "Categorical values kept per item.", ge=1)
    num_buckets: int = setting(16, "Quantile buckets for numeric fields.", ge=1)
    text_buckets: int = setting(16384, "Hash buckets for text n-grams.", ge=1)
    max_tokens: int = setting(96, "Text tokens kept per item.", ge=1)
    max_vocab: int = setting(100_000, "Categorical values kept per field (most frequent).", ge=1)
    id_dropout: float = setting(0.25, "joint: fraction of items trained on features alone each "
                                "step.", ge=0, lt=1)
    field_dropout: float = setting(0.1, "joint: chance a single field is hidden from an item "
                                   "each step.", ge=0, lt=1)
    relation_weight: float = setting(0.5, "Mass of relation edges relative to behaviour.", ge=0)
    mode: Literal["behaviour-first", "joint"] = setting(
        "behaviour-first", "How item features are used: behaviour-first (behaviour trained as "
        "without them, a feature tower embeds cold items, calibrated on validation) or joint "
        "(EGES-style, trained together).", flat="side_mode")
    tower_epochs: int = setting(60, "behaviour-first: most epochs of the feature tower.", ge=1)
    tower_lr: float = setting(0.01, "behaviour-first: learning rate of the feature tower.", gt=0)
    holdout: float = setting(0.1, "behaviour-first: warm items held out as pseudo-cold for "
                             "calibration.", gt=0, lt=0.5, flat="cold_holdout")
    max_warm_drop: float = setting(
        0.005, "behaviour-first: how much (relative) validation HR@20 of items with behaviour "
        "the cold items may cost when they are calibrated into rankings; raise it to show new "
        "items more.", ge=0, lt=1)

    @field_validator("items", "relations", mode="before")
    @classmethod
    def _path(cls, value: Any) -> Any:
        return str(value) if isinstance(value, Path) else value

    @field_validator("items_sep", mode="before")
    @classmethod
    def _items_sep(cls, value: Any) -> Any:
        return parse_separator(value, "side.items_sep")

    @field_validator("items_columns", mode="before")
    @classmethod
    def _items_columns(cls, value: Any) -> Any:
        return parse_names(value, "side.items_columns")

    @field_validator("items_encoding", mode="before")
    @classmethod
    def _items_encoding(cls, value: Any) -> Any:
        return check_encoding(value, "side.items_encoding")

    def featurisation(self) -> dict[str, Any]:
        """The fields stored in ``features.json`` (not the input paths)."""
        return self.model_dump(exclude=set(self.inputs))


class StreamingConfig(Section):
    """Whether ``itemvec train`` reads the log whole or streams it in chunks."""

    section: ClassVar[str] = "streaming"
    mode: Literal["auto", "on", "off"] = setting(
        "auto", "Train without reading the log whole (pre-pass for the held-out slice, then "
        "chunked counting with bounded memory): on, off, or auto (on for Parquet/CSV logs above "
        "20M rows; JSONL never).", flat="streaming")
    memory_limit: int | None = setting(
        None, "Streamed counting: memory for partial pair sums before spilling to disk, e.g. "
        "4G.", ge=1, default_text="4G", parse="size")

    @field_validator("memory_limit", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return parse_size(value, "streaming.memory_limit") if isinstance(value, str) else value


class UpdateConfig(Section):
    """``itemvec update``: the short schedule and how old counts age; the rest is the parent's."""

    section: ClassVar[str] = "update"
    epochs: int = setting(3, "Most epochs of continued training (early stopping on the newest "
                          "new contexts may end sooner); 0 only places the new items.", ge=0,
                          flat="update_epochs", flag="--epochs")
    lr: float | None = setting(None, "Learning rate.", gt=0, flat="update_lr", flag="--lr",
                               default_text="the bundle's")
    batch_size: int | None = setting(None, "Batch size.", ge=1, flat="update_batch_size",
                                     flag="--batch-size", default_text="the bundle's")
    patience: int = setting(2, "Evaluations without a new best before stopping.", ge=1,
                            flat="update_patience", flag="--patience")
    eval_every: int = setting(1, "Epochs between validation evaluations.", ge=1,
                              flat="update_eval_every", flag="--eval-every")
    anchors: Literal["touched", "all"] = setting(
        "all", "all: train every item row; touched: only the rows the new events changed (the "
        "softmax still covers every item; --start stored only).", flat="update_anchors",
        flag="--anchors")
    decay_half_life: float | None = setting(
        None, "Age the stored counts: they count 0.5 ** (time from the bundle's newest event to "
        "the newest new event / this), e.g. 30d; needs --time.", gt=0,
        flat="update_decay_half_life", flag="--decay-half-life",
        default_text="the bundle's time_decay_half_life, else none", parse="duration")
    validation_fraction: float = setting(0.1, "Newest new contexts held out for early stopping.",
                                         ge=0, lt=0.5, flat="update_validation_fraction",
                                         flag="--validation-fraction")
    init: Literal["neighbours", "random"] = setting(
        "neighbours", "New rows (--start stored): neighbours (co-occurrence mean) or random.",
        flat="update_init", flag="--init")
    start: Literal["stored", "refresh"] = setting(
        "refresh", "refresh: restart from the spectral start of the merged counts, rotated onto "
        "the stored vectors (as a retrain would start, without re-reading old events); stored: "
        "continue from the stored weights (vectors move least).", flat="update_start",
        flag="--start")

    @field_validator("decay_half_life", mode="before")
    @classmethod
    def _half_life(cls, value: Any) -> Any:
        return parse_duration(value, "update.decay_half_life") if isinstance(value, str) \
            else value


class ServeConfig(Section):
    """``itemvec serve``: where and how the HTTP API listens."""

    section: ClassVar[str] = "serve"
    host: str = setting("127.0.0.1", "Interface to bind.", min_length=1)
    port: int = setting(8000, "TCP port.", ge=1, le=65535)
    watch_interval: float = setting(2.0, "Seconds between checks for --watch (at least 0.1).",
                                    ge=0.1, flat="serve_watch_interval",
                                    flag="--watch-interval")
    reload_interval: float = setting(2.0, "Least seconds between two POST /admin/reload "
                                     "(sooner: 429 with Retry-After).", ge=0,
                                     flat="serve_reload_interval", flag="--reload-interval")
    max_body: int = setting(1 << 20, "Largest request body in bytes (bigger: 413).", ge=1,
                            flat="serve_max_body", flag="--max-body")
    threads: int = setting(1, "BLAS/OpenMP threads per query (requests run concurrently).",
                           ge=1, flat="serve_threads", flag="--threads")
    workers: str = setting("1", "Worker processes behind the port: a number, or auto (one per "
                           "core); they share one memory-mapped bundle.",
                           flat="serve_workers", flag="--workers")

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, value: Any) -> Any:
        """``auto`` or 1-9999, given as text or (in a config file) as a number."""
        text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
        if not (text == "auto" or (isinstance(text, str) and text.isdigit()
                                   and 1 <= int(text) <= 9999)):
            raise ConfigError(f"serve.workers must be a number of processes (1-9999) or auto, "
                              f"got {value!r}")
        return text


class PipelineConfig(Section):
    """Every setting of every stage besides the data paths; what bundles store."""

    ingest: IngestConfig = Field(default_factory=IngestConfig)
    cooccurrence: CooccurrenceConfig = Field(default_factory=CooccurrenceConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    query: QueryConfig = Field(default_factory=QueryConfig)
    side: FeatureConfig = Field(default_factory=FeatureConfig)
    streaming: StreamingConfig = Field(default_factory=StreamingConfig)
    update: UpdateConfig = Field(default_factory=UpdateConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)

    @classmethod
    def from_dict(cls, data: Any) -> PipelineConfig:
        """A config file's or a bundle manifest's ``config``; absent sections and keys default."""
        return from_dict(cls, data, "config")

    @classmethod
    def from_flat(cls, **params: Any) -> PipelineConfig:
        """``from_flat(dim=32, window=3)``: flat parameter names, each routed to its section."""
        return cls().with_values(flat_to_paths(params))

    def flat(self) -> dict[str, Any]:
        """Every setting by its flat name (the inverse of ``from_flat``)."""
        return {name: getattr(getattr(self, path[0]), path[1])
                for name, path in FLAT_NAMES.items()}

    def with_values(self, values: dict[str, Any]) -> PipelineConfig:
        """A validated copy with ``{"training.dim": 32, ...}`` applied (an explicit flag over a
        file); cross-field rules are checked on the result."""
        data = self.to_dict()
        for path, value in values.items():
            section, name = split_path(path)
            data[section][name] = value
        return PipelineConfig.from_dict(data)


SECTIONS: dict[str, type[Section]] = {
    name: info.annotation for name, info in PipelineConfig.model_fields.items()  # type: ignore
}


def split_path(path: str) -> tuple[str, str]:
    """'training.dim' -> ('training', 'dim'), failing with the known names."""
    section, _, name = path.partition(".")
    cls = SECTIONS.get(section)
    if cls is None or name not in cls.model_fields:
        raise ConfigError(f"unknown setting {path!r}; known sections: {', '.join(SECTIONS)}")
    return section, name


def _flat_names() -> dict[str, tuple[str, str]]:
    names: dict[str, tuple[str, str]] = {}
    for section, cls in SECTIONS.items():
        for name, info in cls.model_fields.items():
            flat = meta(info, "flat") or name
            if flat in names:  # caught by the import of this module, i.e. by every test
                raise RuntimeError(f"flat name {flat!r} of {section}.{name} is taken by "
                                   f"{'.'.join(names[flat])}")
            names[flat] = (section, name)
    return names


FLAT_NAMES = _flat_names()


def flat_to_paths(params: dict[str, Any]) -> dict[str, Any]:
    """{'dim': 32} -> {'training.dim': 32}; an unknown name fails with the known ones."""
    unknown = sorted(set(params) - set(FLAT_NAMES))
    if unknown:
        raise ConfigError(f"unknown parameter {unknown[0]!r}; known: {', '.join(sorted(FLAT_NAMES))}")
    return {".".join(FLAT_NAMES[name]): value for name, value in params.items()}


def field_info(path: str) -> FieldInfo:
    """The pydantic field behind 'section.name' (its description, default, bounds)."""
    section, name = split_path(path)
    return SECTIONS[section].model_fields[name]


def from_dict(cls: type[S], data: Any, path: str) -> S:
    """Validate ``data`` as ``cls``; every problem is one line of the ``ConfigError``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must be a mapping, got {type(data).__name__}")
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(explain(exc, cls)) from None


def load_config(path: str | Path) -> PipelineConfig:
    """Read a JSON or TOML config file (the shape of a bundle manifest's ``config``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    if path.suffix.lower() == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); a .toml file "
                              "is read as TOML") from None
    return PipelineConfig.from_dict(data)


# -- ValidationError -> one line per problem --------------------------------------------------------
_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
               dict: "a mapping"}


def explain(exc: ValidationError, root: type[BaseModel]) -> str:
    """One line per field that failed, first problem of each field only."""
    lines: dict[tuple, str] = {}
    for error in exc.errors(include_url=False):
        model, names, info = _walk(root, error["loc"])
        lines.setdefault(tuple(names), _line(error, model, names, info))
    return "\n".join(lines.values())


def _walk(root: type[BaseModel], loc: tuple) -> tuple[type[BaseModel], list[str], FieldInfo | None]:
    """Follow ``loc`` through nested sections: (innermost model, field path, field info)."""
    model: type[BaseModel] = root
    names = [] if root is PipelineConfig else [root.section]  # type: ignore[attr-defined]
    info = None
    for part in loc:
        fields = model.model_fields
        if info is not None or part not in fields:
            break
        names.append(str(part))
        annotation = fields[part].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            info = fields[part]
    return model, names, info


def _line(error: dict, model: type[BaseModel], names: list[str], info: FieldInfo | None) -> str:
    kind, value, path = error["type"], error.get("input"), ".".join(names) or "config"
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, ConfigError):
        return str(cause)
    if kind == "extra_forbidden":
        known = ", ".join(sorted(model.model_fields))
        return f"config{'.' + path if path != 'config' else ''}: unknown key " \
               f"{error['loc'][-1]!r}; known: {known}"
    if kind in ("model_type", "model_attributes_type", "dict_type") and info is None:
        return f"config.{path} must be a mapping, got {type(value).__name__}"
    if info is None:
        return f"{path}: {error['msg']}, got {value!r}"
    bound, fix = _bounds(info), meta(info, "fix")
    tail = f"; {fix}" if fix else ""
    if kind == "finite_number":
        return f"{path} must be {bound + ' and ' if bound else ''}finite, got {value!r}{tail}"
    if kind in ("too_short", "string_too_short"):
        return f"{path} must not be empty, got {value!r}{tail}"
    if kind.startswith(("greater_than", "less_than")):
        return f"{path} must be {bound}, got {value!r}{tail}"
    return f"{path} must be {_kind_words(info.annotation)}{' ' + bound if bound else ''}, " \
           f"got {value!r}{tail}"


def _bounds(info: FieldInfo) -> str:
    """'>= 2', '> 0', 'in [0, 0.5)' from the field's constraints ('' when it has none)."""
    low = high = None
    for item in info.metadata:
        if isinstance(item, annotated_types.Ge | annotated_types.Gt):
            low = ("[", item.ge) if isinstance(item, annotated_types.Ge) else ("(", item.gt)
        if isinstance(item, annotated_types.Le | annotated_types.Lt):
            high = ("]", item.le) if isinstance(item, annotated_types.Le) else (")", item.lt)
    if low and high:
        return f"in {low[0]}{low[1]}, {high[1]}{high[0]}"
    if low:
        return f"{'>=' if low[0] == '[' else '>'} {low[1]}"
    if high:
        return f"{'<=' if high[0] == ']' else '<'} {high[1]}"
    return ""


def _kind_words(annotation: Any) -> str:
    """'an integer', 'one of a, b', 'a string or a mapping' for a field's type (None dropped)."""
    if typing.get_origin(annotation) is Literal:
        return f"one of {', '.join(map(str, typing.get_args(annotation)))}"
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        words = [_kind_words(a) for a in typing.get_args(annotation) if a is not type(None)]
        return " or ".join(words)
    return _TYPE_WORDS.get(typing.get_origin(annotation) or annotation, str(annotation))


__all__ = ["CooccurrenceConfig", "FeatureConfig", "IngestConfig", "PipelineConfig", "QueryConfig",
           "Section", "ServeConfig", "StreamingConfig", "TrainingConfig", "UpdateConfig",
           "field_info", "load_config", "parse_duration", "parse_event_weights", "parse_size"]
