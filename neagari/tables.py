"""Every table the project writes goes through :func:`write_table`: validated against its pandera
schema first, then written by extension (.parquet, .csv, .tsv)."""

from __future__ import annotations

import os
from pathlib import Path

import pandera.polars as pa
import polars as pl


class ProbeScores(pa.DataFrameModel):
    """One row per probe scored on one model (``neagari score``)."""

    name: str
    role: str
    n_prompt_tokens: int = pa.Field(ge=1)
    correct_id: int = pa.Field(ge=0)
    wrong_id: int = pa.Field(ge=0)
    correct_logit: float
    wrong_logit: float
    gap: float
    top1_id: int = pa.Field(ge=0)

    class Config:
        strict = True

    @pa.dataframe_check
    def gap_is_difference(cls, data) -> pl.LazyFrame:
        lf = data.lazyframe
        return lf.select(((pl.col("correct_logit") - pl.col("wrong_logit") - pl.col("gap")).abs() < 1e-4))


SCHEMAS: dict[str, type[pa.DataFrameModel]] = {"probe_scores": ProbeScores}


def write_table(df: pl.DataFrame, path: str | os.PathLike, schema: str | type[pa.DataFrameModel]) -> Path:
    """Validate ``df`` (raises pandera's SchemaError naming the failing check) and write it."""
    model = SCHEMAS[schema] if isinstance(schema, str) else schema
    model.validate(df)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        df.write_parquet(path)
    elif suffix in (".csv", ".tsv"):
        df.write_csv(path, separator="\t" if suffix == ".tsv" else ",")
    else:
        raise ValueError(f"{path}: unknown table extension (use .parquet, .csv or .tsv)")
    return path


def read_table(path: str | os.PathLike) -> pl.DataFrame:
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        return pl.read_parquet(path)
    return pl.read_csv(path, separator="\t" if path.suffix.lower() == ".tsv" else ",")
