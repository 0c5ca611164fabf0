"""Analyses of search records and models: the paper's audits, the subspace sweep (subspace/) and the
geometric terrain (terrain/). Imports engine, search, embedded, evaluation, workflow, shared helpers."""
