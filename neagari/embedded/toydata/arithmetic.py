"""Math: multi-digit sums and differences, small products, derivatives of polynomials.

Plain-text worksheet lines `347 + 589 = 936`, `7 * 8 = 56`, `d/dx 3x^2 + 5x = 6x + 5`; prompts end
with "= " and answers start with a digit, because Qwen2 pre-tokenization splits every digit off
(" 936" would begin with a bare-space token shared by every numeric answer). Every
problem belongs to one half for good (by a hash of its text), so held-out problems never occur in
training; sums with carries and unseen products are what a small model gets wrong.
"""

from __future__ import annotations

import random

from .common import PLAIN_STOP, Item, belongs, check_split

KINDS = ("add", "sub", "mul", "deriv")


def poly_text(terms: list[tuple[int, int]]) -> str:
    """Render [(coefficient, exponent), ...] (descending exponents, non-zero coefficients)."""
    out = []
    for i, (c, e) in enumerate(terms):
        mag = abs(c)
        body = ("" if mag == 1 and e > 0 else str(mag)) + ("x" if e >= 1 else "") \
            + (f"^{e}" if e >= 2 else "")
        if i == 0:
            out.append(("-" if c < 0 else "") + body)
        else:
            out.append(("- " if c < 0 else "+ ") + body)
    return " ".join(out) if out else "0"


def derivative(terms: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return [(c * e, e - 1) for c, e in terms if e >= 1]


def _problem(rng: random.Random, kind: str):
    """(prompt, answer) without the split check."""
    if kind == "add":
        a, b = rng.randint(10, 999), rng.randint(10, 999)
        return f"{a} + {b} = ", f"{a + b}"
    if kind == "sub":
        a = rng.randint(100, 999)
        b = rng.randint(10, a - 1)
        return f"{a} - {b} = ", f"{a - b}"
    if kind == "mul":
        a, b = rng.randint(2, 12), rng.randint(2, 19)
        return f"{a} * {b} = ", f"{a * b}"
    if kind == "deriv":
        top = rng.choice((2, 3, 3))
        terms = [(rng.randint(1, 9), top)]
        for e in range(top - 1, -1, -1):
            if rng.random() < (0.7 if e else 0.5):
                terms.append((rng.choice((1, -1)) * rng.randint(1, 9), e))
        return f"d/dx {poly_text(terms)} = ", poly_text(derivative(terms))
    raise ValueError(f"unknown math kind {kind!r}")


def _wrong(prompt: str, answer: str, kind: str) -> str:
    if kind == "deriv":
        c, e = _leading_term(prompt)
        # Copies the coefficient instead of multiplying; written "1x" too, since an answer that
        # starts with a letter would merge with the prompt's final space into one pre-token.
        return f"{c}x" + (f"^{e - 1}" if e > 2 else "")
    d = int(answer[0])
    return f"{d - 1 if d > 1 else d + 1}{answer[1:]}"  # a dropped carry in the leading digit


def _leading_term(prompt: str) -> tuple[int, int]:
    head = prompt.split()[1]  # e.g. "3x^2" or "x^3"
    coef, _, exp = head.partition("x")
    return int(coef or 1), int(exp.lstrip("^") or 1)


def problem_item(rng: random.Random, split: str, kind: str) -> Item:
    check_split(split)
    while True:
        prompt, answer = _problem(rng, kind)
        if belongs(prompt, split):
            return Item(prompt=prompt, answer=answer, wrong=_wrong(prompt, answer, kind),
                        category=kind, stop=PLAIN_STOP)


def sample(rng: random.Random, split: str, category: str | None = None) -> Item:
    return problem_item(rng, split, category or rng.choice(KINDS))


def corpus_text(rng: random.Random, split: str) -> str:
    lines = [problem_item(rng, split, rng.choice(KINDS)) for _ in range(rng.randint(4, 8))]
    return "".join(it.prompt + it.answer + "\n" for it in lines)


def heldout_entities() -> set[str]:
    return set()  # held-out problems are whole lines; tests check those instead of words
