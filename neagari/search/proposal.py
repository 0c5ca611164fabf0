"""Move proposals. Proposal t is drawn from its own generator seeded by (seed, t) and reads nothing
but the state the search has accepted so far, so it is a function of (seed, t, accepted state):
a resumed search, which replays its accepted moves before going on, draws what the uninterrupted
one drew, and no generator state is ever saved.

Group sampling ∝ |scale| ("scale") weighs the live scales, as upstream's run_search reads the
scales of its unpacked cache, where accepted scale flips have already landed. The proposer keeps
one cumulative |scale| table per searched tensor; the search reports each committed move through
:meth:`Proposer.accepted`, and a scale move rebuilds the table of its own tensor only.

On a Q2_0 tensor a group proposal is one of ``ternary_moves`` (negate by default; the
zero-pattern moves zero_plus and zero_minus on request), drawn uniformly after every other draw
of the proposal: the setting never changes a proposal on a Q1_0 tensor, nor the tensor, group or
scale bit of one on Q2_0.

Speculation (the search drawing proposals t, t+1, ... before t is judged) stays exact: the search
evaluates the batch against the accepted state and takes the first proposal that improves,
dropping the rest. Proposal t+k is therefore used only when t .. t+k-1 were all rejected, that
is when the accepted state at iteration t+k is the one the batch was drawn from; after an
acceptance the next batch is drawn afresh, from tables that include the accepted move.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from neagari.engine import q2
from neagari.search.patch import Move

GROUP_SAMPLING = ("uniform", "scale", "scale_base")


@dataclass(frozen=True)
class ProposalConfig:
    layers: tuple[int, ...]
    projections: tuple[str, ...] = ("ffn_gate", "ffn_up", "ffn_down")
    # "uniform" (the paper's 1.7B runs); "scale": probability ∝ |scale| of the group in the
    # accepted state (upstream xor_search's default, whose scale flips reweight later proposals);
    # "scale_base": ∝ |scale| in the model file as loaded, a distribution the scale moves do not
    # steer. Uniform is our default: it does not favour groups by a property the scale moves
    # themselves change.
    group_sampling: str = "uniform"
    scale_prob: float = 0.0  # probability that a proposal is a scale-mantissa move (pass 2: 0.7)
    scale_bits: tuple[int, ...] = field(default=(4, 5, 6, 7, 8, 9))
    # the group moves proposed on Q2_0 tensors (q2.GROUP_MOVES); none of them acts on Q1_0
    ternary_moves: tuple[str, ...] = ("negate",)

    def __post_init__(self):
        if self.group_sampling not in GROUP_SAMPLING:
            raise ValueError(f"group_sampling must be one of {GROUP_SAMPLING}, got {self.group_sampling!r}")
        if not self.layers or not self.projections:
            raise ValueError("need at least one search layer and one projection")
        if not 0 <= self.scale_prob <= 1:
            raise ValueError("scale_prob must be within [0, 1]")
        if any(not 0 <= b <= 9 for b in self.scale_bits):
            raise ValueError("scale bits must be FP16 mantissa bits 0..9")
        if not self.ternary_moves or any(k not in q2.GROUP_MOVES for k in self.ternary_moves):
            raise ValueError(f"ternary_moves must be one or more of {', '.join(q2.GROUP_MOVES)}, "
                             f"got {self.ternary_moves!r}")

    def as_dict(self) -> dict:
        """The settings by name, ``ternary_moves`` only where it is not the default: it acts on
        Q2_0 tensors alone, and so search identities, checkpoints and summaries that lack the key
        still match."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.ternary_moves == ProposalConfig.ternary_moves:
            del d["ternary_moves"]
        return d


class Proposer:
    """Proposals over the configured layers and projections of ``engine``'s model, whose state when
    the proposer is built counts as accepted; report every move committed after that to
    :meth:`accepted` (the search does, on commit and on replay)."""

    def __init__(self, engine, cfg: ProposalConfig, seed: int):
        self.engine, self.cfg, self.seed = engine, cfg, seed
        self.tensors = [(l, f"{p}.weight") for l in cfg.layers for p in cfg.projections]
        self.n_groups = {}
        self.formats = {}  # the block format module of each searched tensor (q1 or q2)
        self.abs_scale: dict[tuple[int, str], np.ndarray] = {}  # |scale| per group, float64
        self.cum_scale: dict[tuple[int, str], np.ndarray] = {}  # its running sum (unnormalised)
        for l, proj in self.tensors:
            lin = engine.linear(f"blk.{l}.{proj}")
            self.n_groups[(l, proj)] = lin.n_groups
            self.formats[(l, proj)] = lin.fmt
            if cfg.group_sampling != "uniform":
                raw = lin.raw if cfg.group_sampling == "scale" else lin.base
                scales = lin.fmt.scales_torch(raw).cpu().numpy().reshape(-1)
                self.abs_scale[(l, proj)] = np.abs(scales.astype(np.float64))
                self._rebuild((l, proj))

    def _rebuild(self, key: tuple[int, str]) -> None:
        """The cumulative table of one tensor, from its |scale| array alone (so a table built on the
        way equals one built from scratch on the same state)."""
        cum = np.cumsum(self.abs_scale[key])
        if not cum[-1] > 0:
            raise ValueError(f"blk.{key[0]}.{key[1]}: no group has a nonzero scale to sample by")
        self.cum_scale[key] = cum

    def probabilities(self, layer: int, proj: str) -> np.ndarray:
        """The probability of each group of one tensor, given that tensor was drawn."""
        if self.cfg.group_sampling == "uniform":
            n = self.n_groups[(layer, proj)]
            return np.full(n, 1.0 / n)
        d = self.abs_scale[(layer, proj)]
        return d / self.cum_scale[(layer, proj)][-1]

    def accepted(self, move: Move) -> None:
        """Note a move committed to the engine: under "scale" sampling a scale move re-reads that
        group's live scale and rebuilds its tensor's table; anything else leaves the tables as they
        are (sign moves keep |scale|; "scale_base" and "uniform" do not read the state)."""
        key = (move.layer, move.proj)
        if self.cfg.group_sampling != "scale" or move.type != "scale" or key not in self.abs_scale:
            return
        lin = self.engine.linear(move.tensor)
        block, _, _ = lin.block(move.group)
        self.abs_scale[key][move.group] = abs(float(lin.fmt.scales_torch(block)[0]))
        self._rebuild(key)

    def propose(self, t: int) -> Move:
        rng = np.random.Generator(np.random.PCG64([self.seed, t]))
        layer = self.cfg.layers[rng.integers(len(self.cfg.layers))]
        proj = f"{self.cfg.projections[rng.integers(len(self.cfg.projections))]}.weight"
        if self.cfg.group_sampling == "uniform":
            group = int(rng.integers(self.n_groups[(layer, proj)]))
        else:
            cum = self.cum_scale[(layer, proj)]
            # group g covers [cum[g-1], cum[g]); a product rounded up to the total falls to the
            # last group of nonzero weight, never to a zero-weight one
            u = rng.random() * cum[-1]
            group = int(min(np.searchsorted(cum, u, side="right"), np.searchsorted(cum, cum[-1], side="left")))
        fmt = self.formats[(layer, proj)]
        if rng.random() < self.cfg.scale_prob:
            bit = int(self.cfg.scale_bits[rng.integers(len(self.cfg.scale_bits))])
            return Move(layer, proj, group, "scale", bit, fmt.NAME)
        if fmt is not q2:
            return Move(layer, proj, group, fmt.GROUP_MOVE, None, fmt.NAME)
        kinds = self.cfg.ternary_moves  # one kind draws nothing more
        kind = kinds[rng.integers(len(kinds))] if len(kinds) > 1 else kinds[0]
        return Move(layer, proj, group, kind, None, fmt.NAME)
