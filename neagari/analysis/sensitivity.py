"""Probe-sampling sensitivity (PAPER.md §8): how much a search's results depend on which probes it
was given. One pass-1 search is rerun on bootstrap resamples of its targets and of its controls
(each set drawn with replacement to its own size, seeded), and the spread of acceptance rate,
target crossings and final fitness over the resamples is set against the seed-to-seed spread of
the null baseline's trained side (the same search on the full probe sets under other seeds).

Resampling works on probe lists (neagari.search.probes.Probe) and writes an ordinary probe file, so
the search itself is the workflow's one search entry point. Reading a run needs only its summary
and per-iteration record. Every run is read over the same first iterations (the pass-1 budget), so
that a longer null-baseline search is compared at the length of the searches it is set against.

Tables: ProbeResamples, SensitivityRuns, SensitivitySpread, SensitivityComparison
(neagari.analysis.schemas). Rates are fractions; gaps and fitness in logits.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import polars as pl

from neagari.analysis.schemas import (SENSITIVITY_METRICS, ProbeResamples, SensitivityComparison, SensitivityRuns,
                                      SensitivitySpread)
from neagari.tables import polars_schema

# Probes are neagari.search.probes.Probe objects; that package loads torch, and resampling needs only
# their fields, so it is not imported here.
Probe = Any

ROLES = ("target", "control")
# A side's SD must exceed the other's by this factor to count as a wider spread: with a handful of
# seeds a sample SD is itself uncertain by about a factor of two, so a smaller ratio is read as alike.
SPREAD_FACTOR = 2.0
INTERVAL = (2.5, 97.5)  # percentiles of the 95% percentile interval
METRIC_WORDS = {"rate": "acceptance rate", "crossings": "target crossings", "fitness": "final fitness"}


# ---------------------------------------------------------------------------- resampling


def resample_rng(seed: int, resample: int, role: str) -> np.random.Generator:
    """The generator of one set of one resample: targets and controls draw from streams of their
    own, so that a different control list leaves the target draws as they were."""
    return np.random.default_rng([int(seed), int(resample), ROLES.index(role)])


def bootstrap_indices(n: int, rng: np.random.Generator) -> list[int]:
    """``n`` indices into a list of ``n``, drawn uniformly with replacement."""
    return [int(i) for i in rng.integers(0, n, size=n)] if n else []


def copy_numbers(indices: Sequence[int]) -> list[int]:
    """For each drawn index, which copy of its probe it is (1 for the first draw, 2 for the next)."""
    seen: dict[int, int] = {}
    out = []
    for i in indices:
        seen[i] = seen.get(i, 0) + 1
        out.append(seen[i])
    return out


def copy_name(name: str, copy: int) -> str:
    """The name a drawn probe runs under: its own for the first copy, ``name~k`` for the k-th."""
    return name if copy == 1 else f"{name}~{copy}"


@dataclass(frozen=True)
class Resample:
    """One bootstrap resample of a search's probes: the drawn indices into the original target and
    control lists and the probes under their new names, in draw order."""

    index: int
    seed: int
    target_indices: tuple[int, ...]
    control_indices: tuple[int, ...]
    targets: tuple
    controls: tuple

    def rows(self) -> list[dict]:
        """This resample's rows of the ProbeResamples table."""
        out = []
        for role, indices, probes in (("target", self.target_indices, self.targets),
                                      ("control", self.control_indices, self.controls)):
            for pos, (i, c, p) in enumerate(zip(indices, copy_numbers(indices), probes)):
                out.append({"resample": self.index, "role": role, "position": pos, "source_index": i,
                            "probe": p.extra.get("resampled_from", p.name), "copy": c, "name": p.name})
        return out


def _draw(probes: Sequence[Probe], indices: Sequence[int]) -> tuple:
    return tuple(dataclasses.replace(probes[i], name=copy_name(probes[i].name, c),
                                     extra={**probes[i].extra, "resampled_from": probes[i].name})
                 for i, c in zip(indices, copy_numbers(indices)))


def resample_probes(targets: Sequence[Probe], controls: Sequence[Probe], seed: int, index: int) -> Resample:
    """Resample ``index`` of a search's targets and controls under ``seed``: each set drawn with
    replacement to its own size. Deterministic in (seed, index, the two lists)."""
    if not targets:
        raise ValueError("a resample needs at least one target probe")
    t = bootstrap_indices(len(targets), resample_rng(seed, index, "target"))
    c = bootstrap_indices(len(controls), resample_rng(seed, index, "control"))
    return Resample(index, int(seed), tuple(t), tuple(c), _draw(targets, t), _draw(controls, c))


def resample_table(resamples: Iterable[Resample]) -> pl.DataFrame:
    """The ProbeResamples table of these resamples."""
    rows = [r for s in resamples for r in s.rows()]
    return pl.DataFrame(rows, schema=polars_schema(ProbeResamples))


def probe_record(p: Probe) -> dict:
    """A probe as a record of the upstream probe-file schema (neagari.search.probes.ProbeRecord),
    its other keys (category, source, resampled_from, ...) kept."""
    rec = {**p.extra, "name": p.name, "prompt": p.prompt, "correct": p.correct, "wrong": p.wrong}
    for key, value in (("base_correct_id", p.correct_id), ("base_wrong_id", p.wrong_id), ("base_gap", p.base_gap)):
        if value is not None:
            rec[key] = value
    return rec


def probe_document(resample: Resample, domain: str) -> dict:
    """The probe file of one resample: its targets as the ``target`` group, its controls as the
    ``control`` group (which the search takes as controls whatever group they came from)."""
    groups = {"target": [probe_record(p) for p in resample.targets]}
    if resample.controls:
        groups["control"] = [probe_record(p) for p in resample.controls]
    return {"domain": domain, "version": "neagari", "resample": resample.index, "seed": resample.seed,
            "probes": groups}


# ---------------------------------------------------------------------------- reading the runs


def run_state(base_gaps: Sequence[float], n_targets: int, iterations: pl.DataFrame,
              upto: int | None = None) -> dict:
    """A search as it stood after its first ``upto`` iterations (all without), from its base gaps
    (summary.json) and per-iteration record (SearchIterations): iterations read, accepted moves,
    acceptance rate, targets, controls, targets wrong at baseline (gap <= 0), how many of those are
    right (gap > 0) at that point, and the fitness there (the base fitness where nothing was kept)."""
    df = iterations.sort("iteration")
    if upto is not None:
        df = df.filter(pl.col("iteration") < upto)
    base = np.asarray(base_gaps, dtype=np.float64)
    kept = df.filter(pl.col("accepted"))
    if kept.height:
        gaps, fitness = np.asarray(kept["gaps"][-1], dtype=np.float64), kept["fitness_after"][-1]
    else:
        gaps, fitness = base, df["fitness_before"][0] if df.height else None
    wrong = base[:n_targets] <= 0
    return {"iterations": df.height, "accepted": kept.height, "rate": kept.height / df.height if df.height else None,
            "targets": int(n_targets), "controls": len(base) - int(n_targets), "targets_wrong": int(wrong.sum()),
            "crossings": int((wrong & (gaps[:n_targets] > 0)).sum()),
            "fitness": None if fitness is None else float(fitness)}


def run_row(kind: str, run: str, summary: Mapping, iterations: pl.DataFrame, upto: int | None,
            resample: int | None = None) -> dict:
    """One row of the SensitivityRuns table: a run's identity (its search config's seed and λ, as
    its summary.json records them) and its state after ``upto`` iterations."""
    cfg = summary.get("config", {})
    return {"kind": kind, "run": run, "resample": resample, "seed": int(cfg.get("seed", 0)), "lam": cfg.get("lam"),
            **run_state(summary["base_gaps"], summary["n_targets"], iterations, upto)}


def runs_table(rows: Sequence[Mapping]) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema=polars_schema(SensitivityRuns))


# ---------------------------------------------------------------------------- spread


def spread(values: Iterable[float | None]) -> dict:
    """runs, mean, sample SD (ddof 1; None under two values), min, max and the 95% percentile
    interval (linear interpolation) of the values that are there (None and NaN left out)."""
    x = np.asarray([v for v in values if v is not None and not np.isnan(v)], dtype=np.float64)
    if not x.size:
        return {"runs": 0, "mean": None, "sd": None, "min": None, "max": None, "ci_lo": None, "ci_hi": None}
    lo, hi = np.percentile(x, INTERVAL)
    return {"runs": int(x.size), "mean": float(x.mean()), "sd": float(x.std(ddof=1)) if x.size > 1 else None,
            "min": float(x.min()), "max": float(x.max()), "ci_lo": float(lo), "ci_hi": float(hi)}


SOURCES = {"resamples": "resample", "seeds": "seed"}  # spread source -> the kind of run it reads


def spread_table(runs: pl.DataFrame) -> pl.DataFrame:
    """SensitivitySpread: each metric over the resamples' runs and over the seeds' runs."""
    rows = [{"metric": m, "source": source, **spread(runs.filter(pl.col("kind") == kind)[m].to_list())}
            for m in SENSITIVITY_METRICS for source, kind in SOURCES.items()]
    return pl.DataFrame(rows, schema=polars_schema(SensitivitySpread))


def compare_spread(resample_sd: float | None, seed_sd: float | None, factor: float = SPREAD_FACTOR
                   ) -> tuple[float | None, str]:
    """(SD ratio resamples/seeds, verdict): ``more`` when the resamples' SD exceeds the seeds' by
    more than ``factor``, ``less`` when it falls short by as much, else ``comparable``;
    ``undetermined`` without an SD on either side. A zero seed SD gives no ratio: ``comparable``
    against a zero resample SD, else ``more``."""
    if resample_sd is None or seed_sd is None:
        return None, "undetermined"
    if seed_sd == 0:
        return None, "comparable" if resample_sd == 0 else "more"
    ratio = resample_sd / seed_sd
    return ratio, "more" if ratio > factor else "less" if ratio < 1 / factor else "comparable"


def comparison_table(spreads: pl.DataFrame, factor: float = SPREAD_FACTOR) -> pl.DataFrame:
    """SensitivityComparison: per metric, the resamples' SD against the seeds' (spread_table)."""
    rows = []
    for m in SENSITIVITY_METRICS:
        side = {r["source"]: r for r in spreads.filter(pl.col("metric") == m).to_dicts()}
        res, seeds = side["resamples"], side["seeds"]
        ratio, verdict = compare_spread(res["sd"], seeds["sd"], factor)
        rows.append({"metric": m, "resamples": res["runs"], "seeds": seeds["runs"], "resample_sd": res["sd"],
                     "seed_sd": seeds["sd"], "sd_ratio": ratio, "spread": verdict})
    return pl.DataFrame(rows, schema=polars_schema(SensitivityComparison))


def overall_spread(verdicts: Iterable[str]) -> str:
    """One word for the metrics' verdicts together: ``more`` (or ``less``) when some metric spreads
    more (less) over the resamples and none the other way, ``comparable`` when all are alike,
    ``mixed`` when they disagree, ``undetermined`` when none could be decided."""
    known = [v for v in verdicts if v != "undetermined"]
    if not known:
        return "undetermined"
    if "more" in known and "less" in known:
        return "mixed"
    return "more" if "more" in known else "less" if "less" in known else "comparable"
