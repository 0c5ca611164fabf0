"""Geometric terrain of a model's representations (after the geometric-terrain notebook's definitions).

Pure numpy measures of a point cloud (token embeddings, hidden states) and the two extractors that
feed them from an :class:`~neagari.engine.engine.Engine`. The WordNet alignment lives in
:mod:`neagari.analysis.terrain.wordnet_alignment`. Shapes: N points, H dimensions; cosines are dimensionless in
[-1, 1]; norms and volumes are in the units of the representation (dequantized weights, residual
stream activations). Random draws take a ``numpy.random.Generator`` so every number is seeded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

VARIANCE_FRACTIONS = (0.80, 0.90, 0.95, 0.99)
EPS = 1e-12


# ---------------------------------------------------------------------------- statistics
def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two (n,) arrays; NaN when either is constant or n < 2."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.size < 2:
        return float("nan")
    xc, yc = x - x.mean(), y - y.mean()
    den = math.sqrt(float(xc @ xc) * float(yc @ yc))
    return float(xc @ yc / den) if den > 0 else float("nan")


def ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of (n,), ties sharing their average rank (as Spearman's rho needs)."""
    x = np.asarray(x)
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    starts = np.r_[0, np.flatnonzero(sorted_x[1:] != sorted_x[:-1]) + 1]
    ends = np.r_[starts[1:], x.size]
    avg = (starts + ends + 1) / 2.0  # mean of 1-based ranks starts+1 .. ends
    out = np.empty(x.size)
    out[order] = np.repeat(avg, ends - starts)
    return out


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho: Pearson correlation of the tie-averaged ranks."""
    return pearson(ranks(x), ranks(y))


def interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi): mean and the central ``level`` percentile interval of repeated estimates
    (one per seed); NaNs are dropped; all NaN when nothing is left."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return (float("nan"),) * 3
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(v, [tail, 100 - tail])
    return float(v.mean()), float(lo), float(hi)


# ---------------------------------------------------------------------------- cosines
def unit_rows(x: np.ndarray) -> np.ndarray:
    """(N, H) rows scaled to unit norm; all-zero rows stay zero (their cosines are 0)."""
    x = np.asarray(x, np.float64)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n > EPS, n, 1.0)


def pairwise_cosines(x: np.ndarray) -> np.ndarray:
    """Cosines of every unordered pair of rows of (N, H): (N(N-1)/2,), upper-triangle order."""
    u = unit_rows(x)
    return (u @ u.T)[np.triu_indices(len(u), k=1)]  # the N x N product: gathering pairs costs N² H


def cosine_summary(cos: np.ndarray) -> dict[str, float]:
    """Mean, std, median and 1/5/95/99th percentiles of a cosine sample."""
    cos = np.asarray(cos, np.float64)
    p1, p5, p50, p95, p99 = np.percentile(cos, [1, 5, 50, 95, 99])
    return {"cos_mean": float(cos.mean()), "cos_std": float(cos.std()), "cos_median": float(p50),
            "cos_p01": float(p1), "cos_p05": float(p5), "cos_p95": float(p95), "cos_p99": float(p99)}


def cosine_histogram(cos: np.ndarray, bins: int = 80) -> tuple[np.ndarray, np.ndarray]:
    """(edges (bins+1,), counts (bins,)) over [-1, 1]."""
    counts, edges = np.histogram(np.clip(cos, -1, 1), bins=bins, range=(-1.0, 1.0))
    return edges, counts


def sample_rows(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of min(n, k) distinct rows."""
    return np.sort(rng.choice(n, size=min(n, k), replace=False))


# ---------------------------------------------------------------------------- spectrum
def covariance_spectrum(x: np.ndarray, chunk: int = 16384) -> np.ndarray:
    """Eigenvalues of the (H, H) covariance of the rows of (N, H), descending, clipped at 0.

    Accumulated in float64 over row chunks, so a 151k x 4096 embedding needs only H x H memory."""
    n, h = x.shape
    mean = np.zeros(h)
    for a in range(0, n, chunk):
        mean += np.asarray(x[a : a + chunk], np.float64).sum(axis=0)
    mean /= n
    cov = np.zeros((h, h))
    for a in range(0, n, chunk):
        xc = np.asarray(x[a : a + chunk], np.float64) - mean
        cov += xc.T @ xc
    ev = np.linalg.eigvalsh(cov / max(n, 1))
    return np.clip(ev, 0, None)[::-1].copy()


def participation_ratio(eigvals: np.ndarray) -> float:
    """(sum λ)² / sum λ²: H for an isotropic spectrum of H equal values, 1 for rank one."""
    ev = np.asarray(eigvals, np.float64)
    sq = float((ev**2).sum())
    return float(ev.sum() ** 2 / sq) if sq > 0 else float("nan")


def dims_for_variance(eigvals: np.ndarray, fraction: float) -> int:
    """Smallest k whose top-k eigenvalues hold at least ``fraction`` of the total variance."""
    ev = np.sort(np.asarray(eigvals, np.float64))[::-1]
    cum = np.cumsum(ev) / ev.sum()
    return int(np.searchsorted(cum, fraction - 1e-12) + 1)


# ---------------------------------------------------------------------------- simplices
def cayley_menger_volume(points: np.ndarray) -> np.ndarray:
    """Volume of the k-simplex spanned by k+1 points, from pairwise distances alone.

    points: (..., k+1, H) → (...,). V² = (-1)^(k+1) det(CM) / (2^k (k!)²) with CM the bordered
    matrix of squared distances; degenerate (or numerically negative) V² gives 0.
    """
    p = np.asarray(points, np.float64)
    m = p.shape[-2]
    k = m - 1
    d2 = ((p[..., :, None, :] - p[..., None, :, :]) ** 2).sum(-1)  # (..., m, m)
    cm = np.ones(p.shape[:-2] + (m + 1, m + 1))
    cm[..., 0, 0] = 0.0
    cm[..., 1:, 1:] = d2
    v2 = (-1) ** (k + 1) * np.linalg.det(cm) / (2**k * math.factorial(k) ** 2)
    return np.sqrt(np.clip(v2, 0, None))


def gram_volume(points: np.ndarray) -> np.ndarray:
    """The same volume from edge vectors: sqrt(det(E Eᵀ)) / k!, E = (p_i - p_0) (..., k, H)."""
    p = np.asarray(points, np.float64)
    e = p[..., 1:, :] - p[..., :1, :]
    g = e @ np.swapaxes(e, -1, -2)
    k = e.shape[-2]
    return np.sqrt(np.clip(np.linalg.det(g), 0, None)) / math.factorial(k)


def regular_simplex_volume(k: int, edge: float = 1.0) -> float:
    """Closed form for a regular k-simplex: edge^k / k! · sqrt((k+1) / 2^k)."""
    return edge**k / math.factorial(k) * math.sqrt((k + 1) / 2**k)


@dataclass(frozen=True)
class VolumeStats:
    n_valid: int  # simplices with V > 0 (the CV is over these)
    mean: float
    cv: float  # std / mean


def volume_stats(vols: np.ndarray) -> VolumeStats:
    v = np.asarray(vols, np.float64)
    v = v[v > 0]
    if v.size < 2:
        return VolumeStats(int(v.size), float(v.mean()) if v.size else float("nan"), float("nan"))
    return VolumeStats(int(v.size), float(v.mean()), float(v.std() / v.mean()))


def simplex_volumes(x: np.ndarray, n_simplices: int, rng: np.random.Generator, vertices: int = 5) -> np.ndarray:
    """Volumes of ``n_simplices`` random simplices of ``vertices`` distinct rows of (N, H)."""
    idx = np.stack([rng.choice(len(x), size=vertices, replace=False) for _ in range(n_simplices)])
    return cayley_menger_volume(np.asarray(x)[idx].astype(np.float64))  # gather first: x may be large


def matched_gaussian(x: np.ndarray, n: int, rng: np.random.Generator,
                     total_variance: float | None = None) -> np.ndarray:
    """(n, H) isotropic Gaussian points with the same total variance as the rows of x (the same
    mean squared distance to their centroid), the null a simplex CV is compared against.
    ``total_variance``: the trace of x's covariance when already known (sum of its eigenvalues)."""
    h = x.shape[1]
    if total_variance is None:
        total_variance = float(np.asarray(x, np.float64).var(axis=0).sum())
    return rng.normal(0.0, math.sqrt(total_variance / h), size=(n, h))


# ---------------------------------------------------------------------------- structure
def distance_profile(vectors: np.ndarray) -> dict[int, float]:
    """For an ordered set (digits 0..9: (n, H)): mean cosine of the pairs at each |i - j|."""
    u = unit_rows(vectors)
    c = u @ u.T
    n = len(u)
    return {d: float(np.mean([c[i, i + d] for i in range(n - d)])) for d in range(1, n)}


def category_clustering(vectors: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per category (name → (n_c, H)): mean within-category cosine, mean cosine to the words of
    every other category, and lift = within − between. Categories of < 2 words give NaN within."""
    names = list(vectors)
    units = {k: unit_rows(v) for k, v in vectors.items()}
    out = {}
    for name in names:
        u = units[name]
        within = pairwise_cosines(u).mean() if len(u) >= 2 else float("nan")
        others = [units[o] for o in names if o != name and len(units[o])]
        between = float((u @ np.concatenate(others).T).mean()) if others and len(u) else float("nan")
        out[name] = {"within_cos": float(within), "between_cos": between, "lift": float(within - between)}
    return out


# ---------------------------------------------------------------------------- from a model
def token_embeddings(engine) -> np.ndarray:
    """(V, H) float32 dequantized token embedding matrix of an Engine."""
    return engine.weight("token_embd.weight").detach().float().cpu().numpy()


def single_tokens(tokenizer, words: Sequence[str], leading_space: bool = True) -> dict[str, int]:
    """word → token id for the words the tokenizer writes as one token (as ``" word"`` mid-sentence
    when ``leading_space``, else bare); the others are left out."""
    out = {}
    for w in words:
        ids = tokenizer.encode((" " if leading_space else "") + w, parse_special=False)
        if len(ids) == 1:
            out[w] = ids[0]
    return out


def hidden_states(engine, seqs: Sequence[Sequence[int]], batch_size: int = 32) -> list[list[np.ndarray]]:
    """Residual stream of every layer for token sequences (:meth:`Engine.hidden_states` as NumPy).

    Returns states[l][b] of shape (len(seqs[b]), H), float32, for l = 0 (embeddings, the first
    block's input) .. n_layer (the last block's output, before the final norm); padding removed.
    """
    return [[h.numpy() for h in per_seq] for per_seq in engine.hidden_states(seqs, batch_size)]


def layer_evolution(states: list[list[np.ndarray]]) -> list[dict[str, float]]:
    """Per layer: mean/std of token norms over every real token, and mean/std over sentences of
    the mean pairwise cosine between a sentence's positions (sentences of one token skipped)."""
    rows = []
    for layer, per_seq in enumerate(states):
        norms = np.concatenate([np.linalg.norm(h, axis=1) for h in per_seq])
        coss = [pairwise_cosines(h).mean() for h in per_seq if len(h) > 1]
        rows.append({"layer": layer, "n_tokens": int(norms.size), "norm_mean": float(norms.mean()),
                     "norm_std": float(norms.std()), "cos_mean": float(np.mean(coss)) if coss else float("nan"),
                     "cos_std": float(np.std(coss)) if coss else float("nan")})
    return rows
