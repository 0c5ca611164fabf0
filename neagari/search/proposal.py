"""Move proposals. Proposal t is drawn from its own generator seeded by (seed, t), so it does
not depend on what happened before: resuming and speculating need no generator state."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from neagari.engine import q1
from neagari.search.patch import Move

GROUP_SAMPLING = ("uniform", "scale")


@dataclass(frozen=True)
class ProposalConfig:
    layers: tuple[int, ...]
    projections: tuple[str, ...] = ("ffn_gate", "ffn_up", "ffn_down")
    # "uniform" (the paper's 1.7B runs) or "scale": probability ∝ |scale| of the group in the base
    # model (upstream xor_search's default). Uniform is our default: it does not favour groups by
    # a property the scale moves themselves change.
    group_sampling: str = "uniform"
    scale_prob: float = 0.0  # probability that a proposal is a scale-mantissa move (pass 2: 0.7)
    scale_bits: tuple[int, ...] = field(default=(4, 5, 6, 7, 8, 9))

    def __post_init__(self):
        if self.group_sampling not in GROUP_SAMPLING:
            raise ValueError(f"group_sampling must be one of {GROUP_SAMPLING}, got {self.group_sampling!r}")
        if not self.layers or not self.projections:
            raise ValueError("need at least one search layer and one projection")
        if not 0 <= self.scale_prob <= 1:
            raise ValueError("scale_prob must be within [0, 1]")
        if any(not 0 <= b <= 9 for b in self.scale_bits):
            raise ValueError("scale bits must be FP16 mantissa bits 0..9")


class Proposer:
    def __init__(self, engine, cfg: ProposalConfig, seed: int):
        self.cfg, self.seed = cfg, seed
        self.tensors = [(l, f"{p}.weight") for l in cfg.layers for p in cfg.projections]
        self.n_groups = {}
        self.cum_scale = {}
        for l, proj in self.tensors:
            lin = engine.linear(f"blk.{l}.{proj}")
            self.n_groups[(l, proj)] = lin.n_groups
            if cfg.group_sampling == "scale":
                d = np.abs(q1.scales_torch(lin.base).cpu().numpy().reshape(-1).astype(np.float64))
                self.cum_scale[(l, proj)] = np.cumsum(d) / d.sum()

    def propose(self, t: int) -> Move:
        rng = np.random.Generator(np.random.PCG64([self.seed, t]))
        layer = self.cfg.layers[rng.integers(len(self.cfg.layers))]
        proj = f"{self.cfg.projections[rng.integers(len(self.cfg.projections))]}.weight"
        if self.cfg.group_sampling == "uniform":
            group = int(rng.integers(self.n_groups[(layer, proj)]))
        else:
            cum = self.cum_scale[(layer, proj)]
            group = int(min(np.searchsorted(cum, rng.random(), side="right"), len(cum) - 1))
        if rng.random() < self.cfg.scale_prob:
            return Move(layer, proj, group, "scale", int(self.cfg.scale_bits[rng.integers(len(self.cfg.scale_bits))]))
        return Move(layer, proj, group, "group")
