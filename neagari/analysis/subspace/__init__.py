"""Subspace sweep of patch deltas: measures (energy fraction, concentration), bases built from the
base model, the sweep over patches, and its table schemas."""
