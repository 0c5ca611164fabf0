"""Probe sets and benchmark rows derived from downloaded files (rule download_derive_probes).

Derived probe sets (:func:`derive_probe_set`) turn downloaded files into probe documents in the
upstream schema: the three base control probes of the upstream search script, the five verbatim
training probes of the upstream held-out evaluation script, the verbatim extraction prompts and
the five knowledge controls of the upstream 1.7B notebook, and multiple-choice controls sampled
from MMLU / MuSR files. :func:`read_rows` and :func:`choice_list` read the benchmark tables for
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


def upstream_training_probes(source: str, where: str = "eval_heldout_verbatim.py") -> list[dict]:
    """The verbatim training probes of the upstream held-out evaluation script (``TRAINING_PROBES``:
    the five probes of the 1.7B targeted runs), as target probes."""
    return verbatim_probes(_assigned_literal(source, "TRAINING_PROBES", where),
                           source="upstream:eval_heldout_verbatim.TRAINING_PROBES")


def notebook_literal(notebook: Mapping[str, Any], name: str, where: str = "notebook") -> Any:
    """The literal a Jupyter notebook's code cell assigns to ``name`` at its top level (shell and
    magic lines left out, as Python would not parse them)."""
    for cell in notebook.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        src = "".join(cell.get("source", []))
        if re.search(rf"^{re.escape(name)}\s*=", src, re.M):
            lines = [ln for ln in src.splitlines() if not ln.lstrip().startswith(("!", "%"))]
            return _assigned_literal("\n".join(lines), name, where)
    raise DownloadError(f"{where}: no code cell assigns {name}")


def notebook_tests(notebook: Mapping[str, Any], where: str = "notebook") -> list[dict]:
    """The ``TESTS`` list of a Jupyter notebook's code cells (the upstream 1.7B demo)."""
    return notebook_literal(notebook, "TESTS", where)


def notebook_knowledge_controls(notebook: Mapping[str, Any], where: str = "notebook") -> list[dict]:
    """The knowledge controls of the upstream 1.7B demo (its ``controls``: (prompt, expected) pairs
    checked on the top next token), as control probes.

    The answer follows the prompt after a space, as the upstream search script writes its controls
    (' Paris', ' 4'), except a digit right after a letter, which continues the word (the formula
    'H' + '2'). Upstream gives no wrong answer; the heuristic one is a newline (the model stopping),
    which calibration replaces by the model's own top rival. ``answer_prefix`` keeps upstream's
    expected text: upstream passes a control when the top token's stripped text and it are prefixes
    one of the other ('Jup')."""
    pairs = notebook_literal(notebook, "controls", where)
    if not isinstance(pairs, list) or not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in pairs):
        raise DownloadError(f"{where}: controls is not a list of (prompt, expected) pairs")
    probes = []
    for prompt, expected in pairs:
        glued = expected[:1].isdigit() and prompt[-1:].isalpha()
        probes.append({"name": f"knowledge_{_slug(prompt)}", "prompt": prompt,
                       "correct": expected if glued else f" {expected}", "wrong": "\n", "answer_prefix": expected,
                       "category": "knowledge", "source": "upstream:notebook.controls"})
    return probes


def chat_prompt(system: str, user: str) -> str:
    """Qwen3's chat rendering of one system + user turn, thinking disabled (as the paper generated)."""
    return (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
            f"<|im_start|>assistant\n<think>\n\n</think>\n\n")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def verbatim_probes(tests: Sequence[Mapping[str, Any]], source: str = "upstream:notebook") -> list[dict]:
    """Verbatim-extraction target probes: the answer starts with the target sentence's first word;
    the heuristic wrong token (calibration replaces it) is the first word of the passage, i.e.
    copying from the top instead of extracting.

    ``tests``: the notebook's (name, system, prompt, target; the passage is the prompt after its
    first colon) or the evaluation script's (name, system, prompt, target_span, passage; names
    already ``verbatim_...`` are kept)."""
    probes = []
    for t in tests:
        target = t["target_span"] if "target_span" in t else t["target"]
        passage = t.get("passage") or t["prompt"].split(":", 1)[-1].lstrip().lstrip('"')
        slug = _slug(t["name"]).removeprefix("verbatim_")
        probe = {"name": f"verbatim_{slug}", "prompt": chat_prompt(t["system"], t["prompt"]),
                 "correct": target.split()[0], "wrong": passage.split()[0], "category": slug,
                 "target_span": target, "source": source}
        if t.get("passage"):
            probe["passage"] = t["passage"]
        probes.append(probe)
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


# How upstream's patch records name benchmark controls: <format>_<group>_<row>, e.g.
# mmlu_clinical_knowledge_0164 (subject, row within the subject) or musr_object_placements_0129
# (MuSR domain, row of that domain's file).
_ITEM_NAME = re.compile(r"(?P<fmt>mmlu|musr)_(?P<group>[a-z][a-z_]*?)_(?P<row>\d+)")


def named_benchmark_probes(fmt: str, rows: Sequence[Mapping[str, Any]], names: Sequence[str],
                           source: str) -> list[dict]:
    """The items ``names`` call for, in that order, each a control probe of that name.

    mmlu: ``mmlu_<subject>_<row>``, the row-th (0-based) row of that subject in file order (the
    per-subject test split). musr: ``musr_<domain>_<row>``, the row-th row of the file, which holds
    that one MuSR domain (murder_mysteries, object_placements or team_allocation), so every name of
    one file must name the same domain.
    """
    parsed = []
    for name in names:
        m = _ITEM_NAME.fullmatch(name)
        if not m or m["fmt"] != fmt:
            raise DownloadError(f"{source}: item name {name!r} is not {fmt}_<group>_<row>")
        parsed.append((name, m["group"], int(m["row"])))
    if len(set(names)) != len(names):
        raise DownloadError(f"{source}: item names repeat: {sorted(n for n in set(names) if names.count(n) > 1)}")
    if fmt == "musr":
        domains = sorted({g for _, g, _ in parsed})
        if len(domains) > 1:
            raise DownloadError(f"{source}: one MuSR file holds one domain, the names give {domains}")
        by_group = {g: list(range(len(rows))) for g in domains}
    else:
        by_group: dict[str, list[int]] = {}
        for i, r in enumerate(rows):
            by_group.setdefault(str(r.get("subject", "")), []).append(i)
    probes = []
    for name, group, row in parsed:
        if group not in by_group:
            raise DownloadError(f"{source}: {name}: no subject {group!r} in the file")
        if row >= len(by_group[group]):
            raise DownloadError(f"{source}: {name}: row {row} asked of {len(by_group[group])} {group} rows")
        p = benchmark_probe(fmt, rows[by_group[group][row]], by_group[group][row], source)
        probes.append({**p, "name": name, "category": f"{fmt}:{group}"})
    return probes


def derive_probe_set(spec: Mapping[str, Any], files: Mapping[str, str | os.PathLike], name: str) -> dict:
    """A probe document from downloaded files.

    spec (one ``downloads.derived`` entry): ``verbatim_training`` (download key of the upstream
    held-out evaluation script: its training probes), ``verbatim_notebook`` (download key of the
    demo notebook: its extraction prompts), ``knowledge_controls`` (download key of the demo
    notebook: its knowledge controls), ``upstream_controls`` (download key of the upstream search
    script), ``samples`` (list of ``{file, format, n}``,
    n items drawn with ``seed``, or ``{file, format, names}``, the items named:
    :func:`named_benchmark_probes`), ``seed``. files: download key -> local
    path. Verbatim probes become targets; everything else controls.
    """
    targets, controls, sources = [], [], {}
    seed = int(spec.get("seed", 0))
    if spec.get("verbatim_training"):
        key = spec["verbatim_training"]
        targets += upstream_training_probes(Path(files[key]).read_text(), key)
        sources["verbatim_training"] = key
    if spec.get("verbatim_notebook"):
        key = spec["verbatim_notebook"]
        nb = json.loads(Path(files[key]).read_text())
        targets += verbatim_probes(notebook_tests(nb, key))
        sources["verbatim_notebook"] = key
    if spec.get("knowledge_controls"):
        key = spec["knowledge_controls"]
        controls += notebook_knowledge_controls(json.loads(Path(files[key]).read_text()), key)
        sources["knowledge_controls"] = key
    if spec.get("upstream_controls"):
        key = spec["upstream_controls"]
        controls += upstream_default_controls(Path(files[key]).read_text(), key)
        sources["upstream_controls"] = key
    for i, s in enumerate(spec.get("samples", [])):
        rows = read_rows(files[s["file"]])
        if s.get("names"):
            controls += named_benchmark_probes(s["format"], rows, s["names"], s["file"])
        else:
            controls += sample_benchmark_probes(s["format"], rows, int(s["n"]), seed + i, s["file"])
        sources.setdefault("samples", []).append(dict(s))
    if not targets and not controls:
        raise DownloadError(f"derived probe set {name}: no probes (give verbatim_training, verbatim_notebook, "
                            "knowledge_controls, upstream_controls or samples)")
    groups = {"target": targets, "control": controls} if targets else {"control": controls}
    return {"domain": name, "version": "neagari-derived-1", "source": {"derived_from": sources, "seed": seed},
            "probes": groups}
