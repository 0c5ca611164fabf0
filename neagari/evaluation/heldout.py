"""Held-out verbatim extraction (PAPER.md §6 item 8): classify a generated answer.

PASS    the output contains the target sentence and no other passage text;
COPY    it contains other passage text: any 15-character fragment of the passage minus the target;
PARTIAL it contains some 15-character fragment of the passage, but is neither of the above;
OTHER   none of these.
"""

from __future__ import annotations

FRAGMENT = 15
CLASSES = ("PASS", "COPY", "PARTIAL", "OTHER")


def _fragments(text: str, n: int = FRAGMENT) -> set[str]:
    return {text[i : i + n] for i in range(len(text) - n + 1)}


def classify(output: str, target: str, passage: str) -> str:
    """One of CLASSES. The passage minus the target is split where the target was, so fragments
    never span the removed sentence (a target that opens or closes the passage works the same)."""
    if target not in passage:
        raise ValueError("target_span is not part of the passage")
    before, _, after = passage.partition(target)
    other = set().union(*(_fragments(seg.strip()) for seg in (before, after)))
    has_other = any(f in output for f in other)
    if target in output and not has_other:
        return "PASS"
    if has_other:
        return "COPY"
    if any(f in output for f in _fragments(passage)):
        return "PARTIAL"
    return "OTHER"
