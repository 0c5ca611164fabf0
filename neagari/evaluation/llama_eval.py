"""Benchmark evaluation through llama.cpp (PAPER.md §6 item 7): base vs patched model, greedy.

The paper served both models with llama.cpp (temperature 0, seed 42, context 8192) and stripped
``<think>`` blocks before scoring. Here llama-cpp-python loads the GGUF in-process and decodes
greedily: at every step the argmax of llama.cpp's logits (what temperature 0 / top_k 1 samples),
until an end-of-generation token, the item's stop string, or the token budget. Prompts are raw
text that already holds the chat rendering: they are tokenized with control tokens parsed and no
BOS, so the model sees exactly the tokens our engine sees.

Each prompt starts from an empty KV cache, so an item's output does not depend on which item came
before it. The paired comparison of two runs (exact McNemar, Wald CI of the difference) is
:func:`paired_comparison`.
"""

from __future__ import annotations

import ctypes
import json
import os
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import polars as pl
from tqdm import tqdm

from neagari.evaluation.benchmark_items import score_output
from neagari.stats import mcnemar_exact, paired_difference_ci, paired_difference_wald

N_CTX = 8192  # the paper's server context
SEED = 42  # the paper's server seed (greedy decoding never draws from it)
FINISH = ("stop", "eog", "length")  # stop string seen, end-of-generation token, budget spent


@dataclass
class Generation:
    """One greedy continuation: token ids (without the end-of-generation token), the text cut
    before the first stop string, why it ended, and (if tracked) per-step top-2 logit margins as
    a fraction of that step's largest |logit|."""

    ids: list[int]
    text: str
    finish: str
    margins: list[float] = field(default_factory=list)


def cut_at_stop(text: str, stops: Iterable[str]) -> tuple[str, bool]:
    """``text`` up to the earliest occurrence of any non-empty stop string, and whether one was
    found."""
    cut = min((i for s in stops if s and (i := text.find(s)) >= 0), default=-1)
    return (text, False) if cut < 0 else (text[:cut], True)


class LlamaGenerator:
    """A GGUF loaded by llama.cpp, decoded greedily one token at a time."""

    def __init__(self, model_path: str | os.PathLike, n_ctx: int = N_CTX, seed: int = SEED,
                 n_threads: int | None = None, n_batch: int = 512, n_gpu_layers: int = 0):
        import llama_cpp

        self._llama_cpp = llama_cpp
        self.llm = llama_cpp.Llama(model_path=str(model_path), n_ctx=n_ctx, seed=seed, n_threads=n_threads,
                                   n_threads_batch=n_threads, n_batch=n_batch, n_gpu_layers=n_gpu_layers,
                                   verbose=False)
        self.n_ctx = self.llm.n_ctx()
        self.n_vocab = self.llm.n_vocab()
        self._settings = {"n_ctx": self.n_ctx, "seed": seed, "n_batch": n_batch, "n_gpu_layers": n_gpu_layers,
                          "llama_cpp": getattr(llama_cpp, "__version__", None)}
        self._vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self._pieces: dict[int, bytes] = {}

    def close(self) -> None:
        self.llm.close()

    def settings(self) -> dict:
        """What greedy outputs may depend on besides the model and the prompt: context size, seed,
        prompt batch size, layers offloaded to the GPU and the llama.cpp binding's version. The
        thread count is left out, so that a resumed job may run on other cores: ggml splits its
        CPU matrix products across threads by output rows, which leaves each sum as it is."""
        return dict(self._settings)

    # ------------------------------------------------------------------ tokens
    def tokenize(self, text: str) -> list[int]:
        """Token ids of already rendered text: control tokens parsed, no BOS."""
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def piece(self, token: int) -> bytes:
        """The bytes of one token, control tokens written out (as our engine's decode does)."""
        if (got := self._pieces.get(token)) is None:
            size = 256
            while True:
                buf = ctypes.create_string_buffer(size)
                n = self._llama_cpp.llama_token_to_piece(self._vocab, token, buf, size, 0, True)
                if n >= 0:
                    break
                size = -n  # a negative return is the size the piece needs
            got = self._pieces[token] = buf.raw[:n]
        return got

    def is_eog(self, token: int) -> bool:
        return bool(self._llama_cpp.llama_vocab_is_eog(self._vocab, token))

    def _last_logits(self) -> np.ndarray:
        ptr = self._llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    # ------------------------------------------------------------------ generation
    def generate_ids(self, prompt_ids: Sequence[int], max_new_tokens: int, stops: Iterable[str] = (),
                     track_margins: bool = False) -> Generation:
        """Greedy continuation of ``prompt_ids`` from an empty cache.

        Stops before an end-of-generation token, after the token that completes a stop string
        (the text is cut before the stop string), or after ``max_new_tokens`` tokens (fewer if
        the context would overflow)."""
        if not prompt_ids:
            raise ValueError("the prompt must have at least one token")
        if len(prompt_ids) >= self.n_ctx:
            raise ValueError(f"prompt of {len(prompt_ids)} tokens does not fit the context of {self.n_ctx}")
        budget = min(max_new_tokens, self.n_ctx - len(prompt_ids))
        stop_bytes = [s.encode("utf-8") for s in stops if s]
        longest = max((len(s) for s in stop_bytes), default=0)
        self.llm.reset()
        self.llm.eval(list(prompt_ids))
        ids: list[int] = []
        buf = b""
        margins: list[float] = []
        finish = "length"
        while len(ids) < budget:
            logits = self._last_logits()
            token = int(np.argmax(logits))  # ties go to the lowest id, as llama.cpp's greedy sampler
            if track_margins:
                top2 = np.partition(logits, -2)[-2:]
                margins.append(float((top2[1] - top2[0]) / max(float(np.abs(logits).max()), 1e-12)))
            if self.is_eog(token):
                finish = "eog"
                break
            ids.append(token)
            start = max(0, len(buf) - longest + 1)  # a new stop can only end in the new piece
            buf += self.piece(token)
            hits = [i for s in stop_bytes if (i := buf.find(s, start)) >= 0]
            if hits:
                buf = buf[: min(hits)]
                finish = "stop"
                break
            if len(ids) < budget:
                self.llm.eval([token])
        return Generation(ids, buf.decode("utf-8", errors="replace"), finish, margins)

    def generate(self, prompt: str, max_new_tokens: int, stops: Iterable[str] = (),
                 track_margins: bool = False) -> Generation:
        return self.generate_ids(self.tokenize(prompt), max_new_tokens, stops, track_margins)


def answer_budget(gen: LlamaGenerator, items: Sequence[dict], extra: int = 4) -> int:
    """The token budget of :func:`neagari.evaluation.quality.evaluate_items`: the longest answer plus ``extra``."""
    return max(len(gen.tokenize(it["answer"])) for it in items) + extra


ROW_SCHEMA = {"id": pl.String, "domain": pl.String, "answer": pl.String, "output": pl.String,
              "correct": pl.Boolean, "n_new_tokens": pl.Int64, "finish": pl.String}


def default_budget(gen: LlamaGenerator, items: Sequence[dict], max_new_tokens: int | None = None) -> int | None:
    """The token budget of items without their own ``max_new_tokens``: ``max_new_tokens``, else
    :func:`answer_budget` over those items (None when every item has its own)."""
    if max_new_tokens is None and any("max_new_tokens" not in it for it in items):
        return answer_budget(gen, [it for it in items if "max_new_tokens" not in it])
    return max_new_tokens


def evaluate_item(gen: LlamaGenerator, item: dict, default: int | None) -> dict:
    """One item's row: greedy output under its budget and stop string, judged by its scorer."""
    budget = item.get("max_new_tokens") or default
    g = gen.generate(item["prompt"], budget, [item.get("stop") or ""])
    answer = item["answer"] if "answer" in item else json.dumps(item["gold"], sort_keys=True)
    return {"id": item["id"], "domain": item["domain"], "answer": answer, "output": g.text,
            "correct": score_output(item, g.text), "n_new_tokens": len(g.ids), "finish": g.finish}


def rescore(item: dict, row: dict) -> dict:
    """A stored row judged again by the current scorer (its output is what the model generated)."""
    return {**row, "correct": score_output(item, row["output"])}


def rows_table(rows: Sequence[dict]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=ROW_SCHEMA)


def evaluate_items(gen: LlamaGenerator, items: Sequence[dict], max_new_tokens: int | None = None,
                   desc: str | None = None, partial: str | os.PathLike | None = None,
                   header: dict | None = None, write=None) -> pl.DataFrame:
    """Greedy evaluation of items under llama.cpp, each judged by its scorer
    (:func:`neagari.evaluation.benchmark_items.score_output`: exact match of ``answer`` by default).

    Token budget: the item's own ``max_new_tokens`` (benchmark items), else ``max_new_tokens``,
    else :func:`answer_budget` over the items that have an answer. The end-of-turn token always
    stops; the item's ``stop`` string stops too. One row per item, in item order.

    partial: keep each finished row in this partial file and resume from it
    (:func:`neagari.evaluation.resumable.evaluate_resumable`); header: what the rows depend on
    besides the items (model sha256, generation settings, see :meth:`LlamaGenerator.settings`);
    rows read back are scored again by the current scorer. write: called with the table once
    every item is done, before the partial file is removed."""
    from neagari.evaluation.resumable import evaluate_resumable

    default = default_budget(gen, items, max_new_tokens)
    bar = tqdm(total=len(items), desc=desc, disable=desc is None, leave=False)

    def one(it: dict) -> dict:
        row = evaluate_item(gen, it, default)
        bar.update()
        return row

    try:
        if partial is None:
            rows = [one(it) for it in items]
            table = rows_table(rows)
            if write is not None:
                write(table)
            return table
        if header is None:
            raise ValueError("a partial file needs a header (model sha256, generation settings)")
        out: list[pl.DataFrame] = []

        def finish(rows: list[dict]) -> None:
            out.append(rows_table(rows))
            if write is not None:
                write(out[0])

        evaluate_resumable(items, one, partial, {**header, "default_budget": default}, restore=rescore, write=finish)
        return out[0]
    finally:
        bar.close()


def paired_comparison(base: pl.DataFrame, patched: pl.DataFrame) -> pl.DataFrame:
    """Per domain and over all items ("all", last row): base vs patched exact-match accuracy on
    the same items (joined on ``id``), the discordant counts b (base wrong, patched right) and c
    (base right, patched wrong), the exact McNemar p-value and the 95% CI of the difference:
    Newcombe's hybrid score interval (``ci_lo_pp``, ``ci_hi_pp``; it stays open when no pair is
    discordant) and the Wald interval the paper reports (``wald_ci_lo_pp``, ``wald_ci_hi_pp``).
    Accuracies, differences and bounds in percentage points."""
    if sorted(base["id"]) != sorted(patched["id"]):
        raise ValueError("base and patched runs cover different items")
    both = base.select("id", "domain", pl.col("correct").alias("base")).join(
        patched.select("id", pl.col("correct").alias("patched")), on="id")
    rows = []
    for domain, part in [*sorted(both.partition_by("domain", as_dict=True).items()), (("all",), both)]:
        n = part.height
        b = int((~part["base"] & part["patched"]).sum())
        c = int((part["base"] & ~part["patched"]).sum())
        a = int((part["base"] & part["patched"]).sum())
        diff, lo, hi = paired_difference_ci(a, b, c, n - a - b - c)
        _, wald_lo, wald_hi = paired_difference_wald(b, c, n)
        rows.append({"domain": domain[0], "n": n, "base_correct": int(part["base"].sum()),
                     "patched_correct": int(part["patched"].sum()),
                     "base_accuracy_pct": 100 * float(part["base"].mean()),
                     "patched_accuracy_pct": 100 * float(part["patched"].mean()),
                     "diff_pp": 100 * diff, "b": b, "c": c, "mcnemar_p": mcnemar_exact(b, c),
                     "ci_lo_pp": 100 * lo, "ci_hi_pp": 100 * hi,
                     "wald_ci_lo_pp": 100 * wald_lo, "wald_ci_hi_pp": 100 * wald_hi})
    return pl.DataFrame(rows)
