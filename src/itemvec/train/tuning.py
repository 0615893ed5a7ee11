"""Hyper-parameter search with Optuna: which configuration gives the best model on this data.

The newest ``training.validation_fraction`` of contexts (seeded random without a clock) is held
out; each trial trains on the rest with that slice as its validation (early stopping, query
settings, history fine-tuning, as ``itemvec evaluate`` and the benchmarks train) and scores
HR@20 on it: the mean of i2i and s2i, or one of them (``metric``). Trials are proposed by TPE;
the trainer's per-epoch validation (``training.validation_task`` on the same slice: with
``metric`` i2i or s2i, that task, so each trial stops early on what it is scored by; with the
mean, the configured task, s2i by default: stopping on the mean stopped groceries' default
configuration early and cost test HR@20, 0.5634/0.5880 -> 0.5580/0.5607 for i2i/s2i) is
reported to a percentile pruner, so from epoch 10 on a trial in the bottom quarter of earlier
ones at the same epoch stops early. A new study starts with the configuration as given (the
defaults); another trial wins only if it beats that one by more than one standard error of its
validation HR@20 (``choose_best``): on a small slice the best of many trials is partly luck.

The search space is data (``SPACE``): flat setting names with a range or choices. Defaults:

======================  ==========================================  =========================
setting                 range                                       why
======================  ==========================================  =========================
dim                     16 .. 256 (int, log)                        capacity vs. data size
temperature             0.05 .. 0.5 (log)                           sharpness of the softmax
lr                      0.002 .. 0.05 (log)                         co-occurrence training
window                  1 .. 20 (int, log)                          pair distance (sessions)
distance_weighting      harmonic, uniform                           weight of far pairs
target_power            0.5 .. 1.0                                  flattening of the targets
row_weight_power        0.0 .. 1.0                                  weight of frequent anchors
history_epochs          auto, 0                                     history fine-tuning on/off
======================  ==========================================  =========================

Query pooling (recency half-life, popularity weight, evidence power) is chosen inside every
trial by the query tuner on the same slice; naming any of them in the space searches it instead
(and turns the query tuner off). ``load_space`` reads a JSON/TOML file that overrides, adds
(``{"hidden": {"choices": [0, 64]}}``) or removes (``{"window": null}``) entries. A setting
given explicitly (flag, config file, ``ItemVec`` argument) is fixed and left out of the search.

The study lives in Optuna's storage (``sqlite:///tune.db``): started again with the same storage
and study name, a search continues; trials a killed run left RUNNING are marked failed and their
settings tried again first (one process per study at a time).
"""

from __future__ import annotations

import json
import logging
import math
import time
import tomllib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from itemvec.config import FLAT_NAMES, PipelineConfig, flat_to_paths
from itemvec.data.ingest import EventLog
from itemvec.evaluation.protocol import TASKS, hit_rate
from itemvec.model.features import SideInformation
from itemvec.train.pipeline import holdout_by_time, train_on_log, validation_queries
from itemvec.train.trainer import COOCCURRENCE, TrainingDivergedError
from itemvec.util.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

METRICS = ("mean", "i2i", "s2i")
SEARCHABLE = ("cooccurrence", "training", "query", "side")  # sections a space may name
QUERY_SECTION = "query"
STARTUP_TRIALS = 5  # TPE samples at random until this many trials finished
# Optuna's percentile is the share of trials *kept* ("25.0: top of 25th percentile trials are
# kept"): 75 keeps the top three quarters, so a trial stops when in the bottom quarter ...
PRUNE_KEEP = 75.0
PRUNE_AFTER_TRIALS = 4  # ... once this many trials finished ...
PRUNE_AFTER_EPOCHS = 10  # ... and from this epoch of a trial on


@dataclass(frozen=True)
class Dimension:
    """One searched setting: ``kind`` int, float or categorical."""

    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple = ()

    def suggest(self, trial: Any, name: str) -> Any:
        if self.kind == "categorical":
            return trial.suggest_categorical(name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(name, float(self.low), float(self.high), log=self.log)

    def holds(self, value: Any) -> bool:
        """Is ``value`` a point of this dimension (the default point must be one)?"""
        if self.kind == "categorical":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return self.low <= value <= self.high and (self.kind == "float" or value == int(value))

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "categorical":
            return {"choices": list(self.choices)}
        return {"type": self.kind, "low": self.low, "high": self.high, "log": self.log}


SPACE: dict[str, Dimension] = {
    "dim": Dimension("int", 16, 256, log=True),
    "temperature": Dimension("float", 0.05, 0.5, log=True),
    "lr": Dimension("float", 0.002, 0.05, log=True),
    "window": Dimension("int", 1, 20, log=True),
    "distance_weighting": Dimension("categorical", choices=("harmonic", "uniform")),
    "target_power": Dimension("float", 0.5, 1.0),
    "row_weight_power": Dimension("float", 0.0, 1.0),
    "history_epochs": Dimension("categorical", choices=(None, 0)),
}


# -- the search space ----------------------------------------------------------------------------
def load_space(path: str | Path | None, base: dict[str, Dimension] | None = None
               ) -> dict[str, Dimension]:
    """``SPACE`` (or ``base``) with the entries of a JSON/TOML file applied; None: unchanged."""
    space = dict(SPACE if base is None else base)
    if path is None:
        return space
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except OSError as exc:
        raise ConfigError(f"--space {path}: cannot read ({exc.strerror})") from None
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"--space {path}: not valid {path.suffix.lstrip('.') or 'JSON'} "
                          f"({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--space {path} must map setting names to ranges, got "
                          f"{type(data).__name__}")
    return apply_space(space, data)


def apply_space(space: dict[str, Dimension], entries: dict[str, Any]) -> dict[str, Dimension]:
    """Override, add (a mapping) or remove (None or "off") entries, each validated."""
    space = dict(space)
    for name, spec in entries.items():
        check_name(name)
        if spec is None or spec == "off":
            space.pop(name, None)
        else:
            space[name] = dimension(name, spec, space.get(name))
    return space


def check_name(name: str) -> None:
    if name not in FLAT_NAMES or FLAT_NAMES[name][0] not in SEARCHABLE:
        known = sorted(n for n, (section, _) in FLAT_NAMES.items() if section in SEARCHABLE)
        raise ConfigError(f"space: unknown parameter {name!r}; known: {', '.join(known)}")


def dimension(name: str, spec: Any, old: Dimension | None = None) -> Dimension:
    """A validated ``Dimension`` from ``{"low": 8, "high": 64, "log": true}`` or
    ``{"choices": [...]}``; omitted keys keep ``old``'s (the default entry's)."""
    if not isinstance(spec, dict):
        raise ConfigError(f"space.{name} must be a mapping like {{\"low\": 1, \"high\": 10}} or "
                          f"{{\"choices\": [...]}}, or null to leave it out; got {spec!r}")
    unknown = sorted(set(spec) - {"type", "low", "high", "log", "choices"})
    if unknown:
        raise ConfigError(f"space.{name}: unknown key {unknown[0]!r}; known: choices, high, "
                          "log, low, type")
    if "choices" in spec:
        return _choices(name, spec["choices"])
    kind = spec.get("type") or (old.kind if old and old.kind != "categorical" else None) \
        or _numeric_kind(name)
    low, high = spec.get("low", old and old.low), spec.get("high", old and old.high)
    log = spec.get("log", old.log if old else False)
    if kind not in ("int", "float"):
        raise ConfigError(f"space.{name}.type must be int or float, got {kind!r}")
    for key, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"space.{name}.{key} must be a number, got {value!r}")
        if kind == "int" and value != int(value):
            raise ConfigError(f"space.{name}.{key} must be an integer, got {value!r}")
        _check_value(name, int(value) if kind == "int" else float(value))
    if not low < high:
        raise ConfigError(f"space.{name}: low must be below high, got {low!r} and {high!r}")
    if not isinstance(log, bool) or (log and low <= 0):
        raise ConfigError(f"space.{name}.log must be true or false (true needs low > 0), got "
                          f"{log!r} with low {low!r}")
    return Dimension(kind, low, high, log)


def _choices(name: str, choices: Any) -> Dimension:
    if not isinstance(choices, list) or len(choices) < 1:
        raise ConfigError(f"space.{name}.choices must be a non-empty list, got {choices!r}")
    for value in choices:
        if value is not None:
            _check_value(name, value)
    return Dimension("categorical", choices=tuple(choices))


def _numeric_kind(name: str) -> str:
    default = PipelineConfig().flat()[name]
    if isinstance(default, float):
        return "float"
    if isinstance(default, int) and not isinstance(default, bool):
        return "int"
    raise ConfigError(f"space.{name} is not a number: give its values as {{\"choices\": [...]}}")


def _check_value(name: str, value: Any) -> None:
    """The setting must accept ``value``: the config's own one-line error, prefixed."""
    try:
        PipelineConfig.from_flat(**{name: value})
    except ConfigError as exc:
        raise ConfigError(f"space.{name}: {exc}") from None


def without_fixed(space: dict[str, Dimension], fixed: set[str]) -> dict[str, Dimension]:
    """The space less the settings given explicitly; an empty result is an error."""
    left = {name: dim for name, dim in space.items() if name not in fixed}
    if not left:
        raise ConfigError(f"nothing to search: every setting of the space is fixed ("
                          f"{', '.join(sorted(space))}); drop some options or widen --space")
    return left


def space_dict(space: dict[str, Dimension]) -> dict[str, dict]:
    return {name: dim.to_dict() for name, dim in sorted(space.items())}


# -- one trial ----------------------------------------------------------------------------------
def trial_config(base: PipelineConfig, params: dict[str, Any]) -> PipelineConfig:
    """``base`` with a trial's settings; searched query settings turn the query tuner off."""
    values = flat_to_paths(params)
    if any(path.startswith(QUERY_SECTION + ".") for path in values):
        values["training.tune_query"] = False
    return base.with_values(values)


def score_model(embeddings, queries: dict, metric: str) -> dict[str, float]:
    """HR@20 per task on the held-out slice and the objective (``metric``)."""
    scores = {task: hit_rate(embeddings, queries[task]) for task in TASKS}
    scores["objective"] = sum(scores.values()) / len(TASKS) if metric == "mean" \
        else scores[metric]
    return scores


class TrialWatch:
    """A trainer callback: the trial's progress bar, and pruning on the per-epoch validation."""

    def __init__(self, trial: Any, epochs: int, progress: bool) -> None:
        self.trial = trial
        self.bar = tqdm(total=epochs, desc=f"trial {trial.number}", unit="epoch", leave=False,
                        disable=not progress)

    def __call__(self, record: dict) -> None:
        if record.get("stage") != COOCCURRENCE:
            return
        self.bar.update(max(record["epoch"] - self.bar.n, 0))
        if "validation" not in record:
            return
        self.bar.set_postfix(validation=round(record["validation"], 4))
        self.trial.report(record["validation"], record["epoch"])
        if self.trial.should_prune():
            import optuna

            self.trial.set_user_attr("pruned_at", record["epoch"])
            raise optuna.TrialPruned(f"validation {record['validation']:.4f} at epoch "
                                     f"{record['epoch']}")

    def close(self) -> None:
        self.bar.close()


@dataclass
class Search:
    """What a search needs besides the study: data, base config, space, objective."""

    train: EventLog
    valid: EventLog
    base: PipelineConfig
    space: dict[str, Dimension]
    metric: str = "mean"
    item_table: pl.DataFrame | None = None
    side: SideInformation | None = None
    progress: bool = True

    def objective(self, trial: Any) -> float:
        params = {name: dim.suggest(trial, name) for name, dim in self.space.items()}
        config = trial_config(self.base, params)
        watch = TrialWatch(trial, config.training.epochs, self.progress)
        began = time.perf_counter()
        try:
            model = train_on_log(self.train, config, valid=self.valid, item_table=self.item_table,
                                 progress=False, callbacks=[watch], side=self.side)
        finally:
            watch.close()
            trial.set_user_attr("seconds", round(time.perf_counter() - began, 2))
        queries = validation_queries(self.valid, model.embeddings.item_ids, config)
        if queries is None:
            raise DataError("the held-out slice has fewer than 10 queries the model can answer")
        scores = score_model(model.embeddings, queries, self.metric)
        for name in TASKS:
            trial.set_user_attr(name, scores[name])
        trial.set_user_attr("best_epoch", int(model.stats.get("best_epoch") or 0))
        return scores["objective"]


def split_for_tuning(log: EventLog, config: PipelineConfig) -> tuple[EventLog, EventLog]:
    """(older part the trials train on, held-out slice they are scored on)."""
    fraction = config.training.validation_fraction or 0.1
    train, valid = holdout_by_time(log, fraction, config.training.seed)
    if valid is None:
        raise DataError(f"{log.source}: {log.n_contexts} contexts are too few to hold a slice "
                        "out for tuning; tuning needs at least 20")
    return train, valid


# -- the study ----------------------------------------------------------------------------------
@dataclass
class TuneSettings:
    """How long and where to search (``itemvec tune``'s options)."""

    trials: int = 20  # more trials this run (a resumed study keeps its earlier ones); 0: none
    timeout: float | None = None  # seconds for this run
    n_jobs: int = 1
    storage: str | None = None  # Optuna RDB URL, e.g. sqlite:///tune.db; None: in memory
    study: str = "itemvec"
    metric: str = "mean"

    def __post_init__(self) -> None:
        if self.trials < 0:
            raise ConfigError(f"--trials must be >= 0 (0: only train the best found so far), "
                              f"got {self.trials}")
        if self.n_jobs < 1:
            raise ConfigError(f"--n-jobs must be >= 1, got {self.n_jobs}")
        if self.metric not in METRICS:
            raise ConfigError(f"--metric must be one of {', '.join(METRICS)}, got "
                              f"{self.metric!r}")
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigError(f"--timeout must be > 0, got {self.timeout!r}")


@dataclass
class TuneResult:
    """The outcome of a search: the best settings and every trial of the study."""

    study: str
    metric: str
    best_params: dict[str, Any]
    best_value: float
    best_trial: int
    config: PipelineConfig  # the base config with the best settings
    trials: list[dict] = field(default_factory=list)
    importances: dict[str, float] = field(default_factory=dict)
    space: dict[str, dict] = field(default_factory=dict)
    ran: int = 0  # trials run by this call
    margin: float = 0.0  # what a trial had to beat the given configuration by (choose_best)

    @property
    def finished(self) -> int:
        return sum(t["state"] in ("COMPLETE", "PRUNED") for t in self.trials)

    def to_dict(self) -> dict[str, Any]:
        return {"study": self.study, "metric": self.metric, "best_trial": self.best_trial,
                "margin": self.margin,
                "best_value": self.best_value, "best_params": self.best_params,
                "finished": self.finished, "trials_to_within_1pct": trials_to_within(
                    self.trials, 0.01), "importances": self.importances, "space": self.space,
                "trials": self.trials}


def trials_to_within(trials: list[dict], fraction: float) -> int | None:
    """How many trials (in order) it took to score within ``fraction`` of the best score."""
    values = [t["value"] for t in trials if t["state"] == "COMPLETE"]
    if not values:
        return None
    target = max(values) * (1 - fraction)
    return next(i + 1 for i, t in enumerate(trials)
                if t["state"] == "COMPLETE" and t["value"] >= target)


def require_optuna() -> None:
    """Fail before any work when the ``tune`` extra is missing (ModuleNotFoundError, which the
    CLI turns into one line naming the extra)."""
    import optuna  # noqa: F401


def tune_log(log: EventLog, base: PipelineConfig, space: dict[str, Dimension],
             settings: TuneSettings, item_table: pl.DataFrame | None = None,
             side: SideInformation | None = None, progress: bool = True,
             echo: Callable[[str], None] | None = None) -> TuneResult:
    """Search ``space`` on ``log`` (``base`` fixes everything else); see the module docstring.
    ``echo`` receives one line per finished trial (default: the log)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if settings.metric != "mean":  # early stopping and pruning follow a one-task objective
        base = base.with_values({"training.validation_task": settings.metric})
    train, valid = split_for_tuning(log, base)
    search = Search(train, valid, base, space, settings.metric, item_table, side, progress)
    study = open_study(settings, base, space)
    say = echo or logger.info
    bar = tqdm(total=settings.trials, desc="tune", unit="trial", disable=not progress)
    ran = []

    def finished(study: Any, trial: Any) -> None:
        bar.update(1)
        ran.append(trial.number)
        say(trial_line(study, trial, settings.metric))

    try:
        run_trials(study, search.objective, settings, [finished])
    finally:
        bar.close()
    return result_of(study, base, space, settings, len(ran), query_counts(train, valid, base))


def run_trials(study: Any, objective: Callable, settings: TuneSettings,
               callbacks: list[Callable]) -> None:
    """``settings.trials`` trials within ``settings.timeout``. Enqueued trials (the start point,
    a killed run's) run one at a time first: threads sharing an SQLite study can both take the
    same enqueued trial (optuna/optuna#4002)."""
    import optuna

    deadline = None if settings.timeout is None else time.monotonic() + settings.timeout
    waiting = len(study.get_trials(states=(optuna.trial.TrialState.WAITING,)))
    first = min(waiting, settings.trials) if settings.n_jobs > 1 else 0
    for trials, jobs in ((first, 1), (settings.trials - first, settings.n_jobs)):
        left = None if deadline is None else deadline - time.monotonic()
        if trials == 0 or (left is not None and left <= 0):
            continue
        study.optimize(objective, n_trials=trials, timeout=left, n_jobs=jobs,
                       callbacks=callbacks, catch=(TrainingDivergedError, DataError))


def open_study(settings: TuneSettings, base: PipelineConfig, space: dict[str, Dimension]):
    """Create or load the study; a new one starts at ``base``'s point, a resumed one must have
    the same space, and trials a killed run left RUNNING are failed and enqueued again."""
    import optuna

    pruner = optuna.pruners.PercentilePruner(PRUNE_KEEP, n_startup_trials=PRUNE_AFTER_TRIALS,
                                             n_warmup_steps=PRUNE_AFTER_EPOCHS)
    try:
        storage = optuna.storages.get_storage(settings.storage)
        study = optuna.create_study(storage=storage, study_name=settings.study,
                                    direction="maximize", pruner=pruner, load_if_exists=True)
    except ImportError:
        raise
    except Exception as exc:  # a bad URL, a file that is not a database, ...
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"--storage {settings.storage!r}: {first}") from None
    declared = space_dict(space)
    known = study.user_attrs.get("space")
    if known is not None and known != json.loads(json.dumps(declared)):
        raise ConfigError(f"study {settings.study!r} in {settings.storage} searched another "
                          "space; give a new --study (or the same --space and options)")
    metric = study.user_attrs.get("metric", settings.metric)
    if metric != settings.metric:
        raise ConfigError(f"study {settings.study!r} in {settings.storage} maximised --metric "
                          f"{metric}, not {settings.metric}; give a new --study or --metric "
                          f"{metric}")
    if known is None:
        study.set_user_attr("space", declared)
        study.set_user_attr("metric", settings.metric)
        default = {name: base.flat()[name] for name in space}
        if all(space[name].holds(value) for name, value in default.items()):
            study.enqueue_trial(default)
    requeue_stale(study, storage)
    # seeded, and offset by the trials so far: a resumed run draws new settings, not the
    # first run's again
    study.sampler = optuna.samplers.TPESampler(seed=base.training.seed + len(study.trials),
                                               n_startup_trials=STARTUP_TRIALS)
    return study


def requeue_stale(study: Any, storage: Any) -> int:
    """Trials left RUNNING by a killed run: failed, their settings enqueued to run first."""
    import optuna

    stale = study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    study_id = storage.get_study_id_from_name(study.study_name)
    for trial in stale:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
        if trial.params:
            study.enqueue_trial(trial.params)
        logger.info("trial %d was left running by an earlier run: marked failed, settings "
                    "enqueued again", trial.number)
    return len(stale)


def result_of(study: Any, base: PipelineConfig, space: dict[str, Dimension],
              settings: TuneSettings, ran: int, counts: dict[str, int]) -> TuneResult:
    trials = [trial_record(t) for t in study.trials]
    start = {name: base.flat()[name] for name in space}
    best, margin = choose_best(trials, start, counts, settings.metric)
    return TuneResult(settings.study, settings.metric, best["params"], best["value"],
                      best["number"], trial_config(base, best["params"]), trials,
                      importances(study), space_dict(space), ran, margin)


def choose_best(trials: list[dict], start: dict[str, Any], counts: dict[str, int],
                metric: str) -> tuple[dict, float]:
    """(winning trial, margin): the best completed trial, unless the given configuration
    (``start``) completed and the best beats it by no more than ``margin``, one standard error
    of the start's validation HR@20 (binomial over the held-out queries): on a small slice the
    best of many trials is partly luck."""
    done = [t for t in trials if t["state"] == "COMPLETE"]
    if not done:
        raise DataError("no trial of the study completed; see the lines above")
    best = max(done, key=lambda t: t["value"])
    given = next((t for t in done if t["params"] == start), None)
    if given is None:
        return best, 0.0
    margin = standard_error(given, counts, metric)
    return (best if best["value"] > given["value"] + margin else given), margin


def standard_error(trial: dict, counts: dict[str, int], metric: str) -> float:
    """Binomial standard error of a trial's objective (0 without query counts)."""
    tasks = TASKS if metric == "mean" else (metric,)
    if not all(counts.get(task) and trial.get(task) is not None for task in tasks):
        return 0.0
    variance = sum(trial[t] * (1 - trial[t]) / counts[t] for t in tasks) / len(tasks) ** 2
    return math.sqrt(variance)


def query_counts(train: EventLog, valid: EventLog, config: PipelineConfig) -> dict[str, int]:
    """Held-out queries per task over the items the trials train on."""
    seen = train.item_ids[np.unique(train.items)]
    queries = validation_queries(valid, seen, config)
    return {} if queries is None else {task: len(q) for task, q in queries.items()}


def trial_record(trial: Any) -> dict[str, Any]:
    attrs = trial.user_attrs
    done = trial.state.name == "COMPLETE"  # a pruned trial's value is its last epoch's
    return {"number": trial.number, "state": trial.state.name,
            "value": trial.value if done else None,
            "params": dict(trial.params), "i2i": attrs.get("i2i"), "s2i": attrs.get("s2i"),
            "seconds": attrs.get("seconds"), "best_epoch": attrs.get("best_epoch"),
            "pruned_at": attrs.get("pruned_at"),
            "intermediate": {int(k): v for k, v in trial.intermediate_values.items()}}


def importances(study: Any) -> dict[str, float]:
    """fANOVA importance of each setting for the objective ({} with too few trials)."""
    import optuna

    try:
        with warnings.catch_warnings():  # "too few trials": then every setting weighs the same
            warnings.simplefilter("ignore")
            found = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}
    return {name: round(float(v), 4) for name, v in found.items() if math.isfinite(v)}


def trial_line(study: Any, trial: Any, metric: str) -> str:
    """One line per finished trial: state, score, best so far, seconds, settings."""
    record = trial_record(trial)
    settings = " ".join(f"{k}={_short(v)}" for k, v in record["params"].items())
    seconds = f"{record['seconds'] or 0:.1f}s"
    if record["state"] == "COMPLETE":
        best = study.best_trial
        return (f"trial {trial.number}: HR@20 {metric} {trial.value:.4f} (i2i {record['i2i']:.4f}, "
                f"s2i {record['s2i']:.4f}); best {best.value:.4f} (trial {best.number}); "
                f"{seconds}; {settings}")
    if record["state"] == "PRUNED":
        return f"trial {trial.number}: pruned at epoch {record['pruned_at']}; {seconds}; {settings}"
    return f"trial {trial.number}: {record['state'].lower()}; {seconds}; {settings}"


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


__all__ = ["SPACE", "Dimension", "TuneResult", "TuneSettings", "apply_space", "choose_best",
           "load_space",
           "require_optuna", "trial_config", "trials_to_within", "tune_log", "without_fixed"]
