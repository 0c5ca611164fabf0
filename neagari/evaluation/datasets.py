"""Probe sets and benchmark rows derived from downloaded files (rule download_derive_probes).

Derived probe sets (:func:`derive_probe_set`) turn downloaded files into probe documents in the
upstream schema: the three base control probes of the upstream search script, the verbatim
extraction prompts of the upstream 1.7B notebook, and multiple-choice controls sampled from
MMLU / MuSR files. :func:`read_rows` and :func:`choice_list` read the benchmark tables for
:mod:`neagari.evaluation.benchmark_items` too.
"""

from __future__ import annotations

import ast
import json
import os
import random
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from neagari.workflow.downloads import DownloadError

def _assigned_literal(source: str, name: str, where: str) -> Any:
    """The literal value assigned to ``name`` at the top level of Python source."""
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise DownloadError(f"{where}: not Python ({e.msg}, line {e.lineno})") from None
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if any(isinstance(t, ast.Name) and t.id == name for t in targets) and node.value is not None:
            try:
                return ast.literal_eval(node.value)
            except ValueError:
                raise DownloadError(f"{where}: {name} is not a literal") from None
    raise DownloadError(f"{where}: no top-level assignment to {name}")


def upstream_default_controls(source: str, where: str = "xor_search.py") -> list[dict]:
    """The base control probes of the upstream search script (``DEFAULT_CONTROL_PROBES``)."""
    probes = _assigned_literal(source, "DEFAULT_CONTROL_PROBES", where)
    return [dict(p, category="base", source="upstream:DEFAULT_CONTROL_PROBES") for p in probes]


def notebook_tests(notebook: Mapping[str, Any], where: str = "notebook") -> list[dict]:
    """The ``TESTS`` list of a Jupyter notebook's code cells (the upstream 1.7B demo)."""
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        src = "".join(cell.get("source", []))
        if re.search(r"^TESTS\s*=", src, re.M):
            lines = [ln for ln in src.splitlines() if not ln.lstrip().startswith(("!", "%"))]
            return _assigned_literal("\n".join(lines), "TESTS", where)
    raise DownloadError(f"{where}: no code cell assigns TESTS")


def chat_prompt(system: str, user: str) -> str:
    """Qwen3's chat rendering of one system + user turn, thinking disabled (as the paper generated)."""
    return (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
            f"<|im_start|>assistant\n<think>\n\n</think>\n\n")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def verbatim_probes(tests: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Verbatim-extraction target probes: the answer starts with the target sentence's first word;
    the heuristic wrong token (calibration replaces it) is the first word of the passage, i.e.
    copying from the top instead of extracting."""
    probes = []
    for t in tests:
        body = t["prompt"].split(":", 1)[-1].lstrip().lstrip('"')
        probes.append({"name": f"verbatim_{_slug(t['name'])}", "prompt": chat_prompt(t["system"], t["prompt"]),
                       "correct": t["target"].split()[0], "wrong": body.split()[0],
                       "category": _slug(t["name"]), "target_span": t["target"], "source": "upstream:notebook"})
    return probes


LETTERS = "ABCDEFGHIJ"


def choice_list(value: Any) -> list[str]:
    if isinstance(value, str):
        value = ast.literal_eval(value)
    return [str(c) for c in value]


def mc_probe(name: str, question: str, choices: Sequence[str], answer: int, context: str | None = None,
             category: str = "mc", source: str = "") -> dict:
    """A multiple-choice control probe: the next token after ``Answer:`` is the gold letter."""
    if not 0 <= answer < len(choices) <= len(LETTERS):
        raise DownloadError(f"{name}: answer {answer} outside {len(choices)} choices")
    lines = ([context.strip(), ""] if context else []) + [question.strip()]
    lines += [f"{LETTERS[i]}. {c}" for i, c in enumerate(choices)]
    wrong = LETTERS[(answer + 1) % len(choices)]
    return {"name": name, "prompt": "\n".join(lines) + "\nAnswer:", "correct": f" {LETTERS[answer]}",
            "wrong": f" {wrong}", "category": category, "source": source}


def read_rows(path: str | os.PathLike) -> list[dict]:
    """Rows of a parquet / csv / json / jsonl file."""
    import polars as pl

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pl.read_parquet(path).to_dicts()
    if suffix == ".csv":
        return pl.read_csv(path).to_dicts()
    if suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if suffix == ".json":
        doc = json.loads(path.read_text())
        return doc if isinstance(doc, list) else doc.get("rows", doc.get("data", []))
    raise DownloadError(f"{path}: unknown table format {suffix!r}")


def benchmark_probe(fmt: str, row: Mapping[str, Any], index: int, source: str) -> dict:
    """One control probe from one benchmark row (``mmlu``: question/choices/answer;
    ``musr``: narrative/question/choices/answer_index)."""
    if fmt == "mmlu":
        return mc_probe(f"mmlu_{row.get('subject', 'x')}_{index}", row["question"], choice_list(row["choices"]),
                        int(row["answer"]), category=f"mmlu:{row.get('subject', '')}", source=source)
    if fmt == "musr":
        return mc_probe(f"musr_{index}", row["question"], choice_list(row["choices"]), int(row["answer_index"]),
                        context=row["narrative"], category="musr", source=source)
    raise DownloadError(f"unknown benchmark format {fmt!r}")


def sample_benchmark_probes(fmt: str, rows: Sequence[Mapping[str, Any]], n: int, seed: int, source: str) -> list[dict]:
    """``n`` rows drawn without replacement with a seeded generator, in file order."""
    if n > len(rows):
        raise DownloadError(f"{source}: {n} samples asked of {len(rows)} rows")
    picked = sorted(random.Random(seed).sample(range(len(rows)), n))
    return [benchmark_probe(fmt, rows[i], i, source) for i in picked]


def derive_probe_set(spec: Mapping[str, Any], files: Mapping[str, str | os.PathLike], name: str) -> dict:
    """A probe document from downloaded files.

    spec (one ``downloads.derived`` entry): ``upstream_controls`` (download key of the upstream
    search script), ``verbatim_notebook`` (download key of the demo notebook), ``samples`` (list of
    ``{file, format, n}``), ``seed``. files: download key -> local path. Notebook prompts become
    targets; everything else controls.
    """
    targets, controls, sources = [], [], {}
    seed = int(spec.get("seed", 0))
    if spec.get("verbatim_notebook"):
        key = spec["verbatim_notebook"]
        nb = json.loads(Path(files[key]).read_text())
        targets += verbatim_probes(notebook_tests(nb, key))
        sources["verbatim_notebook"] = key
    if spec.get("upstream_controls"):
        key = spec["upstream_controls"]
        controls += upstream_default_controls(Path(files[key]).read_text(), key)
        sources["upstream_controls"] = key
    for i, s in enumerate(spec.get("samples", [])):
        rows = read_rows(files[s["file"]])
        controls += sample_benchmark_probes(s["format"], rows, int(s["n"]), seed + i, s["file"])
        sources.setdefault("samples", []).append(dict(s))
    if not targets and not controls:
        raise DownloadError(f"derived probe set {name}: no probes "
                            "(give upstream_controls, verbatim_notebook or samples)")
    groups = {"target": targets, "control": controls} if targets else {"control": controls}
    return {"domain": name, "version": "neagari-derived-1", "source": {"derived_from": sources, "seed": seed},
            "probes": groups}
