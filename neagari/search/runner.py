"""The search loop (PAPER.md §5): propose, evaluate all probes, keep if the fitness improves.

Deterministic (proposal t depends only on (seed, t) and the accepted state; accepted moves are
replayed through the same arithmetic on resume), resumable (checkpoints every N iterations and
on SIGTERM; a SIGKILL loses at most N iterations, which are then redone identically), and
optionally speculative (K proposals evaluated in one batch; the first that improves is taken,
exactly as the sequential search would have, and the rest are drawn again after it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import polars as pl
from tqdm import tqdm

from neagari.search.checkpoint import CheckpointStore, Resume
from neagari.search.patch import Move, Patch, sha256_after_moves, write_patch
from neagari.search.probes import Probe, encode_probes
from neagari.search.schemas import SearchIterations
from neagari.tables import polars_schema, write_table
from neagari.search.evaluator import GapEvaluator
from neagari.search.fitness import Fitness
from neagari.search.proposal import ProposalConfig, Proposer

log = logging.getLogger(__name__)
RECHECK_MARGIN = 1e-4  # verdicts this close to a threshold are re-decided on a single evaluation


@dataclass(frozen=True)
class SearchConfig:
    iterations: int
    proposal: ProposalConfig
    fitness: str = "average"
    lam: float = 1.0
    epsilon: float = 0.5
    slack_ratio: float = 0.5
    barrier_mu: float = 0.1
    focus_order: str = "fixed"  # focused: "fixed" at baseline (the paper's) or "dynamic"
    # focused: stop once every target has crossed; otherwise run out the budget refusing every
    # proposal, as the paper's runs did, so the acceptance rate is over the whole budget
    stop_when_done: bool = False
    seed: int = 0
    window: int = 200  # auto-terminate when the trailing window accepts less than min_rate
    min_rate: float = 0.01
    speculate: int = 1
    checkpoint_every: int = 50
    accept_all: bool = False  # random-flip null: every proposal is kept, fitness ignored

    def as_dict(self) -> dict:
        d = asdict(self)
        d["proposal"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.proposal.as_dict().items()}
        return d

    def identity(self) -> dict:
        """What must match for a checkpoint to be resumed (speculation and checkpoint cadence
        do not change the result)."""
        d = self.as_dict()
        d.pop("speculate")
        d.pop("checkpoint_every")
        return d


def search_defaults() -> dict[str, Any]:
    """Every search setting that has a default, by field name (SearchConfig's and ProposalConfig's
    fields together): the one place those defaults are written."""
    out = {}
    for cls in (ProposalConfig, SearchConfig):
        for f in fields(cls):
            if f.default is not MISSING:
                out[f.name] = f.default
            elif f.default_factory is not MISSING:
                out[f.name] = f.default_factory()
    return out


def search_config(settings: Mapping[str, Any]) -> SearchConfig:
    """The SearchConfig (with its ProposalConfig) of a flat mapping of field names, as the search
    rule's params and the command line's arguments give them; absent or None values take the
    dataclasses' defaults, other keys are ignored."""

    def given(cls) -> dict[str, Any]:
        names = [f.name for f in fields(cls) if f.name != "proposal"]
        return {k: settings[k] for k in names if settings.get(k) is not None}

    proposal = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in given(ProposalConfig).items()}
    return SearchConfig(proposal=ProposalConfig(**proposal), **given(SearchConfig))


@dataclass
class SearchResult:
    moves: list[Move]
    iterations_run: int
    accepted: int
    stop_reason: str
    elapsed_s: float
    base_gaps: list[float]
    final_gaps: list[float]
    extra: dict = field(default_factory=dict)


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


class Search:
    def __init__(self, engine, model_path: str | os.PathLike, targets: Sequence[Probe], controls: Sequence[Probe],
                 cfg: SearchConfig, out_dir: str | os.PathLike, label: str = "search"):
        if not targets:
            raise ValueError("a search needs at least one target probe")
        self.engine, self.cfg, self.label = engine, cfg, label
        self.model_path = Path(model_path)
        self.out = Path(out_dir)
        self.probes = list(targets) + list(controls)
        self.n_t = len(targets)
        enc = encode_probes(engine, self.probes)  # model-dependent probe checks, before any work
        self.evaluator = GapEvaluator(engine, [e[0] for e in enc], [e[1] for e in enc], [e[2] for e in enc],
                                      cfg.proposal.layers)
        self.base = self.evaluator.gaps.cpu().numpy().astype(np.float64)
        self.fitness = Fitness(cfg.fitness, self.base[: self.n_t], self.base[self.n_t :], lam=cfg.lam,
                               epsilon=cfg.epsilon, slack_ratio=cfg.slack_ratio, barrier_mu=cfg.barrier_mu,
                               focus_order=cfg.focus_order)
        self.proposer = Proposer(engine, cfg.proposal, cfg.seed)
        self.model_sha = engine.gguf.sha256()
        self.identity = {"config": cfg.identity(), "model_sha256": self.model_sha,
                         "probes": _digest([[p.name, p.prompt, p.correct, p.wrong, p.correct_id, p.wrong_id]
                                            for p in self.probes]), "n_targets": self.n_t}
        self.ckpt_dir = self.out / ".checkpoint"
        self.checkpoints = CheckpointStore(self.ckpt_dir, self.identity, label)
        self._stop = False

    # ------------------------------------------------------------------ checkpoints
    def _load_checkpoint(self) -> Resume | None:
        """The verified checkpoint (CheckpointError, one line, when it cannot be trusted)."""
        return self.checkpoints.load(self.cfg.iterations, self.proposer.n_groups)

    def _save_checkpoint(self, t: int, accepted: list[Move], pending: list[dict], parts: list[str]) -> None:
        self.checkpoints.save(t, accepted, pending, parts)

    def _on_sigterm(self, *_):
        self._stop = True  # finish the current iteration, checkpoint, exit

    # ------------------------------------------------------------------ loop
    def _record(self, t: int, m: Move, accepted: bool, f_before: float, f_after: float, gaps: np.ndarray,
                focus: int | None) -> dict:
        return {"iteration": t, "layer": m.layer, "proj": m.proj, "group": m.group, "move_type": m.type,
                "bit": m.bit, "accepted": accepted, "fitness_before": f_before, "fitness_after": f_after,
                "focus": focus, "gaps": gaps.astype(np.float64).tolist()}

    def run(self, progress: bool = True) -> SearchResult:
        cfg = self.cfg
        t0 = time.time()
        ck = self._load_checkpoint()
        accepted: list[Move] = []
        parts: list[str] = []
        t = 0
        if ck is not None:  # replay the accepted moves through the same arithmetic
            for m in ck.moves:
                cur_t = self.evaluator.gaps.cpu().numpy()[: self.n_t].astype(np.float64)
                new = self.evaluator.commit(m).cpu().numpy().astype(np.float64)
                self.proposer.accepted(m)
                self.fitness.accepted(cur_t, new[: self.n_t])
                accepted.append(m)
            t, parts = ck.next_iteration, list(ck.parts)  # parts written after it were discarded
            log.info("%s: resumed at iteration %d with %d accepted moves", self.label, t, len(accepted))
        history = self._accept_history(parts)
        pending: list[dict] = []
        cur = self.evaluator.gaps.cpu().numpy().astype(np.float64)
        stop_reason = "iterations"
        old_handler = signal.signal(signal.SIGTERM, self._on_sigterm) if _main_thread() else None
        bar = tqdm(total=cfg.iterations, initial=t, desc=self.label, disable=not progress, mininterval=2)
        next_ckpt = (t // cfg.checkpoint_every + 1) * cfg.checkpoint_every
        try:
            while t < cfg.iterations:
                if cfg.stop_when_done and self.fitness.done(cur[: self.n_t]):
                    stop_reason = "all targets crossed"
                    break
                if self._window_exhausted(history, cur):
                    stop_reason = f"acceptance below {cfg.min_rate:.0%} over {cfg.window} iterations"
                    break
                k_max = min(cfg.speculate, cfg.iterations - t)
                moves = [self.proposer.propose(t + k) for k in range(k_max)]
                cur, n_done = self._step(t, moves, cur, accepted, pending, history)
                t += n_done
                bar.update(n_done)
                if t >= next_ckpt or self._stop:
                    self._save_checkpoint(t, accepted, pending, parts)
                    next_ckpt = (t // cfg.checkpoint_every + 1) * cfg.checkpoint_every
                    bar.set_postfix(acc=f"{sum(history) / max(1, len(history)):.1%}",
                                    fit=f"{self.fitness.value(cur[:self.n_t], cur[self.n_t:]):+.4g}")
                    log.info("%s: iteration %d/%d, accepted %d (%.1f%%), fitness %+.5g", self.label, t,
                             cfg.iterations, len(accepted), 100 * sum(history) / max(1, len(history)),
                             self.fitness.value(cur[: self.n_t], cur[self.n_t :]))
                if self._stop:
                    raise SystemExit(f"{self.label}: stopped by SIGTERM at iteration {t}; rerun to resume")
        finally:
            bar.close()
            if old_handler is not None:
                signal.signal(signal.SIGTERM, old_handler)
        self._save_checkpoint(t, accepted, pending, parts)
        return SearchResult(accepted, t, len(accepted), stop_reason, time.time() - t0,
                            self.base.tolist(), cur.tolist(), {"parts": parts})

    def _window_exhausted(self, history: list[bool], cur: np.ndarray) -> bool:
        """Auto-termination: the trailing window accepted less than min_rate of its proposals. Not
        once every focused target has crossed without stop_when_done: every proposal is refused
        then, and stopping a window later would be stop_when_done by another name."""
        if self.fitness.done(cur[: self.n_t]):
            return False
        w = self.cfg.window
        return len(history) >= w and sum(history[-w:]) < self.cfg.min_rate * w

    def _accept_history(self, parts: list[str]) -> list[bool]:
        if not parts:
            return []
        df = pl.concat([pl.read_parquet(self.ckpt_dir / p, columns=["iteration", "accepted"]) for p in parts])
        return df.sort("iteration")["accepted"].to_list()

    def _step(self, t, moves, cur, accepted, pending, history):
        """Evaluate proposals t, t+1, ... against the current state; stop at the first accepted."""
        fit, n_t = self.fitness, self.n_t
        f_cur = fit.value(cur[:n_t], cur[n_t:])
        focus = fit.focus(cur[:n_t]) if fit.focused else None
        if self.cfg.accept_all:
            new = self.evaluator.commit(moves[0]).cpu().numpy().astype(np.float64)
            self._keep(t, moves[0], cur, new, f_cur, focus, accepted, pending, history)
            return new, 1
        gaps = self.evaluator.trial(moves).cpu().numpy().astype(np.float64)
        for k, m in enumerate(moves):
            if k > 0:  # the window rule may stop the search inside a speculative batch
                if self._window_exhausted(history, cur):
                    return cur, k
            g = gaps[k]
            verdict = fit.judge(cur[:n_t], cur[n_t:], g[:n_t], g[n_t:])
            if len(moves) > 1 and verdict.margin < RECHECK_MARGIN:
                g = self.evaluator.trial([m])[0].cpu().numpy().astype(np.float64)
                verdict = fit.judge(cur[:n_t], cur[n_t:], g[:n_t], g[n_t:])
            if verdict.accept:
                new = self.evaluator.commit(m).cpu().numpy().astype(np.float64)
                self._keep(t + k, m, cur, new, f_cur, focus, accepted, pending, history)
                return new, k + 1
            pending.append(self._record(t + k, m, False, f_cur, verdict.value, g, focus))
            history.append(False)
        return cur, len(moves)

    def _keep(self, t, m, cur, new, f_cur, focus, accepted, pending, history):
        f_new = self.fitness.value(new[: self.n_t], new[self.n_t :])
        self.fitness.accepted(cur[: self.n_t], new[: self.n_t])
        self.proposer.accepted(m)  # before the next proposals are drawn: they may weigh its scale
        accepted.append(m)
        pending.append(self._record(t, m, True, f_cur, f_new, new, focus))
        history.append(True)

    # ------------------------------------------------------------------ outputs
    def finish(self, result: SearchResult, patch_path, iterations_path, summary_path, upstream_path=None,
               metadata: dict | None = None) -> None:
        """Write the patch, the per-iteration table and a summary; then drop the checkpoint."""
        parts = result.extra["parts"]
        df = (pl.concat([pl.read_parquet(self.ckpt_dir / p) for p in parts]) if parts
              else pl.DataFrame(schema=ITERATION_SCHEMA)).sort("iteration")
        write_table(df.cast(ITERATION_SCHEMA), iterations_path, SearchIterations)
        names = [p.name for p in self.probes]
        tn, cn = names[: self.n_t], names[self.n_t :]
        records, prev = [], np.array(result.base_gaps)
        acc = df.filter(pl.col("accepted"))
        for m, row in zip(result.moves, acc.iter_rows(named=True)):
            g = np.array(row["gaps"])
            records.append({**m.to_record(), "iteration": row["iteration"], "fitness_before": row["fitness_before"],
                            "fitness_after": row["fitness_after"],
                            "target_gaps_before": [[n, float(x)] for n, x in zip(tn, prev[: self.n_t])],
                            "target_gaps_after": [[n, float(x)] for n, x in zip(tn, g[: self.n_t])],
                            "control_gaps_before": [[n, float(x)] for n, x in zip(cn, prev[self.n_t :])],
                            "control_gaps_after": [[n, float(x)] for n, x in zip(cn, g[self.n_t :])]})
            prev = g
        patched_sha = sha256_after_moves(self.model_path, self.engine.gguf, result.moves)
        meta = {"label": self.label, "stop_reason": result.stop_reason, "iterations_run": result.iterations_run,
                "probes": [{"name": p.name, "role": "target" if i < self.n_t else "control"}
                           for i, p in enumerate(self.probes)], **(metadata or {})}
        fitness_history = acc["fitness_after"].to_list()
        patch = Patch(moves=result.moves, records=records, base_sha256=self.model_sha, patched_sha256=patched_sha,
                      search_config=self.cfg.as_dict(), metadata=meta, fitness_history=fitness_history)
        write_patch(patch_path, patch)
        if upstream_path:
            write_patch(upstream_path, patch, fmt="upstream")
        n = max(1, result.iterations_run)
        summary = {"label": self.label, "iterations_run": result.iterations_run, "accepted": result.accepted,
                   "acceptance_rate": result.accepted / n, "stop_reason": result.stop_reason,
                   "elapsed_s": result.elapsed_s, "iterations_per_s": n / max(result.elapsed_s, 1e-9),
                   "base_sha256": self.model_sha, "patched_sha256": patched_sha,
                   "fitness_final": fitness_history[-1] if fitness_history else None,
                   "n_targets": self.n_t, "n_controls": len(self.probes) - self.n_t,
                   "probes": meta["probes"], "base_gaps": result.base_gaps, "final_gaps": result.final_gaps,
                   "config": self.cfg.as_dict()}
        Path(summary_path).write_text(json.dumps(summary, indent=2) + "\n")
        shutil.rmtree(self.ckpt_dir, ignore_errors=True)


ITERATION_SCHEMA = polars_schema(SearchIterations)  # the dtypes the checkpoint parts are cast to


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
