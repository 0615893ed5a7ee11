"""itemvec: self-supervised item embeddings from behaviour logs.

    from itemvec import ItemVec
    model = ItemVec(dim=64).fit(df, context="session_id", item="item_id", time="ts")
    ids, scores = model.embeddings.similar_items("42", n=10)

Layers, bottom to top: util -> config -> data -> counting -> model -> store -> query ->
evaluation -> train -> analysis -> estimator -> serve -> cli (``docs/design.md``).
"""

__version__ = "0.1.0"  # first: modules below read it while this package is being imported

from itemvec.estimator import ItemVec, NotFittedError  # noqa: E402
from itemvec.query.embeddings import ItemEmbeddings  # noqa: E402
from itemvec.util.errors import ItemvecError  # noqa: E402

__all__ = ["ItemEmbeddings", "ItemVec", "ItemvecError", "NotFittedError", "__version__"]
