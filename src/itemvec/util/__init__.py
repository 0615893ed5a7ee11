"""Shared low-level helpers every layer may use: errors, registries, atomic file writes."""
