"""The two sides of the subspace sweep (:mod:`neagari.analysis.subspace.measures`) on a loaded :class:`Engine`.

A side, candidate bases per layer, only from the base model's weights and base activations:
:func:`weight_candidates` (write, read, unembedding, circuit, write-not-read and random bases)
and :func:`activation_candidates` (PCA of clean activations, PCA of target-minus-control
contrasts). B side, from the patch: :func:`weight_delta_factors` (exact ΔW of each patched
matrix) and :func:`activation_delta` (patched − base residual at the last token).

Layer ``l``'s residual is the output of block ``l`` (what its attention and MLP wrote into), at
the last prompt token. Shapes as in :mod:`neagari.analysis.subspace.measures`: H hidden, F ffn, N prompts.

Moves and deltas go through each tensor's block format (``engine.linear(t).fmt``: Q1_0's 128-weight
blocks and their group and scale moves, Q2_0's 64-weight blocks and their code transpositions and
scale moves), so a Q1_0, Q2_0 or mixed model is measured alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from neagari.analysis.subspace.measures import (left_basis, null_seed, pca_basis, project_out, proj_side, random_bases, right_basis,
                       thin_factor, top_eigvecs)


@dataclass(frozen=True)
class Candidate:
    """One hypothesis: an axis kind ('write', 'read', 'mixed', 'ceiling', 'random'), a one-line
    definition, and its basis per layer (list of (H, ≤kmax) float64, columns by importance)."""

    name: str
    kind: str
    definition: str
    bases: list[torch.Tensor]


def _dense(engine, tensor: str) -> torch.Tensor:
    """A matrix of the model as (out, in) float64 on the engine's device, packed (Q1_0, Q2_0) or float."""
    return engine.weight(tensor).detach().to(engine.device, torch.float64)


def _unit_gram(engine, tensor: str, chunk: int = 8192) -> torch.Tensor:
    """Wᵀ W (H, H) float64 of a read matrix W (out, H), built a row chunk at a time (an LM head of
    150k rows never exists in float64 whole), normalised to unit trace so reads of different
    sizes count alike when summed."""
    w = engine.weight(tensor)
    G = torch.zeros(w.shape[1], w.shape[1], dtype=torch.float64, device=engine.device)
    for r0 in range(0, w.shape[0], chunk):
        x = w[r0 : r0 + chunk].detach().to(engine.device, torch.float64)
        G += x.T @ x
    return G / G.trace().clamp(min=1e-30)


CANDIDATE_DEFINITIONS = {
    "attn_write": ("write", "top left singular vectors of attn_output (H, q_dim)"),
    "mlp_write": ("write", "top left singular vectors of ffn_down (H, F)"),
    "layer_write": ("write", "top left singular vectors of [attn_output | ffn_down]"),
    "ov_circuit": ("write", "top left singular vectors of the OV circuit W_O W_V (GQA-expanded)"),
    "mlp_roundtrip": ("write", "top left singular vectors of W_down W_up (residual to residual)"),
    "mlp_gate_roundtrip": ("write", "top left singular vectors of W_down W_gate (residual to residual)"),
    "write_not_later_read": ("write", "layer write space after projecting away the top read space "
                                      "(broad_rank) of later blocks and the LM head"),
    "qkv_read": ("read", "top right singular vectors of [W_q; W_k; W_v]"),
    "gate_read": ("read", "top right singular vectors of ffn_gate"),
    "up_read": ("read", "top right singular vectors of ffn_up"),
    "unembed_read": ("read", "top right singular vectors of the LM head (what the logits read)"),
    "unembed_null": ("read", "bottom right singular vectors of the LM head (what the logits ignore)"),
    "random": ("random", "one seeded random orthonormal basis per layer"),
}
_READS = ("attn_q", "attn_k", "attn_v", "ffn_gate", "ffn_up")


def weight_candidates(engine, kmax: int, broad_rank: int, seed: int = 0) -> list[Candidate]:
    """Candidate bases from the base model's weights alone, every layer, up to rank ``kmax``
    (see CANDIDATE_DEFINITIONS), computed on the engine's device, returned on the CPU.

    broad_rank: rank of the "read by later layers" space that write-not-read projects away.
    Layers run last to first so that only one layer's matrices and one running (H, H) Gram of
    everything read later are held at a time."""
    c = engine.cfg
    n, H = c.n_layer, c.hidden
    rep = c.n_head // c.n_kv_head  # GQA: each kv head serves `rep` query heads, in order
    out: dict[str, list[torch.Tensor]] = {name: [None] * n for name in CANDIDATE_DEFINITIONS}
    head = "token_embd.weight" if c.tied_embeddings else "output.weight"
    later = _unit_gram(engine, head)  # what is read after layer i: later blocks and the LM head
    unembed_read, unembed_null = top_eigvecs(later, kmax).cpu(), top_eigvecs(later, kmax, largest=False).cpu()
    for i in reversed(range(n)):
        W = {t: _dense(engine, f"blk.{i}.{t}.weight") for t in (*_READS, "attn_output", "ffn_down")}
        wo, wd = W["attn_output"], W["ffn_down"]
        v = W["attn_v"].view(c.n_kv_head, c.head_dim, H).repeat_interleave(rep, 0).reshape(c.q_dim, H)
        writes = torch.cat([wo, wd], 1)  # (H, q_dim + F)
        bases = {
            "attn_write": left_basis(wo, kmax), "mlp_write": left_basis(wd, kmax),
            "layer_write": left_basis(writes, kmax), "ov_circuit": left_basis(wo @ v, kmax),
            "mlp_roundtrip": left_basis(wd @ W["ffn_up"], kmax),
            "mlp_gate_roundtrip": left_basis(wd @ W["ffn_gate"], kmax),
            "write_not_later_read": left_basis(project_out(writes, top_eigvecs(later, broad_rank)), kmax),
            "qkv_read": right_basis(torch.cat([W["attn_q"], W["attn_k"], W["attn_v"]]), kmax),
            "gate_read": right_basis(W["ffn_gate"], kmax), "up_read": right_basis(W["ffn_up"], kmax),
            "unembed_read": unembed_read, "unembed_null": unembed_null,
            # a different stream from the nulls' (seed + 1): one fixed random basis per layer
            "random": random_bases(H, kmax, 1, null_seed(seed + 1, i, kmax))[0],
        }
        for name, B in bases.items():
            out[name][i] = B.cpu()
        later = later + sum(_unit_gram(engine, f"blk.{i}.{t}.weight") for t in _READS)
    return [Candidate(name, *CANDIDATE_DEFINITIONS[name], out[name]) for name in CANDIDATE_DEFINITIONS]


# ---------------------------------------------------------------------------- activations


def last_token_residuals(engine, seqs: Sequence[Sequence[int]], batch_size: int = 32) -> torch.Tensor:
    """Each block's output residual at each sequence's last token: (n_layer, N, H) float64, CPU."""
    return engine.hidden_states(seqs, batch_size, last_token=True)[1:].double()


def apply_moves(engine, moves) -> None:
    """Apply a patch's moves to the engine's packed state (undo with ``engine.reset()``): each by its
    kind, on a tensor of the block format its record names (a move recorded for another format
    is refused, as applying the patch to the file refuses it). Every move is checked before the
    first is applied, so a refused patch leaves the engine as it was."""
    for m in moves:
        fmt = engine.linear(m.tensor).fmt
        if m.tensor_type != fmt.NAME:
            raise ValueError(f"{m.describe()}: the patch records a {m.tensor_type} tensor, the model's "
                             f"{m.tensor} is {fmt.NAME}")
    for m in moves:
        engine.move(m.tensor, m.group, m.type, m.bit)


def activation_delta(engine, moves, seqs: Sequence[Sequence[int]],
                     batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """(base residuals, patched − base residuals) per layer at the last token, each (n_layer, N, H)
    float64. The engine is left as it was (base)."""
    base = last_token_residuals(engine, seqs, batch_size)
    apply_moves(engine, moves)
    try:
        patched = last_token_residuals(engine, seqs, batch_size)
    finally:
        engine.reset()
    return base, patched - base


def activation_candidates(fit_targets: torch.Tensor, controls: torch.Tensor, kmax: int) -> list[Candidate]:
    """Candidates from base activations (n_layer, N, H): ``clean_pca`` (PCA of target and control
    residuals together) and ``contrast_pca`` (second-moment directions of each target residual
    minus the mean control residual: the mean contrast first, then how targets spread around it)."""
    n = fit_targets.shape[0]
    clean = [pca_basis(torch.cat([fit_targets[i], controls[i]]), kmax) for i in range(n)]
    contrast = [pca_basis(fit_targets[i] - controls[i].mean(0, keepdim=True), kmax, center=False)
                for i in range(n)]
    return [Candidate("clean_pca", "mixed", "PCA of clean base residuals (targets and controls)", clean),
            Candidate("contrast_pca", "mixed", "PCA (uncentred) of target minus mean control base residuals",
                      contrast)]


# ---------------------------------------------------------------------------- weight deltas


def weight_deltas(engine, moves) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Exact ΔW of each patched matrix: {tensor: (rows (r,) long, delta (r, in) float64)}, only the
    touched rows (no other row changes). The moves are applied in the patch's order (Q2_0's code
    transpositions do not commute with each other) and ΔW is the weights after minus before, both
    dequantized from the packed bytes by each tensor's format (exact fp16 scales whatever the cache
    type)."""
    rows_by_tensor: dict[str, set[int]] = {}
    for m in moves:
        lin = engine.linear(m.tensor)
        if not 0 <= m.group < lin.n_groups:
            raise IndexError(f"{m.describe()}: group outside 0..{lin.n_groups - 1}")
        rows_by_tensor.setdefault(m.tensor, set()).add(lin.fmt.group_location(m.group, lin.in_features)[0])
    rows = {t: torch.tensor(sorted(r), dtype=torch.long) for t, r in rows_by_tensor.items()}

    def snapshot():
        out = {}
        for t, r in rows.items():
            lin = engine.linear(t)
            out[t] = lin.fmt.dequantize_torch(lin.raw[r.to(engine.device)]).double().cpu()
        return out

    before = snapshot()
    apply_moves(engine, moves)
    try:
        after = snapshot()
    finally:
        engine.reset()
    return {t: (rows[t], after[t] - before[t]) for t in rows}


def weight_delta_factors(engine, moves) -> dict[tuple[int, str], torch.Tensor]:
    """Residual-side thin factors of each patched matrix's ΔW: {(layer, proj): (H, r)}.

    Write tensors (out = H): M = ΔW, nonzero only on the touched rows, i.e. on those residual
    coordinates; read tensors (in = H): M = ΔWᵀ, whose columns are the touched rows' deltas."""
    H = engine.cfg.hidden
    out = {}
    for tensor, (rows, delta) in weight_deltas(engine, moves).items():
        _, layer, proj = tensor.split(".", 2)
        if proj_side(proj) == "write":  # M = E_rows delta, so M Mᵀ = E_rows (delta deltaᵀ) E_rowsᵀ
            small = thin_factor(delta)  # (r, r')
            M = torch.zeros(H, small.shape[1], dtype=torch.float64)
            M[rows] = small
        else:
            M = delta.T  # (H, r)
        out[(int(layer), proj.removesuffix(".weight"))] = thin_factor(M)
    return out


def save_candidates(path, candidates: Sequence[Candidate], meta: dict) -> None:
    """Write candidates as plain tensors, strings and lists (loadable with ``weights_only``)."""
    torch.save({"meta": dict(meta), "candidates": [
        {"name": c.name, "kind": c.kind, "definition": c.definition, "bases": [B.contiguous() for B in c.bases]}
        for c in candidates]}, path)


def load_candidates(path) -> tuple[list[Candidate], dict]:
    """Inverse of :func:`save_candidates`: (candidates, meta)."""
    doc = torch.load(path, weights_only=True)
    return [Candidate(d["name"], d["kind"], d["definition"], d["bases"]) for d in doc["candidates"]], doc["meta"]
