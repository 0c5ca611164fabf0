"""pandera models of the tables the embedded model's training writes."""

from __future__ import annotations

import pandera.polars as pa


class TrainingLoss(pa.DataFrameModel):
    """One row per training step of an embedded model."""

    step: int = pa.Field(ge=1, unique=True)
    phase: str = pa.Field(isin=["copy", "mix"])  # curriculum phase (TrainConfig.copy_steps)
    lr: float = pa.Field(ge=0)
    train_loss: float = pa.Field(ge=0)
    eval_loss: float = pa.Field(ge=0, nullable=True)
    elapsed_s: float = pa.Field(ge=0)
    model: str
    variant: str = pa.Field(isin=["qat", "ternary", "fp"])
