"""XOR search over binary weight groups (PAPER.md §2-§5): probes, calibration, fitness, proposals,
the cached evaluator, the runner and its checkpoints, patches, MLP-randomized null models (signs of Q1_0, codes of Q2_0). Imports engine
and shared helpers."""

from __future__ import annotations

from neagari.search.probes import Probe, load_probes

CONTROL_GROUPS = ("control", "controls", "promoted_controls")


def split_probes(probe_file, control_files=(), extra_controls=(), own_cap: int | None = None
                 ) -> tuple[list[Probe], list[Probe]]:
    """Targets and controls of a search.

    Targets: the probe file's non-control groups (``target``). Controls, in upstream's order: every
    probe of each control file, the ``extra_controls`` (e.g. targets promoted by earlier domains),
    then the file's own ``control``, ``controls`` and ``promoted_controls`` groups, the first
    ``own_cap`` of them (None: all; the pipeline passes upstream's 20).
    """
    probes = load_probes(probe_file)
    targets = [p for p in probes if p.role not in CONTROL_GROUPS]
    own = [p for p in probes if p.role in CONTROL_GROUPS]
    controls = []
    for cf in control_files:
        controls += load_probes(cf)
    controls += list(extra_controls)
    controls += own if own_cap is None else own[:own_cap]
    return targets, controls
