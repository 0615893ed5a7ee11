"""``ItemVec``: the library's front door, an estimator in the manner of scikit-learn and gensim.

    model = ItemVec(dim=64).fit(df, context="session_id", item="item_id", time="ts")
    ids, scores = model.embeddings.similar_items("42", n=10)
    model.save("model/");  model = ItemVec.load("model/");  model.update(new_df)

Hyper-parameters are constructor arguments (every field of ``PipelineConfig`` by its flat name,
``get_params``/``set_params``); learned state ends in ``_``. ``itemvec train`` is this class
behind a command line: the same data and seed give the same bundle either way.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from itemvec.analysis.tuning_page import tuning_page
from itemvec.config import FLAT_NAMES, PipelineConfig, UpdateConfig, parse_duration
from itemvec.data.frames import (
    events_from_frame,
    events_from_sequences,
    is_frame,
    items_from_frame,
)
from itemvec.data.ingest import EventLog, read_events
from itemvec.query.embeddings import ItemEmbeddings
from itemvec.store.bundle import check_target, write_bundle
from itemvec.train import pipeline
from itemvec.train.pipeline import TrainedModel, read_item_table, side_information, train_on_log
from itemvec.train.trainer import Callback
from itemvec.train.tuning import (
    SPACE,
    TuneSettings,
    apply_space,
    load_space,
    require_optuna,
    tune_log,
    without_fixed,
)
from itemvec.train.update import Parent, load_parent, pinned_kind, update_log
from itemvec.util.errors import ConfigError, ItemvecError

Events = Any  # pandas/polars DataFrame, pyarrow Table, path, or iterable of item-id sequences
# Named at fit time (data, not hyper-parameters); serving and update settings are not the model's.
FIT_ARGUMENTS = ("context", "item", "time", "event", "items", "item_key", "relations")
PARAMS = {name: path for name, path in FLAT_NAMES.items()
          if name not in FIT_ARGUMENTS and path[0] not in ("serve", "update")}
DEFAULTS: dict[str, Any] = {k: v for k, v in PipelineConfig().flat().items() if k in PARAMS}


class NotFittedError(ItemvecError, AttributeError):
    """A fitted attribute was asked of a model that has not been fitted (or loaded)."""


def config_from_params(params: dict[str, Any], data: dict[str, Any] | None = None
                       ) -> PipelineConfig:
    """A validated ``PipelineConfig`` from flat parameters (and fit-time ``data`` settings:
    column names, item table and relations paths); None values in ``data`` are left unset."""
    given = {k: v for k, v in (data or {}).items() if v is not None}
    return PipelineConfig.from_flat(**params, **given)


def params_from_config(config: PipelineConfig) -> dict[str, Any]:
    """The flat parameters that differ from the defaults (what ``ItemVec(**params)`` takes)."""
    return {k: v for k, v in config.flat().items() if k in PARAMS and v != DEFAULTS[k]}


class ItemVec:
    """Self-supervised item embeddings from behaviour: ``fit`` on events, query ``embeddings``.

    Every configuration field is a keyword argument (``dim``, ``epochs``, ``lr``,
    ``temperature``, ``window``, ``min_count``, ``history_epochs``, ``refit``, ...; see
    ``ItemVec.param_names()``), validated when the model is built, so a typo or a bad value
    fails here with the field, the value and the fix.
    """

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(PARAMS))
        if unknown:
            hint = " (give it to fit)" if unknown[0] in FIT_ARGUMENTS else ""
            raise ConfigError(f"ItemVec: unknown parameter {unknown[0]!r}{hint}; known: "
                              f"{', '.join(sorted(PARAMS))}")
        # validate now, not at fit time (session_gap and event_weights need the time and event
        # columns that fit names)
        config_from_params(params, {"time": "<fit time=>", "event": "<fit event=>"})
        self._params = dict(params)

    # -- scikit-learn conventions ----------------------------------------------------------------
    @staticmethod
    def param_names() -> list[str]:
        """Every hyper-parameter ``ItemVec`` takes, sorted."""
        return sorted(PARAMS)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """All hyper-parameters, defaults included (``deep`` is accepted for scikit-learn)."""
        return {name: self._params.get(name, DEFAULTS[name]) for name in sorted(PARAMS)}

    def set_params(self, **params: Any) -> ItemVec:
        """Change hyper-parameters (validated); a later ``fit`` uses them. Returns ``self``."""
        merged = {**self._params, **params}
        type(self)(**merged)  # same checks as the constructor
        self._params = merged
        return self

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in sorted(self._params.items()))
        return f"ItemVec({shown})"

    @classmethod
    def from_config(cls, config: PipelineConfig) -> ItemVec:
        """An unfitted model whose parameters are ``config`` (column names come with ``fit``)."""
        return cls(**params_from_config(config))

    # -- fitting -----------------------------------------------------------------------------
    def fit(self, events: Events, context: str = "session_id", item: str = "item_id",
            time: str | None = None, event: str | None = None, *,
            items: Any = None, item_key: str = "item_id", relations: str | Path | None = None,
            progress: bool = False, callbacks: list[Callback] | tuple = (),
            **file_options: Any) -> ItemVec:
        """Learn item vectors from ``events``; returns ``self``.

        ``events``: a pandas or polars DataFrame or a pyarrow Table with the named columns, a
        path (CSV/TSV, Parquet, JSONL, read as ``itemvec train`` reads it, streamed when
        large), or an iterable of item-id sequences (one per session; then the column names
        are not used). ``items``: optional item table (DataFrame or path) keyed by
        ``item_key``; its columns become side features (``features=``, ``side_mode=`` ...
        are hyper-parameters). ``file_options`` (paths only) are ``pipeline.train``'s: ``out``
        (write the bundle there too, keep checkpoints in it) and ``resume``.
        """
        paths = {"items": items, "relations": relations}
        on_disk = {k: str(v) for k, v in paths.items() if isinstance(v, str | Path)}
        config = config_from_params(self._params, {
            "context": context, "item": item, "time": time, "event": event,
            "item_key": item_key, **on_disk})
        if is_paths(events) and (items is None or "items" in on_disk):
            model = pipeline.train(events, config, progress=progress, callbacks=callbacks,
                                   **file_options)
        else:
            if file_options:
                raise ConfigError(f"ItemVec.fit: {sorted(file_options)[0]!r} applies when events "
                                  "and items are paths")
            log = read_log(events, config)
            table = item_table(items, item_key)
            model = train_on_log(log, config, item_table=table, progress=progress,
                                 callbacks=callbacks, side=side_information(table, config.side))
        return self.adopt(model, config)

    def adopt(self, model: TrainedModel, config: PipelineConfig) -> ItemVec:
        """Take what ``pipeline.train`` (or distributed training) returned as this model's
        fitted state; returns ``self``."""
        self.config_ = config
        self.embeddings_ = model.embeddings
        self.cooccurrence_ = model.cooccurrence
        self.item_counts_ = model.item_counts
        self.encoder_state_ = model.training.encoder.state_dict()
        self.stats_ = model.stats
        self.files_ = dict(model.files)
        self.lineage_: dict[str, Any] | None = None
        return self

    def tune(self, events: Events, context: str = "session_id", item: str = "item_id",
             time: str | None = None, event: str | None = None, *, items: Any = None,
             item_key: str = "item_id", relations: str | Path | None = None, trials: int = 20,
             timeout: float | str | None = None, n_jobs: int = 1, storage: str | None = None,
             study: str = "itemvec", metric: str = "mean", space: str | Path | dict | None = None,
             out: str | Path | None = None, progress: bool = False,
             echo: Any = None) -> ItemVec:
        """Search hyper-parameters with Optuna (``itemvec.train.tuning``), then fit the best
        configuration on every event as ``fit`` does; returns ``self``.

        Parameters given to the constructor are fixed; the rest of ``space`` (a JSON/TOML file
        or a mapping of entries over ``tuning.SPACE``) is searched for ``trials`` more trials
        (``timeout``: seconds or a duration such as 1h). ``storage`` (``sqlite:///tune.db``)
        keeps the study so a later call with the same ``study`` continues it. ``tuning_`` holds
        the study's summary; the bundle files ``best_config.json`` (for ``itemvec train
        --config``), ``tuning.json`` and ``tuning.html`` go into ``save``'s bundle (``out``).
        """
        require_optuna()
        if out is not None:
            check_target(Path(out))  # fail before the search, not after it
        limit = parse_duration(timeout, "--timeout") if timeout is not None else None
        settings = TuneSettings(trials, limit, n_jobs, storage, study, metric)
        searched = without_fixed(space_entries(space), set(self._params))
        on_disk = {k: str(v) for k, v in {"items": items, "relations": relations}.items()
                   if isinstance(v, str | Path)}
        config = config_from_params(self._params, {
            "context": context, "item": item, "time": time, "event": event,
            "item_key": item_key, **on_disk})
        table = item_table(items, item_key)
        result = tune_log(read_log(events, config), config, searched, settings, item_table=table,
                          side=side_information(table, config.side), progress=progress,
                          echo=echo)
        self.set_params(**params_from_config(result.config))
        self.fit(events, context, item, time, event, items=items, item_key=item_key,
                 relations=relations, progress=progress)
        self.tuning_ = result.to_dict()
        self.files_.update(tuning_files(self.tuning_, self.config_))
        if out is not None:
            self.save(out)
        return self

    @classmethod
    def from_trained(cls, model: TrainedModel, config: PipelineConfig) -> ItemVec:
        """Wrap what ``pipeline.train`` (or distributed training) returned."""
        return cls.from_config(config).adopt(model, config)

    # -- fitted state ------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "embeddings_"):
            raise NotFittedError("this ItemVec is not fitted yet; call fit(events, ...) or "
                                 "ItemVec.load(dir) first")

    @property
    def embeddings(self) -> ItemEmbeddings:
        """The query object (``similar_items``, ``recommend``, ``emb[id]`` ...)."""
        self._check_fitted()
        return self.embeddings_

    @property
    def item_ids_(self) -> np.ndarray:
        """Item ids (str) in vector order."""
        return self.embeddings.item_ids

    @property
    def vectors_(self) -> np.ndarray:
        """Unit item vectors, one row per ``item_ids_`` entry."""
        return self.embeddings.vectors

    # -- bundles -----------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the model as a bundle directory (atomically; never over a non-bundle)."""
        self._check_fitted()
        check_target(Path(path))
        extra = {"lineage": self.lineage_} if self.lineage_ else None
        return write_bundle(path, self.embeddings_, config=self.config_.to_dict(),
                            stats=self.stats_, encoder_state=self.encoder_state_,
                            cooccurrence=self.cooccurrence_, item_counts=self.item_counts_,
                            extra=extra, extra_files=self.files_ or None)

    @classmethod
    def load(cls, path: str | Path) -> ItemVec:
        """Read a bundle written by ``save``, ``itemvec train`` or ``itemvec update``."""
        parent = load_parent(path)
        model = cls.from_config(parent.config)
        model.config_ = parent.config
        model.embeddings_ = parent.embeddings
        model.cooccurrence_ = parent.cooccurrence
        model.item_counts_ = parent.item_counts
        model.encoder_state_ = parent.encoder_state
        model.stats_ = dict(parent.manifest.get("stats") or {})
        model.files_ = dict(parent.files)
        model.lineage_ = parent.manifest.get("lineage")
        return model

    # -- incremental -------------------------------------------------------------------------
    def update(self, events: Events, *, items: Any = None, item_key: str = "item_id",
               progress: bool = False, **settings: Any) -> ItemVec:
        """Fold new events into this model (``itemvec update``): new items join, touched
        rows train briefly, old counts decay. ``settings`` are ``UpdateConfig`` fields
        (``epochs``, ``decay_half_life``, ``start`` ...). Returns ``self``."""
        self._check_fitted()
        ingest = pinned_kind(self.config_.ingest, self.stats_)
        log = read_log(events, self.config_.replace(ingest=ingest))
        result = update_log(self._as_parent(), log, UpdateConfig(**settings),
                            item_table=item_table(items, item_key), ingest=ingest,
                            progress=progress)
        self.embeddings_ = result.embeddings
        self.cooccurrence_, self.item_counts_ = result.cooccurrence, result.item_counts
        self.encoder_state_ = result.training.encoder.state_dict()
        self.stats_, self.files_, self.lineage_ = result.stats, dict(result.files), result.lineage
        self.config_ = result.config
        return self

    def _as_parent(self) -> Parent:
        manifest = {"config": self.config_.to_dict(), "stats": self.stats_}
        if self.lineage_:
            manifest["lineage"] = self.lineage_
        digest = hashlib.sha256(json.dumps(manifest, sort_keys=True, default=str).encode())
        return Parent(Path("<in memory>"), manifest, digest.hexdigest(), self.config_,
                      self.embeddings_, sp.csr_matrix(self.cooccurrence_),
                      np.asarray(self.item_counts_), self.encoder_state_, dict(self.files_))


def space_entries(space: str | Path | dict | None) -> dict:
    """The search space: ``tuning.SPACE`` with a file's or a mapping's entries applied."""
    if isinstance(space, dict):
        return apply_space(SPACE, space)
    return load_space(space)


def tuning_files(summary: dict[str, Any], config: PipelineConfig) -> dict[str, bytes]:
    """Bundle files of a tuned model: the winning config, the study as JSON and as a page."""
    return {"best_config.json": json.dumps(config.to_dict(), indent=2).encode(),
            "tuning.json": json.dumps(summary, indent=2).encode(),
            "tuning.html": tuning_page(summary).encode()}


def is_paths(events: Any) -> bool:
    """A path, or a list / tuple of ``Path`` objects (several files of one log); a list of
    strings stays item-id sequences."""
    return isinstance(events, str | Path) or (
        isinstance(events, list | tuple) and bool(events)
        and all(isinstance(e, Path) for e in events))


def read_log(events: Any, config: PipelineConfig) -> EventLog:
    """A path, a DataFrame / Arrow table or an iterable of item-id sequences -> ``EventLog``."""
    if is_paths(events):
        return read_events(events, config.ingest)
    if is_frame(events):
        return events_from_frame(events, config.ingest)
    if isinstance(events, Iterable) and not isinstance(events, str | bytes | dict):
        return events_from_sequences(events, config.ingest)
    raise ConfigError(f"ItemVec.fit: events must be a DataFrame, a pyarrow Table, a path or "
                      f"an iterable of item-id sequences, got {type(events).__name__}")


def item_table(items: Any, key: str) -> Any:
    """The item table from a path or a DataFrame, keyed by string ``item_id``."""
    if items is None:
        return None
    if isinstance(items, str | Path):
        return read_item_table(items, key)
    return items_from_frame(items, key)


__all__ = ["ItemVec", "NotFittedError", "config_from_params", "params_from_config",
           "tuning_files"]
