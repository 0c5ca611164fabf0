"""Coding: Python functions with completion points (HumanEval/MBPP analogue).

Completion points range from syntax a small model gets right early (the colon after a signature,
closing parentheses) to choices that need the function's name or body (the operator implied by
`add_`/`scale_`, the comparison of `larger_`, the string method of `shout_`, which variable to
return). The longer functions bind a choice to a name among distractors: which of two list
parameters a loop walks (`total_prices(prices, weights)`), which bound a clamp tests and returns,
which of two accumulators a function returns (`count_` / `total_` / `mean_`). Held-out functions
are combinations of name, noun and body that training never shows.

Probes test the semantic points only (``PROBE_CATEGORIES``): once the embedded model copies from
its context it completed the syntax points and the short functions almost always (5% wrong at 21 M
training tokens), which leaves the search nothing to fix. Syntax points stay in the corpus and in
the exact-match evaluation.

Held-out shapes (``HELDOUT_KINDS``), like tool calling's unseen tools, are functions of a form
training never shows: the name-bound choice of `select_loop` or `clamp` with one more distractor
in reach. `select_checked` checks the two lists' lengths before the loop, naming the other list
last; `select_of_three` takes a third list; `clamp_reversed` takes its bounds high first and tests
the upper one first; `three_accumulators` keeps a running maximum beside the count and the total. They appear in held-out probes and evaluation items only, never in the corpus,
so the shipped models' training data does not depend on them. Every other coding probe sits on
one. On the shipped embedded-qat the seed-0 probe set is wrong on 9 of 40: `three_accumulators`
5 of 5 (it returns the variable it updated last), `select_checked` 3 of 5 (it walks the list it
read last), `clamp_reversed` 1 of 5, `select_of_three` 0 of 5, the shapes seen in training 0 of 20.
"""

from __future__ import annotations

import keyword
import random

from .common import PLAIN_STOP, Item, belongs, check_split
from .pools import pool

OPERATORS = {"+": ("add", "sum", "combine"), "-": ("subtract", "diff", "deduct"),
             "*": ("multiply", "scale", "times")}
COMPARISONS = {">": ("larger", "bigger", "higher"), "<": ("smaller", "lesser", "lower")}
METHODS = {"upper": ("shout", "loud", "caps"), "lower": ("quiet", "soft", "small"),
           "strip": ("trim", "clean", "tidy")}
FACTORS = {"2": "double", "3": "triple", "4": "quadruple"}
ACCUMULATORS = ("total", "result", "acc", "running")
LOOP_VARS = ("item", "value", "entry", "num")
BOUNDS = (("low", "high"), ("lo", "hi"), ("floor", "ceiling"), ("least", "most"))
COUNTERS = ("count", "n", "seen")
KINDS = ("binop", "compare", "accumulate", "method", "parens", "comprehension", "select_loop",
         "clamp", "two_accumulators")
# Shapes of the held-out split only (see the module text).
HELDOUT_KINDS = ("select_checked", "select_of_three", "clamp_reversed", "three_accumulators")
# Every point category ("method" points are evaluated but not probed, see `snippet`).
CATEGORIES = ("paren", "operator", "comparison", "colon", "iterable", "return_value", "keyword",
              "constant", "select_iterable", "bound", "select_return")
# The probed ones: choices that need the function's name or body, not syntax.
PROBE_CATEGORIES = ("operator", "comparison", "iterable", "return_value", "constant",
                    "select_iterable", "bound", "select_return")
# The held-out shapes' choices (one category per kind of HELDOUT_KINDS).
HELDOUT_CATEGORIES = ("checked_iterable", "third_iterable", "reversed_bound", "third_return")


def _first_other(options, avoid: str) -> str:
    return next(o for o in options if o.lstrip()[0] != avoid.lstrip()[0])


def snippet(rng: random.Random, split: str, kind: str):
    """(lines, points) of a function that belongs to `split`; a point is (category, line index,
    column, wrong rest of line)."""
    check_split(split)
    if kind in HELDOUT_KINDS and split != "heldout":
        raise ValueError(f"snippet kind {kind!r} is a held-out shape: training never shows it")
    while True:
        lines, points = _any_snippet(rng, split, kind)
        if belongs("\n".join(lines), split):
            return lines, points


def _any_snippet(rng: random.Random, split: str, kind: str):
    """One function of `kind`, in either split.

    Every point sits on a Qwen2 pre-tokenizer boundary (after a letter run or a space before a
    digit), never inside a punctuation run such as "):" or ".upper".
    """
    noun = rng.choice(pool("code_noun", split))
    if kind == "binop":
        op = rng.choice(sorted(OPERATORS))
        name = f"{rng.choice(OPERATORS[op])}_{noun}"
        lines = [f"def {name}(a, b):", f"    return a {op} b"]
        other = _first_other([o for o in sorted(OPERATORS) if o != op], op)
        return lines, [("paren", 0, len(f"def {name}(a, b"), ", c):"),
                       ("operator", 1, len("    return a"), f" {other} b")]
    if kind == "compare":
        op = rng.choice(sorted(COMPARISONS))
        name = f"{rng.choice(COMPARISONS[op])}_{noun}"
        other = "<" if op == ">" else ">"
        lines = [f"def {name}(x, y):", f"    if x {op} y:", "        return x", "    return y"]
        return lines, [("paren", 0, len(f"def {name}(x, y"), ", z):"),
                       ("comparison", 1, len("    if x"), f" {other} y:"),
                       ("colon", 1, len(f"    if x {op} y"), " and x:")]
    if kind == "accumulate":
        acc = rng.choice(ACCUMULATORS)
        var = rng.choice([v for v in LOOP_VARS if v[0] != acc[0]])
        name = f"{rng.choice(('total', 'sum_up', 'tally'))}_{noun}"
        lines = [f"def {name}({noun}):", f"    {acc} = 0", f"    for {var} in {noun}:",
                 f"        {acc} += {var}", f"    return {acc}"]
        wrong_iter = _first_other([f" {acc}:", f" {var}s:", " range(len("], noun)
        return lines, [("iterable", 2, len(f"    for {var} in"), wrong_iter),
                       ("return_value", 4, len("    return"), f" {var}"),
                       ("colon", 2, len(f"    for {var} in {noun}"), "[0]:")]
    if kind == "method":
        method = rng.choice(sorted(METHODS))
        name = f"{rng.choice(METHODS[method])}_{noun}"
        lines = [f"def {name}(text):", f"    return text.{method}()"]
        other = next(m for m in sorted(METHODS) if m != method)
        # ".upper" is one pre-token: the point precedes the dot, so it suits exact-match
        # evaluation but not a first-character probe (every method starts with ".").
        return lines, [("method", 1, len("    return text"), f".{other}()"),
                       ("paren", 0, len(f"def {name}(text"), ", n):")]
    if kind == "parens":
        fn = rng.choice(("max", "min"))
        name = f"{'longest' if fn == 'max' else 'shortest'}_{noun}"
        lines = [f"def {name}(a, b):", f"    return {fn}(len(a), len(b))"]
        return lines, [("paren", 1, len(lines[1]) - 2, ", ")]
    if kind == "comprehension":
        factor = rng.choice(sorted(FACTORS))
        name = f"{FACTORS[factor]}_{noun}"
        lines = [f"def {name}({noun}):", f"    return [v * {factor} for v in {noun}]"]
        other = next(f for f in sorted(FACTORS) if f != factor)
        return lines, [("constant", 1, len("    return [v * "), f"{other} for v in {noun}]"),
                       ("keyword", 1, len(f"    return [v * {factor}"), " + 1]"),
                       ("keyword", 1, len(f"    return [v * {factor} for v"), " = 0"),
                       ("paren", 0, len(f"def {name}({noun}"), ", n):")]
    if kind == "select_loop":
        # Two list parameters; the name says which one to walk. The loop variable is neutral
        # (`x`), so only the name decides, not a singular/plural match.
        walked, other = rng.sample(pool("code_noun", split), 2)
        verb = rng.choice(("total", "sum_up", "tally"))
        params = [walked, other]
        rng.shuffle(params)
        acc = rng.choice(ACCUMULATORS)
        lines = [f"def {verb}_{walked}({params[0]}, {params[1]}):", f"    {acc} = 0",
                 f"    for x in {walked}:", f"        {acc} += x", f"    return {acc}"]
        if walked[0] == other[0]:
            return lines, [("colon", 2, len(f"    for x in {walked}"), "[0]:")]
        return lines, [("select_iterable", 2, len("    for x in"), f" {other}:"),
                       ("return_value", 4, len("    return"), " x")]
    if kind == "clamp":
        lo, hi = rng.choice(BOUNDS)
        var = noun[:-1] if noun.endswith("s") and not keyword.iskeyword(noun[:-1]) else noun
        name = f"clamp_{var}"
        lines = [f"def {name}({var}, {lo}, {hi}):", f"    if {var} < {lo}:", f"        return {lo}",
                 f"    if {var} > {hi}:", f"        return {hi}", f"    return {var}"]
        return lines, [("bound", 1, len(f"    if {var} <"), f" {hi}:"),
                       ("bound", 2, len("        return"), f" {hi}"),
                       ("bound", 3, len(f"    if {var} >"), f" {lo}:"),
                       ("bound", 4, len("        return"), f" {lo}"),
                       ("comparison", 3, len(f"    if {var}"), f" < {hi}:")]
    if kind == "two_accumulators":
        # A count and a total over one list; the name says which one (or their ratio) to return.
        counter, acc = rng.choice(COUNTERS), rng.choice(("total", "acc", "running"))
        what = rng.choice(("count", "total", "mean"))
        ret = {"count": counter, "total": acc, "mean": f"{acc} / {counter}"}[what]
        wrong = {"count": f" {acc}", "total": f" {counter}", "mean": f" {counter} / {acc}"}[what]
        lines = [f"def {what}_{noun}({noun}):", f"    {counter} = 0", f"    {acc} = 0",
                 f"    for x in {noun}:", f"        {counter} += 1", f"        {acc} += x",
                 f"    return {ret}"]
        return lines, [("select_return", 6, len("    return"), wrong)]
    if kind == "select_checked":
        # select_loop with a length check naming the other list last, just before the loop
        walked, other = rng.sample(pool("code_noun", split), 2)
        params = [walked, other]
        rng.shuffle(params)
        acc = rng.choice(ACCUMULATORS)
        lines = [f"def total_{walked}({params[0]}, {params[1]}):",
                 f"    assert len({walked}) == len({other})", f"    {acc} = 0", f"    for x in {walked}:",
                 f"        {acc} += x", f"    return {acc}"]
        return lines, [("checked_iterable", 3, len("    for x in"), f" {other}:")]
    if kind == "select_of_three":
        # select_loop with a third list parameter; the wrong answer is the last other parameter
        walked, *others = rng.sample(pool("code_noun", split), 3)
        params = [walked, *others]
        rng.shuffle(params)
        wrong = next(p for p in reversed(params) if p != walked)
        acc = rng.choice(ACCUMULATORS)
        lines = [f"def total_{walked}({', '.join(params)}):", f"    {acc} = 0", f"    for x in {walked}:",
                 f"        {acc} += x", f"    return {acc}"]
        return lines, [("third_iterable", 2, len("    for x in"), f" {wrong}:")]
    if kind == "clamp_reversed":
        # clamp with the bounds given high first and the upper one tested first
        lo, hi = rng.choice(BOUNDS)
        var = noun[:-1] if noun.endswith("s") and not keyword.iskeyword(noun[:-1]) else noun
        lines = [f"def clamp_{var}({var}, {hi}, {lo}):", f"    if {var} > {hi}:", f"        return {hi}",
                 f"    if {var} < {lo}:", f"        return {lo}", f"    return {var}"]
        return lines, [("reversed_bound", 1, len(f"    if {var} >"), f" {lo}:"),
                       ("reversed_bound", 3, len(f"    if {var} <"), f" {hi}:")]
    if kind == "three_accumulators":
        # two_accumulators with a running maximum updated last; the wrong answer returns it
        counter, acc = rng.choice(COUNTERS), rng.choice(("total", "acc", "running"))
        what = rng.choice(("count", "total", "mean"))
        ret = {"count": counter, "total": acc, "mean": f"{acc} / {counter}"}[what]
        lines = [f"def {what}_{noun}({noun}):", f"    {counter} = 0", f"    {acc} = 0", "    peak = 0",
                 f"    for x in {noun}:", f"        {counter} += 1", f"        {acc} += x",
                 "        peak = max(peak, x)", f"    return {ret}"]
        return lines, [("third_return", 8, len("    return"), " peak")]
    raise ValueError(f"unknown snippet kind {kind!r}")


def point_item(lines: list[str], point) -> Item:
    category, li, col, wrong = point
    prompt = "".join(line + "\n" for line in lines[:li]) + lines[li][:col]
    return Item(prompt=prompt, answer=lines[li][col:], wrong=wrong, category=category,
                stop=PLAIN_STOP, meta={"code": "\n".join(lines) + "\n"})


def sample(rng: random.Random, split: str, category: str | None = None) -> Item | None:
    """A completion point of one function (of the given category when one is asked for); held-out
    items also come from the held-out shapes."""
    kinds = list(KINDS) + (list(HELDOUT_KINDS) if split == "heldout" else [])
    rng.shuffle(kinds)
    for kind in kinds:
        lines, points = snippet(rng, split, kind)
        fits = [p for p in points if category in (None, p[0])]
        if fits:
            return point_item(lines, rng.choice(fits))
    return None


def corpus_text(rng: random.Random, split: str) -> str:
    blocks = [snippet(rng, split, rng.choice(KINDS))[0] for _ in range(rng.randint(2, 3))]
    return "\n".join("".join(line + "\n" for line in b) for b in blocks)


def heldout_entities() -> set[str]:
    return set()  # held-out functions are new combinations of shared nouns and bodies
