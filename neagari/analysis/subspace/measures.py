"""Which subspaces of the residual stream does a patch write into, compared with random subspaces?

Seed 001's hypothesis sweep applied to XOR patches. Shapes: H hidden (residual width), F ffn
width, N probes, k the rank of a basis, a *basis* an (H, k) float64 matrix with orthonormal
columns. Every delta is first put on its residual side, as an (H, m) matrix M:

* write tensors (``ffn_down``, ``attn_output``): ΔW is (H, in), its columns live in the residual,
  M = ΔW;
* read tensors (``ffn_gate``, ``ffn_up``, ``attn_q/k/v``): ΔW is (out, H), its rows live in the
  residual, M = ΔWᵀ;
* the activation delta X (N, H), patched − base residual at the last token: M = Xᵀ.

The energy fraction of M in a basis B is ‖BᵀM‖²_F / ‖M‖²_F ∈ [0, 1]. A uniformly random rank-k
subspace captures k/H of it on average, so the concentration ratio R = energy / (k/H) is 1 at the
null and at most H/k. z compares R with R over ``n_random`` seeded random orthonormal bases of
the same rank. Only M·Mᵀ matters, so each M is stored as a thin factor L (H, r) with L·Lᵀ = M·Mᵀ.
The activation energy is pooled over probes (‖Bᵀ Xᵀ‖²_F / ‖X‖²_F: a probe counts by how far the
patch moved it), where seed 001 averaged per-probe fractions.

A move touches the weights of one block, all in one row: 128 of them in Q1_0, 64 in Q2_0 (a
zero_plus or zero_minus move changes only those of its block that hold one of the two values it
swaps). In a write tensor that row is one residual coordinate, so write-side weight deltas are
spanned by coordinate axes; in a read tensor the delta is a slice of at most one block's length
of one neuron's read vector. The random-flip null patches carry the same structure, which is why
rankings are read against them.

Candidate bases and the patch's deltas come from :mod:`neagari.analysis.subspace.bases`; the tables,
figure and conclusion from :mod:`neagari.analysis.subspace.sweep`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

WRITE_PROJS = ("ffn_down", "attn_output")  # (H, in): columns in the residual
READ_PROJS = ("ffn_gate", "ffn_up", "attn_q", "attn_k", "attn_v")  # (out, H): rows in the residual
AXIS_KINDS = ("write", "read", "mixed", "ceiling", "random")
# Per-layer targets: one per patched tensor, three Frobenius-balanced combinations, activations.
COMBINED_TARGETS = ("write", "read", "all")
_EPS = 1e-12


def proj_side(proj: str) -> str:
    """'write' or 'read': which side of a projection ('ffn_down' or 'ffn_down.weight') faces the residual."""
    p = proj.removesuffix(".weight")
    if p in WRITE_PROJS:
        return "write"
    if p in READ_PROJS:
        return "read"
    raise ValueError(f"projection {proj!r}: not a block matrix with a residual side")


def matched_target(kind: str) -> str:
    """The combined weight target a candidate of this axis kind is ranked on: a write basis is only
    asked to explain write-side deltas, a read basis read-side deltas, every other kind all of them.
    (A read basis scoring high on a write delta is cross-space alignment, not an explanation.)"""
    if kind not in AXIS_KINDS:
        raise ValueError(f"axis kind {kind!r}: expected one of {', '.join(AXIS_KINDS)}")
    return kind if kind in ("write", "read") else "all"


def resolve_ranks(ranks, hidden: int) -> list[int]:
    """Config ranks → sorted distinct ints: an int is a rank, a float in (0, 1) a fraction of H;
    each is capped at H // 2 (a basis of half the space or more tells little against random)."""
    out = set()
    for r in ranks:
        if isinstance(r, float) and not r.is_integer():
            if not 0 < r < 1:
                raise ValueError(f"rank {r}: a fraction must lie in (0, 1)")
            r = round(r * hidden)
        out.add(min(max(int(r), 1), hidden // 2))
    return sorted(out)


# ---------------------------------------------------------------------------- linear algebra


def top_eigvecs(gram: torch.Tensor, k: int, rel_tol: float = 1e-10, largest: bool = True) -> torch.Tensor:
    """Eigenvectors of a symmetric PSD (H, H) matrix, by eigenvalue, as an (H, ≤k) float64 basis.

    Directions with eigenvalue ≤ rel_tol · max are dropped when ``largest`` (a rank-deficient
    source gives a smaller basis, never arbitrary null-space directions)."""
    evals, evecs = torch.linalg.eigh(gram.double())
    order = torch.argsort(evals, descending=largest)[:k]
    if largest:
        top = float(evals.max().clamp(min=0))
        order = order[evals[order] > rel_tol * top] if top > 0 else order[:0]
    return _fix_signs(evecs[:, order].contiguous())


def _fix_signs(B: torch.Tensor) -> torch.Tensor:
    """Make each column's largest-magnitude entry positive (deterministic bases, same subspace)."""
    if B.shape[1] == 0:
        return B
    idx = B.abs().argmax(0)
    signs = torch.sign(B[idx, torch.arange(B.shape[1], device=B.device)])
    return B * torch.where(signs == 0, torch.ones_like(signs), signs)


def left_basis(M: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k left singular vectors of M (H, m) → (H, ≤k), via the (H, H) Gram."""
    M = M.double()
    return top_eigvecs(M @ M.T, k)


def right_basis(W: torch.Tensor, k: int, largest: bool = True) -> torch.Tensor:
    """Top-k (or bottom-k) right singular vectors of W (out, H) → (H, ≤k)."""
    W = W.double()
    return top_eigvecs(W.T @ W, k, largest=largest)


def pca_basis(X: torch.Tensor, k: int, center: bool = True) -> torch.Tensor:
    """Principal directions of samples X (N, H) → (H, ≤k). ``center=False``: directions of the
    second moment, so a shared mean shift counts (what an energy fraction measures)."""
    X = X.double()
    if center:
        X = X - X.mean(0, keepdim=True)
    return left_basis(X.T, k)


def project_out(M: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """(I − B Bᵀ) M for a basis B (H, k) and M (H, m)."""
    M, B = M.double(), B.double()
    return M - B @ (B.T @ M)


def thin_factor(M: torch.Tensor) -> torch.Tensor:
    """L (H, r ≤ min(H, m)) with L Lᵀ = M Mᵀ: the part of M (H, m) every score depends on."""
    M = M.double()
    if M.shape[1] <= M.shape[0]:
        return M
    U, S, _ = torch.linalg.svd(M, full_matrices=False)
    keep = S > 1e-12 * S.max().clamp(min=_EPS)
    return U[:, keep] * S[keep]


def balanced(factors: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate thin factors after scaling each to unit Frobenius norm, so a big tensor (ffn_down
    has F columns) does not outweigh a small one: (H, Σr)."""
    return torch.cat([L / L.norm().clamp(min=_EPS) for L in factors], dim=1)


def random_bases(dim: int, k: int, n: int, seed: int) -> torch.Tensor:
    """n random orthonormal (dim, k) bases, Haar-distributed, fixed by ``seed``: (n, dim, k) float64."""
    g = torch.Generator().manual_seed(int(seed))
    G = torch.randn(n, dim, k, generator=g, dtype=torch.float64)
    Q, R = torch.linalg.qr(G)
    # QR's sign convention is not Haar; multiplying by sign(diag R) makes it so
    return Q * torch.sign(torch.diagonal(R, dim1=-2, dim2=-1)).unsqueeze(1)


def null_seed(seed: int, layer: int, k: int) -> int:
    """The random bases of one (layer, rank) cell: distinct across cells, identical across runs."""
    return (int(seed) * 1_000_003 + 7919 * int(layer) + int(k)) % (2**63 - 1)


# ---------------------------------------------------------------------------- scores


def energy_fraction(L: torch.Tensor, B: torch.Tensor) -> float:
    """‖Bᵀ L‖²_F / ‖L‖²_F for a factor L (H, r) and basis B (H, k); in [0, 1]."""
    L = L.double()
    return float((B.double().T @ L).pow(2).sum() / L.pow(2).sum().clamp(min=_EPS))


def concentration(L: torch.Tensor, B: torch.Tensor) -> float:
    """Energy fraction over its random-subspace expectation k/H: 1 at the null, H/k at most."""
    return energy_fraction(L, B) / (B.shape[1] / B.shape[0])


def null_concentrations(L: torch.Tensor, bases: torch.Tensor) -> torch.Tensor:
    """R of L (H, r) in each of ``bases`` (n, H, k): (n,) float64."""
    L = L.double()
    n, H, k = bases.shape
    e = torch.einsum("nhk,hr->nkr", bases, L).pow(2).sum((1, 2)) / L.pow(2).sum().clamp(min=_EPS)
    return e / (k / H)


@dataclass(frozen=True)
class Score:
    """One basis against one target: energy ∈ [0, 1], R = energy·H/k, the random-basis null's mean
    and standard deviation of R, and z = (R − null_mean) / null_std."""

    rank: int
    energy: float
    R: float
    null_mean: float
    null_std: float

    @property
    def z(self) -> float:
        return (self.R - self.null_mean) / max(self.null_std, _EPS)


class NullCache:
    """Random-basis nulls, drawn once per (layer, rank) and reused across targets and candidates.
    Only the current layer's bases are kept (n_random · H · k floats each: 200 MB at H = 4096)."""

    def __init__(self, dim: int, n_random: int, seed: int):
        self.dim, self.n_random, self.seed = dim, n_random, seed
        self._bases: dict[tuple[int, int], torch.Tensor] = {}
        self._stats: dict[tuple[int, str, int], tuple[float, float]] = {}

    def bases(self, layer: int, k: int) -> torch.Tensor:
        key = (layer, k)
        if key not in self._bases:
            self._bases = {kk: v for kk, v in self._bases.items() if kk[0] == layer}
            self._bases[key] = random_bases(self.dim, k, self.n_random, null_seed(self.seed, layer, k))
        return self._bases[key]

    def stats(self, layer: int, target: str, L: torch.Tensor, k: int) -> tuple[float, float]:
        key = (layer, target, k)
        if key not in self._stats:
            r = null_concentrations(L, self.bases(layer, k))
            self._stats[key] = (float(r.mean()), float(r.std(unbiased=True)))
        return self._stats[key]

    def score(self, layer: int, target: str, L: torch.Tensor, B: torch.Tensor) -> Score:
        k = B.shape[1]
        energy = energy_fraction(L, B)
        mean, std = self.stats(layer, target, L, k)
        return Score(k, energy, energy / (k / self.dim), mean, std)


# ---------------------------------------------------------------------------- targets


def layer_targets(weight_deltas: dict[tuple[int, str], torch.Tensor], layer: int) -> dict[str, torch.Tensor]:
    """Residual-side factors of one layer's weight deltas: each patched tensor (by projection name,
    e.g. 'ffn_down'), plus the balanced combinations 'write', 'read' and 'all' where they exist.

    weight_deltas: {(layer, proj): residual-side factor (H, r)} as
    :func:`neagari.analysis.subspace.bases.weight_delta_factors` returns."""
    per = {p.removesuffix(".weight"): L for (l, p), L in sorted(weight_deltas.items()) if l == layer
           and L.pow(2).sum() > 0}
    out = dict(per)
    for side in ("write", "read"):
        parts = [L for p, L in per.items() if proj_side(p) == side]
        if parts:
            out[side] = balanced(parts)
    if per:
        out["all"] = balanced(list(per.values()))
    return out


def score_rows(layer: int, targets: dict[str, torch.Tensor], candidates: dict[str, tuple[str, torch.Tensor]],
               nulls: NullCache, ranks: list[int]) -> list[dict]:
    """Every candidate at every rank against every target of one layer: a list of row dicts.

    targets: {name: factor (H, r)}, 'activation' for the activation delta. candidates:
    {name: (axis kind, basis (H, ≥k))}; a basis ordered by importance is cut to its first k
    columns; one with fewer than k is scored at its own rank (the row keeps k, ``rank`` says)."""
    rows = []
    for cand, (kind, basis) in candidates.items():
        for k in ranks:
            B = basis[:, :k]
            if B.shape[1] == 0:
                continue
            for target, L in targets.items():
                s = nulls.score(layer, target, L, B)
                side = "activation" if target == "activation" else (
                    target if target in COMBINED_TARGETS else proj_side(target))
                rows.append({"layer": layer, "candidate": cand, "kind": kind, "target": target,
                             "target_side": side, "k": k, "rank": s.rank, "dim": nulls.dim, "energy": s.energy,
                             "R": s.R, "null_mean": s.null_mean, "null_std": s.null_std, "z": s.z,
                             "n_random": nulls.n_random, "delta_norm": float(L.norm())})
    return rows
