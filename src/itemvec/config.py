"""Typed, validated configuration for every pipeline stage.

Each section is a dataclass whose ``__post_init__`` validates its fields; errors name the field,
the value and the fix (``training.lr must be > 0, got -1``). ``from_dict`` rejects unknown keys,
so a typo in a config file is an error rather than a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from itemvec.util.errors import ConfigError

C = TypeVar("C")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str | float | int, field_name: str = "duration") -> float:
    """'30m' -> 1800.0 seconds; bare numbers are seconds."""
    if isinstance(text, int | float):
        return float(text)
    match = _DURATION.match(str(text))
    if not match:
        raise ConfigError(
            f"{field_name} must be a duration like 90s, 30m, 2h or 7d, got {text!r}"
        )
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]


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
        except ValueError:
            raise ConfigError(f"event_weights[{name}] must be a number, got {value!r}") from None
        if weights[str(name)] < 0:
            raise ConfigError(f"event_weights[{name}] must be >= 0, got {value!r}")
    return weights


def _require(ok: bool, name: str, rule: str, value: Any, fix: str = "") -> None:
    if not ok:
        tail = f"; {fix}" if fix else ""
        raise ConfigError(f"{name} {rule}, got {value!r}{tail}")


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    _require(value in choices, name, f"must be one of {', '.join(choices)}", value)


@dataclass
class IngestConfig:
    """Which columns of the event log mean what, and how contexts are formed."""

    context: str = "session_id"
    item: str = "item_id"
    time: str | None = None
    event: str | None = None
    event_weights: dict[str, float] = field(default_factory=dict)
    session_gap: float | None = None  # seconds; splits a context at gaps of inactivity
    context_kind: str = "auto"  # auto: session when ordered by time, else basket
    dedupe_consecutive: bool = True

    def __post_init__(self) -> None:
        _require(bool(self.context), "ingest.context", "must name a column", self.context)
        _require(bool(self.item), "ingest.item", "must name a column", self.item)
        self.event_weights = parse_event_weights(self.event_weights)
        if self.session_gap is not None:
            self.session_gap = parse_duration(self.session_gap, "ingest.session_gap")
            _require(self.session_gap > 0, "ingest.session_gap", "must be > 0", self.session_gap)
            _require(self.time is not None, "ingest.session_gap", "needs --time", self.session_gap,
                     "name the time column with --time")
        _choice("ingest.context_kind", self.context_kind, ("auto", "session", "basket"))
        if self.event_weights and self.event is None:
            raise ConfigError("ingest.event_weights needs ingest.event; name the column with --event")


@dataclass
class CooccurrenceConfig:
    """How pairs are counted inside a context."""

    window: int = 5  # sessions: pairs at most this far apart
    basket_max_size: int = 50  # baskets: all pairs up to this size, windowed beyond it
    distance_weighting: str = "harmonic"  # harmonic (1/d) or uniform
    min_count: int = 1  # items seen in fewer contexts are dropped
    time_decay_half_life: float | None = None  # seconds; older contexts count less
    min_support: int = 1  # privacy: stored pairs need this many distinct contexts

    def __post_init__(self) -> None:
        _require(self.window >= 1, "cooccurrence.window", "must be >= 1", self.window)
        _require(self.basket_max_size >= 2, "cooccurrence.basket_max_size", "must be >= 2",
                 self.basket_max_size)
        _choice("cooccurrence.distance_weighting", self.distance_weighting, ("harmonic", "uniform"))
        _require(self.min_count >= 1, "cooccurrence.min_count", "must be >= 1", self.min_count)
        _require(self.min_support >= 1, "cooccurrence.min_support", "must be >= 1",
                 self.min_support)
        if self.time_decay_half_life is not None:
            self.time_decay_half_life = parse_duration(
                self.time_decay_half_life, "cooccurrence.time_decay_half_life")
            _require(self.time_decay_half_life > 0, "cooccurrence.time_decay_half_life",
                     "must be > 0", self.time_decay_half_life)


@dataclass
class TrainingConfig:
    """Encoder, objective and optimiser settings."""

    objective: str = "auto"  # softmax up to 50k items, infonce beyond (objectives.resolve_objective)
    dim: int = 64
    epochs: int = 40
    batch_size: int = 512
    lr: float = 0.01
    temperature: float = 0.2
    weight_decay: float = 0.0
    target_power: float = 1.0  # co-occurrence counts ** power form the target distribution
    row_weight_power: float = 0.5  # how much frequent anchors weigh: row mass ** power
    pairs_per_epoch: int | None = None  # infonce/sgns: pairs drawn per epoch (None: one per
    # non-zero of the matrix, at most 10M); bounds an epoch on huge catalogues
    negatives: int = 5  # sgns only
    negative_power: float = 0.75  # sgns only: unigram ** power
    init: str = "svd"  # svd: truncated SVD of shifted PPMI; random: small normal
    hidden: int = 0  # width of the residual MLP on top of the id embedding; 0 = none
    tune_query: bool = True  # choose query settings on the validation slice after training
    history_epochs: int | None = None  # fine-tune on history -> next item (itemvec.train.histories):
    # None = auto (10 up to 2M training events, else off: it scores every item per event); 0 = off
    history_lr: float = 0.002
    validation_fraction: float = 0.1
    refit: bool = True  # after selection on the held-out slice, train the final model on every
    # context with the selected schedule (epochs, history fine-tuning, query settings)
    patience: int = 2  # evaluations without a new best before stopping, and ...
    patience_batches: int = 120  # ... batches since the best (training.patience_spent)
    eval_every: int = 2
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    precision: str = "fp32"  # fp32; bf16 (autocast, CPU or CUDA); fp16 (autocast + loss scaling, CUDA)
    accumulate: int = 1  # gradient accumulation: one optimiser step per this many batches
    sparse_updates: str = "auto"  # lazy Adam on the id rows a batch touches; auto: sampled
    # objectives above 50k items (itemvec.model.optimiser.use_sparse_updates)
    checkpoint_every: float | None = None  # seconds between resumable checkpoints; 0 = each epoch
    checkpoint_dir: str | None = None  # default: <--out>/.checkpoint

    def __post_init__(self) -> None:
        _require(self.dim >= 2, "training.dim", "must be >= 2", self.dim)
        _require(self.epochs >= 1, "training.epochs", "must be >= 1", self.epochs)
        _require(self.batch_size >= 1, "training.batch_size", "must be >= 1", self.batch_size)
        _require(self.lr > 0, "training.lr", "must be > 0", self.lr)
        _require(self.lr < float("inf"), "training.lr", "must be finite", self.lr, "try 0.01")
        _require(self.temperature > 0, "training.temperature", "must be > 0", self.temperature)
        _require(self.weight_decay >= 0, "training.weight_decay", "must be >= 0", self.weight_decay)
        _require(self.target_power > 0, "training.target_power", "must be > 0", self.target_power)
        _require(self.negatives >= 1, "training.negatives", "must be >= 1", self.negatives)
        _require(self.pairs_per_epoch is None or self.pairs_per_epoch >= 1,
                 "training.pairs_per_epoch", "must be >= 1", self.pairs_per_epoch,
                 "or leave it unset for one pass over the non-zeros")
        _choice("training.init", self.init, ("svd", "random"))
        from itemvec.model.objectives import objectives  # late: objectives imports this module

        if self.objective != "auto":
            objectives.get(self.objective)  # unknown name -> error listing the known ones
        _require(self.hidden >= 0, "training.hidden", "must be >= 0", self.hidden)
        _choice("training.precision", self.precision, ("fp32", "bf16", "fp16"))
        _require(self.accumulate >= 1, "training.accumulate", "must be >= 1", self.accumulate)
        _choice("training.sparse_updates", self.sparse_updates, ("auto", "on", "off"))
        _require(0 <= self.validation_fraction < 0.5, "training.validation_fraction",
                 "must be in [0, 0.5)", self.validation_fraction)
        _require(self.patience >= 1, "training.patience", "must be >= 1", self.patience)
        _require(self.history_epochs is None or self.history_epochs >= 0,
                 "training.history_epochs", "must be >= 0", self.history_epochs,
                 "use 0 to turn history fine-tuning off, or leave it unset for auto")
        _require(0 < self.history_lr < float("inf"), "training.history_lr", "must be > 0",
                 self.history_lr, "try 0.002")
        _require(self.patience_batches >= 0, "training.patience_batches", "must be >= 0",
                 self.patience_batches, "use 0 to count evaluations only")
        _require(self.eval_every >= 1, "training.eval_every", "must be >= 1", self.eval_every)
        _require(self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda", "mps"),
                 "training.device", "must be auto, cpu, cuda or cuda:N", self.device)
        if self.checkpoint_every is not None:
            self.checkpoint_every = parse_duration(self.checkpoint_every, "training.checkpoint_every")
            _require(self.checkpoint_every >= 0, "training.checkpoint_every", "must be >= 0 "
                     "seconds", self.checkpoint_every, "use 0 to checkpoint after every epoch")
        if self.checkpoint_dir is not None:
            _require(self.checkpoint_every is not None, "training.checkpoint_dir",
                     "needs training.checkpoint_every", self.checkpoint_dir,
                     "add --checkpoint-every, e.g. 10m")
            self.checkpoint_dir = str(self.checkpoint_dir)


@dataclass
class QueryConfig:
    """How the bundle scores recommendations; stored in the manifest, overridable per call."""

    recency_half_life: float = 3.0  # in history positions; 0 = plain mean
    popularity_weight: float = 1.0  # multiplies the learned per-item popularity logit
    evidence_power: float = 0.25  # pooled history scaled by (effective history length) ** power

    def __post_init__(self) -> None:
        _require(0 <= self.evidence_power <= 1, "query.evidence_power", "must be in [0, 1]",
                 self.evidence_power)
        _require(self.recency_half_life >= 0, "query.recency_half_life", "must be >= 0",
                 self.recency_half_life)
        _require(self.popularity_weight >= 0, "query.popularity_weight", "must be >= 0",
                 self.popularity_weight)


@dataclass
class PipelineConfig:
    """Everything ``itemvec train`` needs besides the file paths."""

    ingest: IngestConfig = field(default_factory=IngestConfig)
    cooccurrence: CooccurrenceConfig = field(default_factory=CooccurrenceConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    query: QueryConfig = field(default_factory=QueryConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PipelineConfig:
        return from_dict(cls, data, "config")


def from_dict(cls: type[C], data: dict[str, Any], path: str) -> C:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys with the field path."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{path}: unknown key {unknown[0]!r}; known: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in data.items():
        nested = _SECTIONS.get(name) if cls is PipelineConfig else None
        kwargs[name] = from_dict(nested, value, f"{path}.{name}") if nested else value
        if not nested:
            _check_type(cls, name, value, path)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{path}: {exc}") from None


_SIMPLE = {"int": ((int,), "an integer"), "float": ((int, float), "a number"),
           "str": ((str,), "a string"), "bool": ((bool,), "true or false")}


def _check_type(cls: type, name: str, value: Any, path: str) -> None:
    """Plain int/float/str/bool fields must hold that type (a JSON "3" or 2.5 for an int fails)."""
    hint = next(f.type for f in dataclasses.fields(cls) if f.name == name)  # type: ignore[arg-type]
    rule = _SIMPLE.get(hint if isinstance(hint, str) else getattr(hint, "__name__", ""))
    if rule is None:
        return
    allowed, words = rule
    if (isinstance(value, bool) and bool not in allowed) or not isinstance(value, allowed):
        section = path.split(".", 1)[1] if "." in path else path
        raise ConfigError(f"{section}.{name} must be {words}, got {value!r}")


_SECTIONS: dict[str, type] = {
    "ingest": IngestConfig,
    "cooccurrence": CooccurrenceConfig,
    "training": TrainingConfig,
    "query": QueryConfig,
}


def load_config(path: str | Path) -> PipelineConfig:
    """Read a JSON config file (the same shape as a bundle manifest's ``config``)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    return PipelineConfig.from_dict(data)
