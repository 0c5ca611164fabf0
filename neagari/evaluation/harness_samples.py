"""Per-item verdicts read from lm-evaluation-harness sample logs (``--log_samples``), into the
per-item table of :class:`neagari.evaluation.schemas.BenchItems`.

A sample log is ``samples_<task>_<date>.jsonl`` under lm-eval's output path (one folder per
model name): one JSON line per item and answer filter, with the row (``doc``, ``doc_id``), the
target, the raw replies (``resps``, after ``<think>`` stripping), the filtered replies, the
filter's name and one value per metric. The verdict of an item is the recipe's metric under the
recipe's filter (:class:`neagari.evaluation.harness.Recipe`); the reply kept is the raw one.
lm-eval logs neither the token count nor why a reply ended: those columns are null.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import polars as pl

from neagari.evaluation.llama_eval import ROW_SCHEMA


# the workflow's own task names (one per benchmark), so they never clash with the harness's
TASK_PREFIX = "neagari_"


def task_name(benchmark: str) -> str:
    return f"{TASK_PREFIX}{benchmark}"


class SampleLogError(ValueError):
    """A sample log that does not give one verdict per item. One line."""


def sample_log(root: str | os.PathLike, task: str) -> Path:
    """The sample log of ``task`` under ``root`` (the newest, where a folder holds several runs)."""
    found = sorted(Path(root).rglob(f"samples_{task}_*.jsonl"), key=lambda p: p.name)
    if not found:
        raise SampleLogError(f"{root}: no sample log of task {task} (samples_{task}_*.jsonl)")
    return found[-1]


def verdict(value: Any, where: str) -> bool:
    """A per-item metric as a verdict: booleans, and the 0 / 1 of exact match."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    raise SampleLogError(f"{where}: metric value {value!r} is not a per-item verdict (true/false, 0/1)")


def read_sample_log(path: str | os.PathLike, benchmark: str, recipe) -> list[dict]:
    """The rows (``BenchItems`` columns) of one task's sample log, in ``doc_id`` order."""
    path = Path(path)
    rows, filters = {}, set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            raise SampleLogError(f"{path}: line {n} is not JSON") from None
        filters.add(rec.get("filter"))
        if rec.get("filter") != recipe.filter:
            continue
        where = f"{path.name} line {n}"
        if recipe.metric not in rec:
            raise SampleLogError(f"{where}: no metric {recipe.metric!r} (it has {', '.join(rec.get('metrics', []))})")
        doc_id = int(rec["doc_id"])
        if doc_id in rows:
            raise SampleLogError(f"{where}: item {doc_id} twice under filter {recipe.filter!r}")
        try:
            item_id = recipe.item_id.format(**rec["doc"], doc_id=doc_id)
        except KeyError as e:
            raise SampleLogError(f"{where}: the item id {recipe.item_id!r} needs field {e} of the row") from None
        resps = rec["resps"]
        output = resps[0][0] if resps and resps[0] else ""
        rows[doc_id] = {"id": item_id, "domain": benchmark, "answer": str(rec["target"]), "output": str(output),
                        "correct": verdict(rec[recipe.metric], where), "n_new_tokens": None, "finish": None}
    if not rows:
        raise SampleLogError(f"{path}: no item under filter {recipe.filter!r} "
                             f"(filters there: {', '.join(sorted(map(str, filters))) or 'none'})")
    return [rows[k] for k in sorted(rows)]


def read_samples(root: str | os.PathLike, recipes: Mapping[str, Any]) -> pl.DataFrame:
    """The per-item table of every benchmark in ``recipes`` (name -> recipe), read from the sample
    logs under ``root`` (lm-eval's ``--output_path``); benchmarks in the order given."""
    rows = []
    for bench, recipe in recipes.items():
        rows += read_sample_log(sample_log(root, task_name(bench)), bench, recipe)
    table = pl.DataFrame(rows, schema=ROW_SCHEMA)
    if table["id"].is_duplicated().any():
        raise SampleLogError(f"{root}: item ids not unique: {table.filter(pl.col('id').is_duplicated())['id'][0]!r}")
    return table
