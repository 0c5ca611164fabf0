"""The paper's §6.7 benchmarks (GSM8K, IFEval, MMLU-Redux, MuSR) as generation items, and their
scoring.

An item is a dict ``{id, domain, prompt, scorer, gold, max_new_tokens, ...}``; ``prompt`` is the
fully rendered chat text (the model's own chat template), ``scorer`` names how an output is
judged (:data:`SCORERS`). The embedded model's evaluation sets use ``scorer = "exact"`` with the
answer in ``answer``; both kinds go through :func:`score_output`, so one evaluation rule serves
the default run and paper scale.

Prompt wording is ours (the paper does not publish its harness): one user message per item,
the dataset's text verbatim plus a one-line answer-format instruction that the scorer reads.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from neagari.evaluation import scorers
from neagari.evaluation.datasets import LETTERS, choice_list, read_rows

BENCHMARKS = ("gsm8k", "ifeval", "mmlu", "musr")

INSTRUCTIONS = {
    "gsm8k": "Solve the problem. End your reply with the final answer on its own line as '#### <number>'.",
    "mmlu": "Answer with the letter of the correct option, as 'Answer: X'.",
    "musr": "Answer with the number of the correct option, as 'Answer: N'.",
}


class BenchmarkError(ValueError):
    pass


def _gsm8k(row: Mapping[str, Any], i: int) -> dict:
    return {"id": f"gsm8k/{i}", "user": f"{row['question'].strip()}\n\n{INSTRUCTIONS['gsm8k']}",
            "gold": str(row["answer"])}


def _ifeval(row: Mapping[str, Any], i: int) -> dict:
    return {"id": f"ifeval/{row.get('key', i)}", "user": row["prompt"],
            "gold": {"instruction_id_list": list(row["instruction_id_list"]), "kwargs": list(row["kwargs"])}}


def _mmlu(row: Mapping[str, Any], i: int) -> dict:
    choices = choice_list(row["choices"])
    lines = [row["question"].strip(), *(f"{LETTERS[k]}. {c}" for k, c in enumerate(choices)), "",
             INSTRUCTIONS["mmlu"]]
    return {"id": f"mmlu/{row.get('subject', 'x')}/{i}", "user": "\n".join(lines), "gold": LETTERS[int(row["answer"])],
            "n_choices": len(choices)}


def _musr(row: Mapping[str, Any], i: int) -> dict:
    choices = choice_list(row["choices"])
    lines = [row["narrative"].strip(), "", row["question"].strip(),
             *(f"{k + 1}. {c}" for k, c in enumerate(choices)), "", INSTRUCTIONS["musr"]]
    return {"id": f"musr/{i}", "user": "\n".join(lines), "gold": int(row["answer_index"]) + 1,
            "n_choices": len(choices)}


BUILDERS: dict[str, Callable[[Mapping[str, Any], int], dict]] = {
    "gsm8k": _gsm8k, "ifeval": _ifeval, "mmlu": _mmlu, "musr": _musr}


def _ifeval_supported(gold: Mapping[str, Any]) -> bool:
    return all(i in scorers.SUPPORTED_IFEVAL_IDS for i in gold["instruction_id_list"])


def load_items(name: str, path: str | Path, limit: int | None = None, seed: int = 0) -> tuple[list[dict], dict]:
    """Items of one benchmark file, and counts ``{rows, items, skipped_unsupported}``.

    ``limit``: a seeded sample of that many rows (file order kept), for quick runs. IFEval rows
    with an instruction our scorer does not implement are left out and counted: the accuracy is
    then over the supported subset, which the report must say.
    """
    if name not in BUILDERS:
        raise BenchmarkError(f"unknown benchmark {name!r}; expected one of {', '.join(BENCHMARKS)}")
    rows = read_rows(path)
    if not rows:
        raise BenchmarkError(f"{path}: no rows")
    index = list(range(len(rows)))
    if limit is not None and limit < len(rows):
        index = sorted(random.Random(seed).sample(index, limit))
    items, skipped = [], 0
    for i in index:
        try:
            item = BUILDERS[name](rows[i], i)
        except KeyError as e:
            raise BenchmarkError(f"{path}: row {i} lacks column {e} for the {name} format") from None
        if name == "ifeval" and not _ifeval_supported(item["gold"]):
            skipped += 1
            continue
        items.append({"domain": name, "scorer": name, **item})
    return items, {"rows": len(rows), "items": len(items), "skipped_unsupported": skipped}


def render_items(items: Sequence[dict], apply_chat_template: Callable[..., str], thinking: bool,
                 max_new_tokens: Mapping[str, int]) -> list[dict]:
    """Each item's user message through the model's chat template (generation prompt added)."""
    out = []
    for it in items:
        prompt = apply_chat_template([{"role": "user", "content": it["user"]}], add_generation_prompt=True,
                                     enable_thinking=thinking)
        out.append({**it, "prompt": prompt, "max_new_tokens": int(max_new_tokens[it["domain"]])})
    return out


def score_output(item: Mapping[str, Any], output: str) -> bool:
    """Whether ``output`` answers ``item`` correctly, by the item's scorer."""
    kind = item.get("scorer", "exact")
    if kind == "exact":
        return scorers.exact_match(output, item["answer"])
    if kind == "gsm8k":
        return scorers.gsm8k_correct(output, item["gold"])
    if kind == "ifeval":
        return scorers.ifeval_prompt_strict(item["gold"], output)
    if kind == "mmlu":
        return scorers.mmlu_letter(output) == item["gold"]
    if kind == "musr":
        return scorers.musr_choice(output, int(item["n_choices"])) == int(item["gold"])
    raise BenchmarkError(f"unknown scorer {kind!r}")
