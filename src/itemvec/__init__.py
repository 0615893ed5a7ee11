"""itemvec: self-supervised item embeddings from behaviour logs.

The pipeline reads top-down: ingest -> cooccurrence -> sampling -> encoder -> training ->
embeddings -> evaluation -> index -> serve. ``itemvec.train.pipeline.train`` calls one step per stage.
"""

from itemvec.query.embeddings import ItemEmbeddings
from itemvec.util.errors import ItemvecError
from itemvec.util.version import VERSION

__all__ = ["ItemEmbeddings", "ItemvecError", "__version__"]
__version__ = VERSION
