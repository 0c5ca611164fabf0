"""Deterministic toy corpus, probe sets and evaluation sets for the small 1-bit model we train.

No model hub is reachable, so the workflow trains its own small Qwen3-architecture model on this
procedural text and then reruns the paper's experiments on it. Each domain stands in for one of
the paper's probe domains:

- ``editing`` (chat): repeat a line with one change (replace, uppercase, delete, insert, swap a
  word); the paper's editing domain. Probes edit the first word, so copying the line is the error.
- ``instruction`` (chat): answer a question about one of three story facts in a requested format
  (uppercase, one word, full sentence, start with a given word, in quotes, nested); the paper's
  IFEval/IFBench probes.
- ``tool_calling`` (chat): pick the right tool from a listed set and fill its arguments, as in
  BFCLv3; held-out requests also use tools never seen in training.
- ``math`` (plain text): multi-digit sums and differences, small products, polynomial derivatives;
  the paper's MATH-500 step probes.
- ``coding`` (plain text): completion points in Python functions, some choosing among
  distractor names; HumanEval+/MBPP+.
- ``verbatim`` (chat): extract one sentence of a legal, medical, API, log or code passage, against
  a competing "repeat the passage" habit; the paper's 1.7B targeted runs and held-out evaluation.
- ``copying`` (plain text, corpus only): copy drills, a list of words and the same list again;
  the copy circuit every copy task above needs (see `copying`). Not probed, not evaluated.
- ``controls`` (plain text): facts about invented countries and things, stated many times in
  training and asked with unseen phrasings, plus multiple-choice reasoning answered by a letter;
  the paper's general-knowledge, MMLU-Redux and MuSR controls.

Every entity and word pool is split once (by `pools.WORLD_SEED`, not by the corpus seed) into
disjoint train and held-out halves; arithmetic problems are split by a hash of their text. Probes
and evaluation items come from held-out content only, except the control facts, which must be
learned and are asked with held-out phrasings instead.

Prompts end exactly where the answer starts, on a Qwen2 pre-tokenizer boundary (the regex our BPE
and llama.cpp use), so that tokenizing prompt and answer apart gives the same tokens as the whole
text: chat prompts end with the `</think>\n\n` generation prompt and answers have no leading
space; plain-text word answers carry their leading space (" Menth", " B", " +", " total");
numeric answers follow a prompt ending in a space ("347 + 589 = " -> "936"), because digits are
split one per token and " 936" would start with a bare-space token shared by every number.
A probe's `correct` and `wrong` are the first pre-tokens of the right and of a plausible wrong
answer as they stand in context (" Menth", "9", "):\n", "Payment"), so the first token of either
string alone is the token the model would emit at the decision point; they differ in their first
non-space character.
"""

from __future__ import annotations

import json

from . import arithmetic, coding, controls, copying, editing, instruction, tool_calling, verbatim
from .chat import CHAT_STOP, render_chat
from .common import (PROBE_VERSION, check_split, collect_probes, distinct_items, domain_rng,
                     eval_records, first_pretoken, probe_set)

__all__ = ["DOMAINS", "ALL_DOMAINS", "CHAT_STOP", "render_chat", "build_corpus",
           "build_probe_sets", "build_verbatim_sets", "build_eval_sets", "corpus_jsonl"]

# The paper's five search domains, in its pipeline order.
DOMAINS = ("editing", "instruction", "tool_calling", "math", "coding")
# Every probed and evaluated domain.
ALL_DOMAINS = DOMAINS + ("verbatim", "controls")
# Corpus-only text (not probed, not evaluated).
CORPUS_ONLY = ("copying",)

MODULES = {"editing": editing, "instruction": instruction, "tool_calling": tool_calling,
           "math": arithmetic, "coding": coding, "verbatim": verbatim, "controls": controls}
CORPUS_MODULES = {**MODULES, "copying": copying}
# Probe categories, drawn in turn. Tool calling: 3 of 4 probes ask for a tool seen in training
# (its name must be picked among the listed ones), 1 for an unseen tool (its name can only be
# copied from the list, which the embedded model cannot do: at 1:1 the wrong share was 72.5%).
# Coding: every other probe sits on a held-out function shape (coding.HELDOUT_KINDS), because the
# shapes seen in training were all but always completed right.
_CODING = [c for pair in zip(coding.PROBE_CATEGORIES * len(coding.HELDOUT_CATEGORIES),
                             coding.HELDOUT_CATEGORIES * len(coding.PROBE_CATEGORIES)) for c in pair]
PROBE_CATEGORIES = {"editing": list(editing.OPS), "instruction": list(instruction.CATEGORIES),
                    "tool_calling": ["seen_tool", "seen_tool", "seen_tool", "unseen_tool"],
                    "math": list(arithmetic.KINDS), "coding": _CODING}
N_TARGET_PROBES = 40
# The paper's pass-1 settings per domain (§6.5), as defaults for the search.
SEARCH_CONFIG = {
    "editing": {"iterations": 1000, "lambda": 1.5, "fitness": "average", "move": "group"},
    "instruction": {"iterations": 1000, "lambda": 1.0, "fitness": "average", "move": "group"},
    "tool_calling": {"iterations": 500, "lambda": 1.0, "fitness": "average", "move": "group"},
    "math": {"iterations": 200, "lambda": 2.0, "fitness": "average", "move": "group"},
    "coding": {"iterations": 200, "lambda": 0.75, "fitness": "average", "move": "group"},
    "verbatim": {"iterations": 30000, "fitness": "focused", "epsilon": 0.5, "move": "group"},
}
VERBATIM_SUBDOMAINS = ("legal", "medical", "api", "logs", "code")  # the 5 training probes
N_VERBATIM_HELDOUT = 20  # per sub-domain


def build_corpus(seed: int, n_per_domain: int, split: str = "train", extra_texts=(),
                 n_wordnet: int = 0) -> list[dict]:
    """`n_per_domain` texts of each of ALL_DOMAINS and CORPUS_ONLY from the `split` half, plus
    `n_wordnet` WordNet texts (`wordnet_text`, needs WordNet 3.0) and `extra_texts`.

    Returns [{"domain", "text"}] in a seeded shuffled order. `extra_texts` holds strings (domain
    "extra") or {"text", "domain"?} dicts.
    """
    check_split(split)
    if n_wordnet:
        from . import wordnet_text

        rng = domain_rng(seed, "corpus", split, "wordnet")
        extra_texts = [{"domain": "wordnet", "text": wordnet_text.corpus_text(rng, split)}
                       for _ in range(n_wordnet)] + list(extra_texts)
    records = []
    for domain in ALL_DOMAINS + CORPUS_ONLY:
        rng = domain_rng(seed, "corpus", split, domain)
        records += [{"domain": domain, "text": CORPUS_MODULES[domain].corpus_text(rng, split)}
                    for _ in range(n_per_domain)]
    for extra in extra_texts:
        if isinstance(extra, str):
            records.append({"domain": "extra", "text": extra})
        else:
            records.append({"domain": extra.get("domain", "extra"), "text": extra["text"]})
    domain_rng(seed, "corpus-order", split).shuffle(records)
    return records


def corpus_jsonl(records: list[dict]) -> str:
    """The corpus file's text (rule build_corpus): one JSON object per line."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def build_probe_sets(seed: int) -> dict:
    """{domain: probe file} for DOMAINS (40 target candidates each, held-out content) and
    "controls" (30 probes under probes["control"]). Calibration on the model decides the rest."""
    sets = {}
    for domain in DOMAINS:
        rng = domain_rng(seed, "probes", domain)
        targets = collect_probes(MODULES[domain].sample, rng, domain, N_TARGET_PROBES,
                                 PROBE_CATEGORIES[domain])
        sets[domain] = probe_set(domain, seed, targets, search_config=SEARCH_CONFIG[domain])
    rng = domain_rng(seed, "probes", "controls")
    ctrl = collect_probes(controls.sample, rng, "controls", len(controls.PROBE_PLAN),
                          controls.PROBE_PLAN)
    sets["controls"] = probe_set("controls", seed, [], ctrl,
                                 note="facts asked with phrasings unseen in training")
    return sets


def build_verbatim_sets(seed: int) -> tuple[dict, dict]:
    """(training probe file, held-out file).

    Training: one extraction probe per sub-domain (correct = first word of the target sentence,
    wrong = first word of the passage, the COPY start) plus 5 general-knowledge controls.
    Held-out: 20 prompts per sub-domain on other entities, for PASS/COPY classification of
    greedy generations; render each with `render_chat(probe["system"], probe["prompt"])`.
    """
    rng = domain_rng(seed, "verbatim-probes")
    targets = []
    for sub in VERBATIM_SUBDOMAINS:
        item = verbatim.extract_item(rng, sub, "heldout", part="probe", first_allowed=False,
                                     system=verbatim.HELDOUT_SYSTEM,
                                     instruction=verbatim.EXTRACT_HELDOUT)
        targets.append({"prompt": item.prompt, "correct": first_pretoken(item.answer),
                        "wrong": first_pretoken(item.meta["passage"]), "name": f"verbatim_{sub}",
                        "category": sub, "source": "toy"})
    ctrl = collect_probes(controls.sample, domain_rng(seed, "verbatim-controls"), "knowledge",
                          5, ["capital"])
    training = probe_set("verbatim", seed, targets, ctrl, search_config=SEARCH_CONFIG["verbatim"])

    rng = domain_rng(seed, "verbatim-heldout")
    probes, seen = [], set()
    for sub in VERBATIM_SUBDOMAINS:
        count = 0
        while count < N_VERBATIM_HELDOUT:
            item = verbatim.extract_item(rng, sub, "heldout", part="eval", first_allowed=False,
                                         system=verbatim.HELDOUT_SYSTEM,
                                         instruction=verbatim.EXTRACT_HELDOUT)
            if item.meta["passage"] in seen:
                continue
            seen.add(item.meta["passage"])
            probes.append({"name": f"heldout_{sub}_{count:02d}", "domain": sub,
                           "system": item.meta["system"], "prompt": item.meta["user"],
                           "target_span": item.answer, "passage": item.meta["passage"],
                           "topic": item.meta["topic"]})
            count += 1
    heldout = {"domain": "verbatim_heldout", "version": PROBE_VERSION,
               "source": {"generator": "neagari.embedded.toydata", "seed": seed, "split": "heldout"},
               "probes": probes}
    return training, heldout


def build_eval_sets(seed: int, n: int = 200) -> dict[str, list[dict]]:
    """{domain: [{"id", "prompt", "answer", "domain", "stop", "category"}]} for ALL_DOMAINS.

    Held-out content; an item is solved when the greedy completion of `prompt`, cut at the first
    `stop` (excluded), equals `answer` exactly.
    """
    out = {}
    for domain in ALL_DOMAINS:
        rng = domain_rng(seed, "eval", domain)
        out[domain] = eval_records(distinct_items(MODULES[domain].sample, rng, "heldout", n), domain)
    return out
