"""Reading behaviour logs and item tables into contexts: ingest, streamed reads, relations,
synthetic shops."""
