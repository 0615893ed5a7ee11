"""What is trained: the item encoder, side features, objectives, pair sampling, optimiser."""
