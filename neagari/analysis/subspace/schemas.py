"""pandera models of the subspace sweep's tables (:mod:`neagari.analysis.subspace.sweep`); pass the class to
``tables.write_table(df, path, SubspacePerLayer)``.

Units: ``energy`` a fraction of the delta's squared Frobenius norm; ``R`` that fraction over its
random-subspace expectation k/H (1 = null, H/k = ceiling); ``z`` in standard deviations of R over
``n_random`` random orthonormal bases of the same rank; ``delta_norm`` the residual-side delta's
Frobenius norm (weights in weight units, activations in residual units).
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

KINDS = ["write", "read", "mixed", "ceiling", "random"]
SIDES = ["write", "read", "all", "activation"]


class SubspacePerLayer(pa.DataFrameModel):
    """One row per patch × layer × candidate × rank × target (patched tensor, combination or
    'activation')."""

    model: str
    patch: str  # "<stage>/<run>"
    stage: str
    run: str
    layer: int = pa.Field(ge=0)
    candidate: str
    kind: str = pa.Field(isin=KINDS)
    target: str  # a projection (ffn_down, ...), a combination (write, read, all) or 'activation'
    target_side: str = pa.Field(isin=SIDES)
    k: int = pa.Field(ge=1)  # rank asked for
    rank: int = pa.Field(ge=1)  # rank of the basis (smaller where the source has lower rank)
    dim: int = pa.Field(ge=1)
    energy: float = pa.Field(ge=0, le=1 + 1e-9)
    R: float = pa.Field(ge=0)
    null_mean: float = pa.Field(ge=0)
    null_std: float = pa.Field(ge=0)
    z: float
    n_random: int = pa.Field(ge=2)
    delta_norm: float = pa.Field(gt=0)
    definition: str

    class Config:
        strict = True

    @pa.dataframe_check
    def ratio_is_energy_over_null(cls, data) -> pl.LazyFrame:
        expected = pl.col("energy") * pl.col("dim") / pl.col("rank")
        return data.lazyframe.select(
            ((pl.col("R") - expected).abs() <= 1e-6 * pl.col("R").abs().clip(1))
            & (pl.col("rank") <= pl.col("k")) & (pl.col("rank") <= pl.col("dim")))

    @pa.dataframe_check
    def one_row_per_cell(cls, data) -> pl.LazyFrame:
        keys = ["model", "patch", "layer", "candidate", "k", "target"]
        return data.lazyframe.select(pl.len().over(keys) == 1)


class SubspaceSummary(pa.DataFrameModel):
    """One row per patch × candidate × rank: scores pooled over layers (means of R and energy; z of
    the mean against the layers' independent nulls). ``R_w``/``z_w`` are on ``w_target``, the
    combination the candidate's kind is ranked on; nulls where the patch has no such delta."""

    model: str
    patch: str
    stage: str
    run: str
    candidate: str
    kind: str = pa.Field(isin=KINDS)
    dim: int = pa.Field(ge=1)
    k: int = pa.Field(ge=1)
    mean_rank: float = pa.Field(ge=1)
    R_act: float = pa.Field(ge=0, nullable=True)
    energy_act: float = pa.Field(ge=0, le=1 + 1e-9, nullable=True)
    z_act: float = pa.Field(nullable=True)
    n_layers_act: int = pa.Field(ge=0)
    R_w_write: float = pa.Field(ge=0, nullable=True)
    z_w_write: float = pa.Field(nullable=True)
    n_layers_w_write: int = pa.Field(ge=0)
    R_w_read: float = pa.Field(ge=0, nullable=True)
    z_w_read: float = pa.Field(nullable=True)
    n_layers_w_read: int = pa.Field(ge=0)
    R_w_all: float = pa.Field(ge=0, nullable=True)
    z_w_all: float = pa.Field(nullable=True)
    n_layers_w_all: int = pa.Field(ge=0)
    w_target: str = pa.Field(isin=["write", "read", "all"])
    R_w: float = pa.Field(ge=0, nullable=True)
    z_w: float = pa.Field(nullable=True)

    class Config:
        strict = True

    @pa.dataframe_check
    def one_row_per_cell(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(pl.len().over(["model", "patch", "candidate", "k"]) == 1)

    @pa.dataframe_check
    def matched_side_kept(cls, data) -> pl.LazyFrame:
        lf = data.lazyframe
        return lf.select((pl.col("kind").is_in(["write", "read"]) & (pl.col("w_target") == pl.col("kind")))
                         | (~pl.col("kind").is_in(["write", "read"]) & (pl.col("w_target") == "all")))
