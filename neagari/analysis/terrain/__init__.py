"""Geometric terrain of a model: embedding and hidden-state geometry (measures), WordNet relational
alignment, the per-model profile, and its table schemas."""
