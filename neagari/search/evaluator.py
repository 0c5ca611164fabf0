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
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from neagari.engine.config import MLP_PROJECTIONS, layer_tensor
from neagari.engine.model import BlockTrace, Qwen3
from neagari.search.patch import Move


class GapEvaluator:
    """Gaps logit(correct) − logit(wrong) of fixed probes under moves of MLP groups."""

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
        self.gaps = self.rebuild()

    @property
    def n_probes(self) -> int:
        return self.tokens.shape[0]

    # ------------------------------------------------------------------ full passes
    def _block(self, l: int, x: torch.Tensor, reps: int, store: bool) -> torch.Tensor:
        """Block l on x (reps·P, S, H); the top block returns only the last position."""
        blk = self.model.blocks[l]
        top = l == self.n_layer - 1
        mask, cos, sin = self.mask, self.cos, self.sin
        if reps > 1:
            mask, cos, sin = mask.repeat(reps, 1, 1, 1), cos.repeat(reps, 1, 1), sin.repeat(reps, 1, 1)
        trace = blk.trace(x, cos, sin, mask, q_last=top)
        if store and l in self.search_layers:
            self.cache[l] = trace
        return trace.out

    def _gaps(self, x_last: torch.Tensor) -> torch.Tensor:
        """x_last (reps·P, 1, H) → gaps (reps, P)."""
        xn = self.model.output_norm(x_last[:, -1]).float()
        return (xn.view(-1, self.n_probes, xn.shape[-1]) * self.head_diff).sum(-1)

    def _from_layer(self, l0: int, x: torch.Tensor, reps: int, store: bool) -> torch.Tensor:
        for l in range(l0, self.n_layer):
            x = self._block(l, x, reps, store)
        return self._gaps(x)

    @torch.inference_mode()
    def rebuild(self) -> torch.Tensor:
        """Full forward of the current weights; refills every cache. Returns gaps (P,)."""
        x = self.model.embed(self.tokens)
        self.gaps = self._from_layer(0, x, 1, store=True)[0]
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
        order = sorted(range(len(moves)), key=lambda k: moves[k].layer)
        x, rows = None, []
        for layer in range(moves[order[0]].layer, self.n_layer):
            if x is not None:
                x = self._block(layer, x, len(rows), store=False)
            joining = [k for k in order if moves[k].layer == layer]
            if joining:
                outs = [self._layer_out(moves[k], *self._delta(moves[k])[:3])[0] for k in joining]
                x = torch.cat(([x] if x is not None else []) + outs, 0)
                rows += joining
        result = torch.empty(len(moves), self.n_probes, device=self.tokens.device)
        result[rows] = self._gaps(x)
        return result

    @torch.inference_mode()
    def commit(self, move: Move) -> torch.Tensor:
        """Apply a move to the weights and bring every cache up to date. Returns the new gaps.

        Always computed the same way (one move, batch of P), so replaying accepted moves from the
        base model reproduces the exact state of an uninterrupted search.
        """
        dw, row, col, _ = self._delta(move)
        out, unit = self._layer_out(move, dw, row, col)
        c = self.cache[move.layer]
        if unit is not None:
            u, gate_u, up_u, act_u = unit
            c.gate[..., u], c.up[..., u], c.act[..., u] = gate_u, up_u, act_u
        c.out = out
        self.engine.linear(move.tensor).move(move.group, move.type, move.bit)
        if move.layer == self.n_layer - 1:
            self.gaps = self._gaps(out)[0]
        else:
            self.gaps = self._from_layer(move.layer + 1, out, 1, store=True)[0]
        return self.gaps
