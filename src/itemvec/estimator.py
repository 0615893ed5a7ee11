"""Placeholder: the ItemVec estimator (added by the lead)."""
