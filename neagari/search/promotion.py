"""Controls carried along the domain pipeline (PAPER.md §5): which targets of a finished domain
become controls of the later ones, and how many are kept.

A pipeline search scores its targets against three kinds of control: the base controls (the
config's ``search.controls`` files, in every search), the controls carried from earlier domains,
and the searched file's own control groups (``promoted_controls``). Upstream's ``run_pipeline``
(src/xor_search.py), which made the paper's runs, does::

    controls = all_controls + promoted[:20]          # promoted: the file's own controls
    ... search ...
    all_controls += [t for t in targets if gap(t) > 0]
    if len(all_controls) > max_controls:              # 30
        all_controls = base + all_controls[len(base):][-(max_controls - len(base)):]

with ``all_controls`` starting as the base controls in each call, and pass 2 a call of its own.
With 23 base controls that gives the paper's 33/35/40/40/40 controls of pass 1 (23 + 10 own for
editing; then 23 + 7 carried + the file's 5 or 10). Two rules are offered:

- ``upstream`` (the paper's): every target with gap > 0 on the patched model is promoted, the cap
  counts base and carried controls together, the file's own controls come on top (at most
  :data:`OWN_CONTROLS_CAP`).
- ``crossed``: only targets the domain carried across zero (baseline <= 0 < final) are promoted,
  and the cap counts the carried controls alone. Targets correct from the start then never guard
  later domains; the paper saw one crossing in 2,252 flips, so this carries almost nothing.
"""

from __future__ import annotations

from typing import Sequence

from neagari.search.probes import Probe

PROMOTIONS = ("upstream", "crossed")
OWN_CONTROLS_CAP = 20  # upstream run_pipeline: ``promoted[:20]`` of the searched file


def promoted_targets(targets: Sequence[Probe], base_gaps: Sequence[float], final_gaps: Sequence[float],
                     promotion: str) -> list[Probe]:
    """The targets of a finished search that become controls, in target order."""
    if promotion == "upstream":
        return [p for p, f in zip(targets, final_gaps) if f > 0]
    if promotion == "crossed":
        return [p for p, b, f in zip(targets, base_gaps, final_gaps) if b <= 0 < f]
    raise ValueError(f"unknown promotion rule {promotion!r}; expected one of {', '.join(PROMOTIONS)}")


def carry_controls(carried: Sequence[Probe], promoted: Sequence[Probe], n_base: int, max_controls: int,
                   promotion: str) -> list[Probe]:
    """The controls handed to the next domain: ``carried`` then ``promoted``, the newest kept.

    ``upstream``: base and carried controls together at most ``max_controls`` (none carried when the
    ``n_base`` base controls fill the cap: upstream's slice ``[-(cap - base):]`` would keep them all at
    exactly the cap, an accident of Python slicing, not a rule). ``crossed``: at most ``max_controls``
    carried. Duplicates are kept, as upstream keeps them (a probe promoted twice weighs twice).
    """
    if promotion not in PROMOTIONS:
        raise ValueError(f"unknown promotion rule {promotion!r}; expected one of {', '.join(PROMOTIONS)}")
    pool = list(carried) + list(promoted)
    room = max(0, max_controls - n_base) if promotion == "upstream" else max_controls
    return pool[max(0, len(pool) - room):] if room else []

