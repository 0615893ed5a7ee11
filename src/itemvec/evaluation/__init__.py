"""Full-ranking evaluation: the time split, queries, metrics, baselines, query tuning."""
