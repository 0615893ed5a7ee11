"""Answering queries from trained vectors: ItemEmbeddings, ANN index, text search, explanations."""
