"""Held-out verbatim extraction (PAPER.md §6 item 8): classify a generated answer.

PASS    the output contains the target sentence and no other passage text;
COPY    it contains other passage text: any 15-character fragment of the passage minus the target;
PARTIAL it contains some 15-character fragment of the passage, but is neither of the above;
OTHER   none of these.

The rule is upstream's (``classify`` in src/eval_heldout_verbatim.py), so that outcome counts
compare with the paper's cross-tab:

- the output and the passage are stripped of surrounding whitespace; whitespace a decoder puts
  before the answer is not passage text;
- "the passage minus the target" is the passage with every occurrence of the target replaced by
  nothing, then stripped. It stays one string: a fragment may run across the place the target
  was, and the whitespace between the target and the text beside it (the indentation of the next
  line of code, the space after a sentence) belongs to the other text;
- fragments are every 15-character substring, one per offset; a string under 15 characters has
  none;
- the tests run in the order PASS, COPY, PARTIAL, OTHER: target present and no other passage text,
  then any other passage text (with or without the target), then any passage fragment at all.
"""

from __future__ import annotations

FRAGMENT = 15
CLASSES = ("PASS", "COPY", "PARTIAL", "OTHER")


def _fragments(text: str, n: int = FRAGMENT) -> set[str]:
    """Every ``n``-character substring of ``text`` (empty when it is shorter)."""
    return {text[i : i + n] for i in range(len(text) - n + 1)}


def _contains_any(text: str, fragments: set[str]) -> bool:
    return any(f in text for f in fragments)


def classify(output: str, target: str, passage: str) -> str:
    """One of CLASSES for a generated ``output`` asked to extract ``target`` from ``passage``."""
    if target not in passage:
        raise ValueError("target_span is not part of the passage")
    out = output.strip()
    passage = passage.strip()
    rest = passage.replace(target, "").strip()
    has_rest = _contains_any(out, _fragments(rest))
    if target in out and not has_rest:
        return "PASS"
    if has_rest:
        return "COPY"
    if _contains_any(out, _fragments(passage)):
        return "PARTIAL"
    return "OTHER"
