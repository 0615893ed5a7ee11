"""Search: by item id, by vector, and by text query; plus item-table filters for all queries.

Text search ranks *lexical matches first*: items whose title is the query (case, punctuation,
accents, a trailing year "(1977)" and an article moved to the end "Empire Strikes Back, The"
do not matter), then items holding every query word, ranked by BM25 (``bm25s``). The rest of
the list is their *neighbours*: items nearest (cosine) to the score-weighted centroid of the
matches, fused with the items sharing their categorical attributes (``query.attributes``), so
"star wars" finds Star Wars, then Return of the Jedi and The Empire Strikes Back, which share
no word with the query. When no word matches (a typo), the ``tfidf`` text encoder
(hashed character n-grams, ``text_encoders`` registry) finds the closest spellings instead; a
feature encoder that embeds text directly can register under another name and replace it.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import bm25s
import numpy as np
import polars as pl
import scipy.sparse as sp

from itemvec.data.columns import mostly_urls
from itemvec.data.ingest import align_items
from itemvec.query.attributes import AttributeIndex, attribute_columns, fused, placed, rank_among
from itemvec.query.embeddings import ItemEmbeddings
from itemvec.util.errors import ConfigError, ItemvecError
from itemvec.util.registry import Registry
from itemvec.util.topk import top_k

logger = logging.getLogger(__name__)

text_encoders: Registry = Registry("text encoder")
TEXT_HINTS = ("title", "name", "description", "text", "label", "brand", "category")
TITLE_HINTS = ("title", "name", "label")  # columns whose whole value an exact query may equal


# -- item table ------------------------------------------------------------------------------------
def aligned_table(embeddings: ItemEmbeddings) -> pl.DataFrame | None:
    """The item table with one row per item in vocabulary order (None when there is none)."""
    table = embeddings.item_table
    if table is None or "item_id" not in table.columns:
        return None
    cached = embeddings.__dict__.get("_aligned_table")
    if cached is not None and cached[0] is table:
        return cached[1]
    aligned = align_items(table, embeddings.item_ids)
    embeddings.__dict__["_aligned_table"] = (embeddings.item_table, aligned)
    return aligned


def where_mask(embeddings: ItemEmbeddings, where: dict[str, Any]) -> np.ndarray:
    """Items whose column equals the value (or one of a list of values), for every column.

    Values are compared as strings so that ``{"category": "shoes"}`` and ``{"year": 2020}``
    both work whatever the column's type.
    """
    table = aligned_table(embeddings)
    if table is None:
        raise ItemvecError("this model has no item table to filter on; train with --items")
    allowed = np.ones(len(embeddings), dtype=bool)
    for column, value in where.items():
        if column not in table.columns or column == "item_id":
            known = ", ".join(c for c in table.columns if c != "item_id")
            raise ItemvecError(f"unknown item-table column {column!r}; known: {known}")
        values = [str(v) for v in (value if isinstance(value, list | tuple) else [value])]
        hit = table[column].cast(pl.String).is_in(values).fill_null(False).to_numpy()
        allowed &= hit
    return allowed


def item_filter(embeddings: ItemEmbeddings, where: dict[str, Any] | None = None,
                allowed: Sequence[str] | None = None) -> np.ndarray | None:
    """One boolean mask for ``similar_items(filter=...)``: column conditions AND an allow-list
    (e.g. the items in stock). None when there is nothing to filter."""
    mask = None
    if where:
        mask = where_mask(embeddings, where)
    if allowed is not None:
        keep = np.zeros(len(embeddings), dtype=bool)
        keep[embeddings.known(allowed)[0]] = True
        mask = keep if mask is None else mask & keep
    return mask


def text_columns(table: pl.DataFrame | None) -> list[str]:
    """String columns worth searching: named like text, or with mostly distinct values."""
    if table is None:
        return []
    columns = []
    for name, dtype in table.schema.items():
        if name == "item_id" or dtype != pl.String or mostly_urls(table[name]):
            continue
        if any(h in name.lower() for h in TEXT_HINTS) or table[name].n_unique() > table.height / 2:
            columns.append(name)
    return columns


def title_columns(table: pl.DataFrame | None) -> list[str]:
    """The text columns named like a title (all text columns when none is)."""
    columns = text_columns(table)
    return [c for c in columns if any(h in c.lower() for h in TITLE_HINTS)] or columns


# -- lexical matching --------------------------------------------------------------------------------
ARTICLES = ("the", "a", "an", "le", "la", "les", "il", "el", "los", "las", "der", "die", "das")
_YEAR = re.compile(r"\s*\((\d{4})\)\s*$")
_MOVED_ARTICLE = re.compile(rf"^(.+),\s*({'|'.join(ARTICLES)})$")
_APOSTROPHES = re.compile(r"['\u2019`]")
_NOT_WORD = re.compile(r"[^0-9a-z]+")


def title_forms(text: str) -> tuple[str, str]:
    """(with year, without year) spellings of a title that a person would type.

    Case, accents, apostrophes and punctuation go; a trailing "(1977)" becomes a last word (or
    goes); an article moved to the end ("Empire Strikes Back, The") comes back to the front.
    """
    folded = "".join(c for c in unicodedata.normalize("NFKD", text)
                     if not unicodedata.combining(c)).casefold().strip()
    year = _YEAR.search(folded)
    if year:
        folded = folded[:year.start()]
    moved = _MOVED_ARTICLE.match(folded)
    if moved:
        folded = f"{moved.group(2)} {moved.group(1)}"
    bare = " ".join(_NOT_WORD.sub(" ", _APOSTROPHES.sub("", folded)).split())
    return (f"{bare} {year.group(1)}" if year else bare), bare


def words(text: str) -> list[str]:
    """The tokens BM25 indexes: a title's typed spelling, year included, split on spaces."""
    return title_forms(text)[0].split()


class LexicalIndex:
    """BM25 (``bm25s``) over the item texts, exact-title lookups and which words each item has.

    ``match`` ranks exact titles first (the verbatim title, then its typed spelling with and
    without the year), then items holding every query word, by BM25; popularity breaks ties.
    """

    def __init__(self, table: pl.DataFrame, columns: Sequence[str], titles: Sequence[str],
                 popularity: np.ndarray) -> None:
        texts = table.select(pl.concat_str([pl.col(c).cast(pl.String).fill_null("")
                                            for c in columns], separator=" ")).to_series()
        docs = [words(t) for t in texts.to_list()]
        self.bm25 = bm25s.BM25()
        self.bm25.index(docs, show_progress=False)
        self.vocabulary: dict[str, int] = {}
        cols = [self.vocabulary.setdefault(w, len(self.vocabulary)) for d in docs for w in d]
        rows = np.repeat(np.arange(len(docs)), [len(d) for d in docs])
        incidence = sp.csc_matrix((np.ones(len(cols), np.float32), (rows, cols)),
                                  shape=(len(docs), max(len(self.vocabulary), 1)))
        incidence.data[:] = 1.0  # duplicates were summed: presence only
        self.incidence = incidence
        self.popularity = np.asarray(popularity, dtype=np.float64)
        self.exact: tuple[dict[str, list[int]], ...] = ({}, {}, {})  # verbatim, year, no year
        for column in titles:
            for row, value in enumerate(table[column].cast(pl.String).to_list()):
                if value:
                    for lookup, key in zip(self.exact, (value.strip(), *title_forms(value)),
                                           strict=True):
                        lookup.setdefault(key, []).append(row)

    def exact_levels(self, query: str) -> np.ndarray:
        """Per item: 3 verbatim title, 2 same typed spelling, 1 same without the year, 0 none."""
        level = np.zeros(self.incidence.shape[0], dtype=np.int8)
        for value, lookup, key in zip((3, 2, 1), self.exact, (query.strip(), *title_forms(query)),
                                      strict=True):
            rows = lookup.get(key, [])
            level[rows] = np.maximum(level[rows], value)
        return level

    def match(self, query: str, n: int, allowed: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
        """Up to ``n`` rows of lexical matches, best first, and their text scores (exact 1.0).

        When no item is an exact title or holds every query word, the items holding the most
        query words are the matches.
        """
        terms = list(dict.fromkeys(words(query)))
        level = self.exact_levels(query)
        bm25 = self.bm25.get_scores(terms) if terms else np.zeros(len(level), np.float32)
        known = [self.vocabulary[t] for t in terms if t in self.vocabulary]
        held = (np.asarray(self.incidence[:, known].sum(axis=1)).ravel() if known
                else np.zeros(len(level)))
        if allowed is not None:
            level, held = np.where(allowed, level, 0), np.where(allowed, held, 0)
        chosen = (level > 0) | ((held == len(terms)) & (len(terms) > 0))
        if not chosen.any() and held.max(initial=0) > 0:
            chosen = held == held.max()
        rows = np.flatnonzero(chosen)
        rows = rows[np.lexsort((-self.popularity[rows], -bm25[rows], -level[rows]))][:n]
        best = max(float(bm25[rows].max(initial=0.0)), 1e-12)
        scores = np.where(level[rows] > 0, 1.0, np.minimum(bm25[rows] / best, 1.0))
        return rows, scores.astype(np.float32)


# -- text encoders ---------------------------------------------------------------------------------
@dataclass
class TextQuery:
    """A text query mapped into embedding space, with the items it matched directly."""

    vector: np.ndarray | None
    matches: list[tuple[str, float]] = field(default_factory=list)


class TextEncoder(Protocol):
    name: str

    def encode(self, query: str) -> TextQuery: ...


@text_encoders.register("tfidf")
class TfidfTextEncoder:
    """Hashed char n-gram TF-IDF over the item table's text columns -> centroid of the matches."""

    name = "tfidf"

    def __init__(self, embeddings: ItemEmbeddings, columns: Sequence[str] | None = None,
                 top_matches: int = 20, min_score: float = 0.1,
                 n_features: int = 1 << 18) -> None:
        table = aligned_table(embeddings)
        self.columns = list(columns) if columns else text_columns(table)
        if not self.columns:
            raise ItemvecError("this model has no text to search: its item table has no text "
                               "columns (train with --items and a title/name column)")
        missing = [c for c in self.columns if table is None or c not in table.columns]
        if missing:
            raise ConfigError(f"text column {missing[0]!r} is not in the item table")
        self.embeddings = embeddings
        self.top_matches, self.min_score = top_matches, min_score
        # Imported here: scikit-learn (and the pandas it loads) costs ~74 MiB per process,
        # which every serving worker would pay for this spelling fallback alone.
        from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer

        texts = table.select(pl.concat_str([pl.col(c).cast(pl.String).fill_null("")
                                            for c in self.columns], separator=" "))
        self.hasher = HashingVectorizer(analyzer="char_wb", ngram_range=(3, 4),
                                        n_features=n_features, alternate_sign=False, norm=None,
                                        lowercase=True)
        self.tfidf = TfidfTransformer(sublinear_tf=True)
        self.matrix = self.tfidf.fit_transform(self.hasher.transform(texts.to_series()
                                                                     .to_list())).tocsr()

    def match(self, query: str) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the items whose text best matches ``query`` and their cosine scores."""
        q = self.tfidf.transform(self.hasher.transform([query]))
        scores = (self.matrix @ q.T).toarray().ravel()
        top = top_k(scores, self.top_matches)
        top = top[scores[top] >= self.min_score * max(float(scores[top[0]]), 1e-12)]
        top = top[scores[top] > 0]
        return top, scores[top]

    def encode(self, query: str) -> TextQuery:
        rows, scores = self.match(query)
        if len(rows) == 0:
            return TextQuery(None, [])
        vector = scores @ self.embeddings.vectors_of(rows)
        ids = self.embeddings.item_ids[rows]
        return TextQuery(vector, [(str(i), round(float(s), 6)) for i, s in
                                  zip(ids, scores, strict=True)])


# -- the search facade ------------------------------------------------------------------------------
FUZZY_SHARE = 0.6  # spelling matches within this share of the best one count as matches
FUZZY_MATCHES = 5
SEEDS = 5  # the best lexical matches whose centroid finds the neighbours
FILL_POOL = 200  # behaviour and attribute candidates each, before the two rankings are fused


def allowed_rows(embeddings: ItemEmbeddings, filter: Any = None, exclude: Any = ()
                 ) -> np.ndarray | None:
    """The ``filter``/``exclude`` of the similarity calls as one mask over the rows (or None)."""
    if filter is None and not len(exclude):
        return None
    if filter is None:
        mask = np.ones(len(embeddings), dtype=bool)
    elif isinstance(filter, np.ndarray) and filter.dtype == bool:
        mask = filter.copy()
    else:
        mask = np.zeros(len(embeddings), dtype=bool)
        mask[embeddings.known(filter)[0]] = True
    mask[embeddings.known(exclude)[0]] = False
    return mask


class ItemSearch:
    """Search a model by id, by vector or by text; text indexes are built on first use."""

    def __init__(self, embeddings: ItemEmbeddings, text_encoder: str = "tfidf",
                 attributes: bool = True, **encoder_params: Any) -> None:
        """``attributes=False``: a text query's neighbours by behaviour alone."""
        self.embeddings = embeddings
        self.use_attributes = attributes
        self.encoder_name = text_encoder
        self.encoder_params = encoder_params
        self._encoder: TextEncoder | None = None
        self._lexical: LexicalIndex | None = None
        self._attributes: AttributeIndex | Literal[False] | None = None
        self._lock = threading.Lock()

    @property
    def has_text(self) -> bool:
        return bool(text_columns(aligned_table(self.embeddings))) or self._encoder is not None

    def encoder(self) -> TextEncoder:
        with self._lock:
            if self._encoder is None:
                factory = text_encoders.get(self.encoder_name)
                self._encoder = factory(self.embeddings, **self.encoder_params)
            return self._encoder

    def lexical(self) -> LexicalIndex:
        with self._lock:
            if self._lexical is None:
                table = aligned_table(self.embeddings)
                columns = text_columns(table)
                if table is None or not columns:
                    raise ItemvecError("this model has no text to search: its item table has "
                                       "no text columns (train with --items and a title/name "
                                       "column)")
                self._lexical = LexicalIndex(table, columns, title_columns(table),
                                             self.embeddings.item_bias)
            return self._lexical

    def attributes(self) -> AttributeIndex | None:
        """The item table's categorical columns as an index (None when it has none)."""
        if not self.use_attributes:
            return None
        with self._lock:
            if self._attributes is None:
                table = aligned_table(self.embeddings)
                columns = attribute_columns(table, tuple(title_columns(table)))
                self._attributes = AttributeIndex(table, columns) if columns else False
            return self._attributes or None

    def by_id(self, item: str, n: int = 10, **filters: Any):
        return self.embeddings.similar_items(item, n=n, **filters)

    def by_vector(self, vector: np.ndarray, n: int = 10, **filters: Any):
        vector = np.asarray(vector, dtype=np.float32).ravel()
        if vector.shape[0] != self.embeddings.dim:
            raise ItemvecError(f"vector has {vector.shape[0]} values; this model's vectors have "
                               f"{self.embeddings.dim}")
        if not np.all(np.isfinite(vector)) or not np.any(vector):
            raise ItemvecError("vector must be finite and not all zeros")
        return self.embeddings.similar_to_vector(vector, n=n, **filters)

    def by_text(self, query: str, n: int = 10, **filters: Any
                ) -> tuple[np.ndarray, np.ndarray, list[tuple[str, float]]]:
        """(ids, scores, lexical matches): the matches first (text scores, exact title 1.0),
        then their neighbours (cosine to the matches' centroid); empty when nothing matches."""
        if not query.strip():
            raise ItemvecError("empty search query")
        allowed = allowed_rows(self.embeddings, **filters)
        rows, text_scores = self.lexical().match(query, n, allowed)
        vector = None
        if not len(rows):
            rows, text_scores, vector = self._spelling_matches(query, allowed)
        ids = self.embeddings.item_ids[rows]
        matches = [(str(i), round(float(s), 6)) for i, s in zip(ids, text_scores, strict=True)]
        if vector is None and len(rows):
            unit = self.embeddings.vectors_of(rows[:SEEDS])
            unit = unit / np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
            vector = text_scores[:SEEDS] @ unit
        if len(rows) >= n or vector is None or not np.any(vector):
            return ids, text_scores, matches
        more, scores = self._neighbours(rows, text_scores, vector, n - len(rows), filters, allowed)
        return (np.concatenate([ids, more]), np.concatenate([text_scores, scores]), matches)

    def _neighbours(self, rows: np.ndarray, text_scores: np.ndarray, vector: np.ndarray, n: int,
                    filters: dict[str, Any], allowed: np.ndarray | None
                    ) -> tuple[np.ndarray, np.ndarray]:
        """The rest of a text query's list: the matches' nearest items (cosine scores), fused
        with the items sharing their attributes when the item table has categorical columns
        (fused scores, ``attributes.fused``)."""
        attributes = self.attributes()
        pool = n if attributes is None else max(FILL_POOL, n)
        more, cosines = self.embeddings.similar_to_vector(
            vector, n=pool, filter=filters.get("filter"),
            exclude=[*filters.get("exclude", ()), *self.embeddings.item_ids[rows]])
        more = np.asarray(more, dtype=object)
        if attributes is None:
            return more, np.asarray(cosines, dtype=np.float32)
        eligible = np.ones(len(self.embeddings), bool) if allowed is None else allowed.copy()
        eligible[rows] = False
        eligible[self.embeddings.n_warm:] = False  # cold items come in through their vectors
        affinity = attributes.affinity(rows[:SEEDS], text_scores[:SEEDS])
        return self._fused(self.embeddings.indices(more), affinity, eligible, n)

    def _fused(self, behaviour: np.ndarray, affinity: np.ndarray, eligible: np.ndarray, n: int
               ) -> tuple[np.ndarray, np.ndarray]:
        """Reciprocal-rank fusion of the behaviour list and the attribute list (the ``pool``
        items sharing the most: one partition of the catalogue, no full sort)."""
        pool = max(FILL_POOL, n)
        listed = top_k(np.where(eligible & (affinity > 0), affinity, -np.inf), pool)
        candidates = np.union1d(behaviour, listed)
        behaviour_rank = placed(candidates, behaviour, np.arange(1, len(behaviour) + 1))
        attribute_rank = placed(candidates, listed,
                                rank_among(affinity[listed], affinity[listed]))
        score = fused(behaviour_rank, attribute_rank)
        best = np.lexsort((behaviour_rank, -score))[:n]
        return self.embeddings.item_ids[candidates[best]], score[best].astype(np.float32)

    def _spelling_matches(self, query: str, allowed: np.ndarray | None
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """No word matched: the text encoder's closest spellings (and its query vector)."""
        encoded = self.encoder().encode(query)
        rows = self.embeddings.indices([i for i, _ in encoded.matches])
        scores = np.asarray([s for _, s in encoded.matches], dtype=np.float32)
        keep = scores >= FUZZY_SHARE * scores.max(initial=0.0)
        if allowed is not None:
            keep &= allowed[rows]
        return rows[keep][:FUZZY_MATCHES], scores[keep][:FUZZY_MATCHES], encoded.vector
