"""itemvec: self-supervised item embeddings from behaviour logs.

    from itemvec import ItemVec
    model = ItemVec(dim=64).fit(df, context="session_id", item="item_id", time="ts")
    ids, scores = model.embeddings.similar_items("42", n=10)

Layers, bottom to top: util -> config -> data -> counting -> model -> store -> query ->
evaluation -> train -> analysis -> estimator -> serve -> cli (``docs/design.md``).
"""

import importlib
from typing import Any

from itemvec.query.embeddings import ItemEmbeddings
from itemvec.util.errors import ItemvecError
from itemvec.util.version import VERSION

__all__ = ["ItemEmbeddings", "ItemVec", "ItemvecError", "NotFittedError", "__version__"]
__version__ = VERSION
_TRAINING = ("ItemVec", "NotFittedError")  # loaded on first use: serving never imports torch


def __getattr__(name: str) -> Any:
    if name in _TRAINING:
        return getattr(importlib.import_module("itemvec.estimator"), name)
    raise AttributeError(f"module 'itemvec' has no attribute {name!r}")
