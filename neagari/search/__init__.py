"""XOR search over binary weight groups (PAPER.md §2-§5): probes, calibration, fitness, proposals,
the cached evaluator, the runner and its checkpoints, patches, MLP-sign null models. Imports engine
and shared helpers."""

from __future__ import annotations

from neagari.search.probes import Probe, load_probes

CONTROL_GROUPS = ("control", "controls", "promoted_controls")


def split_probes(probe_file, control_files=(), extra_controls=()) -> tuple[list[Probe], list[Probe]]:
    """Targets and controls of a search.

    Targets: the probe file's non-control groups (``target``); controls: its ``control``,
    ``controls`` and ``promoted_controls`` groups, every probe of each control file, and any
    ``extra_controls`` (e.g. targets promoted by earlier domains).
    """
    probes = load_probes(probe_file)
    targets = [p for p in probes if p.role not in CONTROL_GROUPS]
    controls = [p for p in probes if p.role in CONTROL_GROUPS]
    for cf in control_files:
        controls += load_probes(cf)
    controls += list(extra_controls)
    return targets, controls
