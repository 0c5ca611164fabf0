"""Every table the project writes goes through :func:`write_table`: validated against its pandera
schema class first, then written by extension (.parquet, .csv, .tsv). The schemas live beside their
concern (``neagari/<subpackage>/schemas.py``); this module knows none of them."""

from __future__ import annotations

import os
from pathlib import Path

import pandera.polars as pa
import polars as pl


def write_table(df: pl.DataFrame, path: str | os.PathLike, schema: type[pa.DataFrameModel]) -> Path:
    """Validate ``df`` against ``schema`` (raises pandera's SchemaError naming the failing check) and
    write it."""
    if not (isinstance(schema, type) and issubclass(schema, pa.DataFrameModel)):
        raise TypeError(f"{path}: write_table takes a schema class (a pandera DataFrameModel), not {schema!r}")
    schema.validate(df)
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


def polars_schema(model: type[pa.DataFrameModel]) -> dict[str, pl.DataType]:
    """Column name -> polars dtype of ``model``, in its order (regex columns left out), so frames
    built from rows get the schema's dtypes even when a column is all null or there is no row."""
    return {name: col.dtype.type for name, col in model.to_schema().columns.items() if not col.regex}
