"""Shared fixture models: written once per session into a temporary directory."""

from __future__ import annotations

import pytest

from neagari.engine.fixtures import FixtureSpec, write_fixture_model

# Shapes that exercise the engine's corners: GQA, head_dim != hidden / heads, untied heads.
SHAPES = {
    "tied_gqa": FixtureSpec(n_layer=2, hidden=128, ffn=256, n_head=4, n_kv_head=2, head_dim=32, seed=1),
    "untied_wide_heads": FixtureSpec(n_layer=3, hidden=128, ffn=384, n_head=2, n_kv_head=1, head_dim=128,
                                     tied_embeddings=False, seed=2),
    "mha_untied": FixtureSpec(n_layer=2, hidden=256, ffn=256, n_head=8, n_kv_head=8, head_dim=32,
                              tied_embeddings=False, rope_theta=1_000_000.0, seed=3),
}


@pytest.fixture(scope="session")
def fixture_models(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("models")
    return {name: write_fixture_model(root / f"{name}.gguf", spec) for name, spec in SHAPES.items()}


@pytest.fixture(scope="session", params=sorted(SHAPES))
def fixture_model(request, fixture_models):
    return fixture_models[request.param]
