"""Training stages and their orchestration: trainer, checkpoints, histories, cold start,
pipeline, update."""
