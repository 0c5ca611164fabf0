"""Probe gaps under candidate moves, as cheaply as the mathematics allows.

All probes run as one left-padded batch. For every search layer L the evaluator keeps the MLP's
activations of the current (accepted) model: normed input ``n``, gate and up pre-activations,
their product ``a`` and the block output ``out`` (the next layer's input). A move changes the
weights of one group (128 of a Q1_0 matrix, 64 of a Q2_0 one) of one MLP matrix of layer L, so its
effect on layer L is a rank-one update of ``out``:

- ffn_down group (hidden row r, ffn columns C):  out[..., r] += a[..., C] · Δw
- ffn_gate / ffn_up group (ffn unit u, hidden columns C): that unit's pre-activation moves by
  n[..., C] · Δw, its activation by δ, and out += δ · W_down[:, u]

Layers below L are untouched (their caches are reused); layers above L run in full, except the
top layer, where only the last token queries and only its MLP runs; the head computes only the
two logits a gap needs. Several proposals can be evaluated in one batch (speculation): none is
applied to the weights, each only perturbs its own layer's cached output.

Probes of very different lengths are not padded to one length: they are sorted by length and cut
into a few batches (:func:`length_groups`), each padded to its own longest prompt, so a set of
short controls beside long targets costs its own tokens, not the targets'. A probe's gap does not
depend on what it is batched with (positions count real tokens, padding is masked) beyond float
rounding: a different padding length can move a gap in its last bits.

A single proposal's trial is the very pass its commit makes (same move, batch of P, same calls),
so the evaluator keeps that pass and an accepted proposal is committed without recomputing it:
the state is bit for bit the one a fresh commit gives, at one pass per accepted move instead of two.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from neagari.engine.config import MLP_PROJECTIONS, layer_tensor
from neagari.engine.model import BlockTrace, Qwen3
from neagari.search.patch import Move


MAX_GROUPS_CPU = 4  # a batch's fixed cost is a few tokens' arithmetic on a CPU
MAX_GROUPS_GPU = 1  # on a GPU kernel launches dominate at these batch sizes: one batch
GROUP_PENALTY = 0.05  # another batch must save more than 5% of the padded tokens


def length_groups(lengths: Sequence[int], max_groups: int) -> list[list[int]]:
    """Probe indices cut into at most ``max_groups`` batches of similar length, each padded to its
    longest: the cut of the length-sorted probes that minimises the padded tokens, with each batch
    beyond the first charged GROUP_PENALTY of them. Deterministic (ties by index)."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    ln = [lengths[i] for i in order]
    n = len(ln)
    inf = float("inf")
    # best[g][b]: fewest padded tokens of the first b sorted probes in g batches; cut[g][b] its last cut
    best = [[0.0] + [inf] * n] + [[inf] * (n + 1) for _ in range(max_groups)]
    cut = [[0] * (n + 1) for _ in range(max_groups + 1)]
    for g in range(1, max_groups + 1):
        for b in range(1, n + 1):
            for a in range(g - 1, b):
                c = best[g - 1][a] + (b - a) * ln[b - 1]
                if c < best[g][b]:
                    best[g][b], cut[g][b] = c, a
    g = min(range(1, min(max_groups, n) + 1), key=lambda k: (best[k][n] * (1 + GROUP_PENALTY * (k - 1)), k))
    groups, b = [], n
    while g:
        a = cut[g][b]
        groups.append(sorted(order[a:b]))  # each batch in the probes' own order
        b, g = a, g - 1
    return groups[::-1]


class GapEvaluator:
    """Gaps logit(correct) − logit(wrong) of fixed probes under moves of MLP groups: one
    :class:`_Batch` per length group, their gaps put back in the probes' order."""

    def __init__(self, engine, prompts: Sequence[Sequence[int]], correct: Sequence[int], wrong: Sequence[int],
                 search_layers: Sequence[int], max_groups: int | None = None):
        if max_groups is None:
            max_groups = MAX_GROUPS_GPU if str(engine.device).startswith("cuda") else MAX_GROUPS_CPU
        self.engine = engine
        self.groups = length_groups([len(p) for p in prompts], max_groups) if prompts else [[]]
        self.batches = [_Batch(engine, [prompts[i] for i in g], [correct[i] for i in g], [wrong[i] for i in g],
                               search_layers) for g in self.groups]
        perm = [i for g in self.groups for i in g]
        pos = [0] * len(perm)
        for j, i in enumerate(perm):
            pos[i] = j
        self._pos = torch.tensor(pos, dtype=torch.long, device=engine.device)
        self.gaps = self._merge([b.gaps for b in self.batches])

    @property
    def n_probes(self) -> int:
        return sum(b.n_probes for b in self.batches)

    @property
    def n_tokens(self) -> int:
        """Token slots of one full pass, padding included."""
        return sum(int(b.tokens.numel()) for b in self.batches)

    def _merge(self, parts: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(parts, -1)[..., self._pos]

    @torch.inference_mode()
    def rebuild(self) -> torch.Tensor:
        """Full forward of the current weights; refills every cache. Returns gaps (P,)."""
        self.gaps = self._merge([b.rebuild() for b in self.batches])
        return self.gaps

    @torch.inference_mode()
    def trial(self, moves: Sequence[Move]) -> torch.Tensor:
        """Gaps (K, P) each move alone would give; the model and caches are left unchanged."""
        return self._merge([b.trial(moves) for b in self.batches])

    @torch.inference_mode()
    def commit(self, move: Move) -> torch.Tensor:
        """Apply a move to the weights and bring every cache up to date. Returns the new gaps.
        Every batch takes its pass from the current weights before the move changes them."""
        for b in self.batches:
            b.commit(move)
        self.engine.linear(move.tensor).move(move.group, move.type, move.bit)
        self.gaps = self._merge([b.gaps for b in self.batches])
        return self.gaps


class _Batch:
    """One left-padded batch of probes with its caches."""

    def __init__(self, engine, prompts: Sequence[Sequence[int]], correct: Sequence[int], wrong: Sequence[int],
                 search_layers: Sequence[int]):
        self.engine, self.model = engine, engine.model
        self.n_layer = engine.cfg.n_layer
        bad = [l for l in search_layers if not 0 <= l < self.n_layer]
        if bad:
            raise ValueError(f"search layers {bad} outside 0..{self.n_layer - 1}")
        self.search_layers = sorted(set(search_layers))
        self.tokens, valid, self.positions = engine.pad_batch(prompts)
        S = self.tokens.shape[1]
        self.mask = Qwen3.attention_mask(valid, torch.arange(S, device=engine.device))
        self.cos, self.sin = self.model.rope(self.positions)
        head = self.model.output
        with torch.no_grad():
            ids = torch.tensor(list(correct) + list(wrong), device=engine.device)
            rows = head.rows(ids).float()
        P = len(prompts)
        self.head_diff = rows[:P] - rows[P:]  # (P, H): gap = norm(x_last) · (W[c] − W[w])
        self.cache: dict[int, BlockTrace] = {}
        self._ahead: _Pass | None = None  # the last single-move trial's pass, for its commit (the weights
        # change only through commit, which drops it, so it stays valid until then)
        self.gaps = self.rebuild()

    @property
    def n_probes(self) -> int:
        return self.tokens.shape[0]

    # ------------------------------------------------------------------ full passes
    def _block(self, l: int, x: torch.Tensor, reps: int, store: dict[int, BlockTrace] | None) -> torch.Tensor:
        """Block l on x (reps·P, S, H); the top block returns only the last position. A search
        layer's trace goes into ``store`` where one is given."""
        blk = self.model.blocks[l]
        top = l == self.n_layer - 1
        mask, cos, sin = self.mask, self.cos, self.sin
        if reps > 1:
            mask, cos, sin = mask.repeat(reps, 1, 1, 1), cos.repeat(reps, 1, 1), sin.repeat(reps, 1, 1)
        trace = blk.trace(x, cos, sin, mask, q_last=top)
        if store is not None and l in self.search_layers:
            store[l] = trace
        return trace.out

    def _gaps(self, x_last: torch.Tensor) -> torch.Tensor:
        """x_last (reps·P, 1, H) → gaps (reps, P)."""
        xn = self.model.output_norm(x_last[:, -1]).float()
        return (xn.view(-1, self.n_probes, xn.shape[-1]) * self.head_diff).sum(-1)

    def _from_layer(self, l0: int, x: torch.Tensor, reps: int, store: dict[int, BlockTrace] | None) -> torch.Tensor:
        for l in range(l0, self.n_layer):
            x = self._block(l, x, reps, store)
        return self._gaps(x)

    @torch.inference_mode()
    def rebuild(self) -> torch.Tensor:
        """Full forward of the current weights; refills every cache. Returns gaps (P,)."""
        self._ahead = None
        x = self.model.embed(self.tokens)
        self.gaps = self._from_layer(0, x, 1, store=self.cache)[0]
        return self.gaps

    # ------------------------------------------------------------------ moves
    def _delta(self, move: Move) -> tuple[torch.Tensor, int, int, torch.Tensor]:
        """(Δw (QK,), row, first column, the moved block bytes) of a move on current weights; QK
        is the group size of the tensor's format."""
        if move.proj.split(".")[0] not in MLP_PROJECTIONS:
            raise ValueError(f"the fast evaluator moves MLP groups only, not {move.proj}")
        lin = self.engine.linear(move.tensor)
        if move.tensor_type != lin.fmt.NAME:  # its patch record would be refused by apply-patch
            raise ValueError(f"{move.describe()}: {move.tensor} is {lin.fmt.NAME}, not {move.tensor_type}")
        block, row, col = lin.block(move.group)
        moved = block.clone()
        lin.fmt.apply_move(moved, move.type, move.bit)
        w_old = lin.fmt.group_weights_torch(block, torch.float32)
        w_new = lin.fmt.group_weights_torch(moved, torch.float32)
        return w_new - w_old, row, col, moved

    def _layer_out(self, move: Move, dw: torch.Tensor, row: int, col: int) -> tuple[torch.Tensor, tuple | None]:
        """Block output of the move's layer after the move; plus the changed (unit, gate, up, act)."""
        c = self.cache[move.layer]
        proj = move.proj.split(".")[0]
        cols = slice(col, col + dw.shape[0])
        if proj == "ffn_down":
            out = c.out.clone()
            out[..., row] += c.act[..., cols] @ dw
            return out, None
        u = row
        dpre = c.n[..., cols] @ dw  # (P, S_L)
        gate_u = c.gate[..., u] + dpre if proj == "ffn_gate" else c.gate[..., u]
        up_u = c.up[..., u] + dpre if proj == "ffn_up" else c.up[..., u]
        act_u = F.silu(gate_u) * up_u
        w_down_u = self.engine.weight(layer_tensor(move.layer, "ffn_down"))[:, u].float()
        out = c.out + (act_u - c.act[..., u]).unsqueeze(-1) * w_down_u
        return out, (u, gate_u, up_u, act_u)

    @torch.inference_mode()
    def trial(self, moves: Sequence[Move]) -> torch.Tensor:
        """Gaps (K, P) each move alone would give; the model and caches are left unchanged.

        One pass upward from the lowest proposal's layer: at each layer the proposals that
        started below are carried through the block together, then those of this layer join the
        batch. K proposals cost one pass of kernel launches (what bounds a GPU at these batch
        sizes) and the arithmetic of K separate passes, in larger, more efficient matmuls.
        """
        if len(moves) == 1:
            self._ahead = self._pass(moves[0])
            return self._ahead.gaps.unsqueeze(0).clone()
        order = sorted(range(len(moves)), key=lambda k: moves[k].layer)
        x, rows = None, []
        for layer in range(moves[order[0]].layer, self.n_layer):
            if x is not None:
                x = self._block(layer, x, len(rows), store=None)
            joining = [k for k in order if moves[k].layer == layer]
            if joining:
                outs = [self._layer_out(moves[k], *self._delta(moves[k])[:3])[0] for k in joining]
                x = torch.cat(([x] if x is not None else []) + outs, 0)
                rows += joining
        result = torch.empty(len(moves), self.n_probes, device=self.tokens.device)
        result[rows] = self._gaps(x)
        return result

    def _pass(self, move: Move) -> "_Pass":
        """The state after ``move`` alone, computed from the current caches; nothing is changed."""
        dw, row, col, _ = self._delta(move)
        out, unit = self._layer_out(move, dw, row, col)
        traces: dict[int, BlockTrace] = {}
        if move.layer == self.n_layer - 1:
            gaps = self._gaps(out)[0]
        else:
            gaps = self._from_layer(move.layer + 1, out, 1, store=traces)[0]
        return _Pass(move, out, unit, traces, gaps)

    @torch.inference_mode()
    def commit(self, move: Move) -> torch.Tensor:
        """Bring every cache up to date for ``move``, whose weights the caller then moves.

        Always computed the same way (one move, batch of P: :meth:`_pass`, kept from the move's
        single trial where that came just before), so replaying accepted moves from the base model
        reproduces the exact state of an uninterrupted search.
        """
        p = self._ahead if self._ahead is not None and self._ahead.move == move else self._pass(move)
        self._ahead = None
        c = self.cache[move.layer]
        if p.unit is not None:
            u, gate_u, up_u, act_u = p.unit
            c.gate[..., u], c.up[..., u], c.act[..., u] = gate_u, up_u, act_u
        c.out = p.out
        self.cache.update(p.traces)
        self.gaps = p.gaps
        return self.gaps


@dataclass
class _Pass:
    """One move's pass: its layer's new output (and changed MLP unit), the traces of the search
    layers above it and the gaps."""

    move: Move
    out: torch.Tensor
    unit: tuple | None
    traces: dict[int, BlockTrace]
    gaps: torch.Tensor
