"""One model file's terrain: every table of :data:`TABLES` from an Engine.

:func:`profile` is what rule ``terrain_model`` runs; :class:`TerrainSettings` holds the
``config["terrain"]`` keys it reads (defaults here, so a config without the block still runs).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import polars as pl

from neagari.analysis.terrain import measures as tg
from neagari.analysis.terrain import wordnet_alignment as tw
from neagari.analysis.terrain.schemas import (TerrainCategories, TerrainCosineHistogram, TerrainDigits,
                                              TerrainEmbedding, TerrainLayers, TerrainSimplex, TerrainSpectrum,
                                              WordnetBands, WordnetHypernym, WordnetSeeds, WordnetSummary,
                                              WordnetWords)
from neagari.tables import polars_schema

# Seed 003's categories, as " word" tokens where the tokenizer has them; the corpus's own pools
# (colors, animals) make several of them single tokens of the embedded model too.
CATEGORIES = {
    "animals": ["cat", "dog", "bird", "fish", "horse", "mouse", "bear", "wolf", "deer", "fox", "lion", "tiger",
                "snake", "whale", "frog", "rabbit", "monkey", "elephant"],
    "colors": ["red", "blue", "green", "yellow", "black", "white", "orange", "purple", "brown", "pink", "amber"],
    "numbers": ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"],
    "body": ["head", "hand", "eye", "foot", "arm", "leg", "face", "mouth", "heart", "brain"],
    "food": ["bread", "meat", "rice", "milk", "salt", "sugar", "cheese", "fruit", "water", "lemon"],
    "emotions": ["happy", "sad", "angry", "fear", "love", "hate", "joy", "hope", "pain", "calm"],
    "actions": ["run", "walk", "jump", "fly", "swim", "eat", "sleep", "talk", "think", "write"],
    "time": ["day", "night", "year", "month", "week", "hour", "morning", "evening", "today", "tomorrow"],
}
# The layer-evolution sentence set: plain text in the styles the corpus and the paper probe.
SENTENCES = (
    "The cat sat on the mat.",
    "Red and blue make purple when mixed together.",
    "347 + 589 = 936",
    "def add(a, b):\n    return a + b",
    "Repeat the line with the first word in uppercase.",
    "The capital of the country is a city by the river.",
    "A dog is a kind of canine.",
    "She quickly ran to the store before it closed.",
    "Three plus four equals seven.",
    "The function returns a sorted list of integers.",
    "Call the weather tool with the city name.",
    "Mount Everest is the tallest mountain in the world.",
)


@dataclass(frozen=True)
class TerrainSettings:
    seed: int = 0
    cosine_sample: int = 4000  # tokens whose pairwise cosines are summarized
    histogram_bins: int = 80
    simplices: int = 1000  # 5-point simplices per seed
    simplex_seeds: int = 10
    batch_size: int = 32
    word_context: str = "The"  # text before each WordNet word when reading hidden states
    max_words: int = 600
    wordnet_seeds: int = 50
    pairs_per_seed: int = 5000
    max_depth: int = 8
    layers: tuple[int, ...] | None = None  # residual-stream layers the alignment reads; None: all

    @classmethod
    def from_config(cls, block: dict | None) -> "TerrainSettings":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (block or {}).items() if k in names})


# Every table profile returns, by name: the name is the table's file stem and the terrain rules'
# output key, so the rules that write them all loop over these pairs.
TABLES = {
    "embedding": TerrainEmbedding, "spectrum": TerrainSpectrum, "cosine_hist": TerrainCosineHistogram,
    "simplex": TerrainSimplex, "digits": TerrainDigits, "categories": TerrainCategories, "layers": TerrainLayers,
    "wordnet_words": WordnetWords, "wordnet_seeds": WordnetSeeds, "wordnet_summary": WordnetSummary,
    "wordnet_bands": WordnetBands, "wordnet_hypernym": WordnetHypernym,
}


def _keyed(schema, rows: list[dict], model: str, label: str) -> pl.DataFrame:
    """Rows of one table with the model and label keys, typed by its ``schema`` (an all-null
    column stays Float64, no row gives an empty table of the right columns)."""
    rows = [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()} for r in rows]
    return pl.DataFrame([{"model": model, "label": label, **r} for r in rows], schema=polars_schema(schema))


def embedding_tables(E: np.ndarray, tokenizer, s: TerrainSettings, model: str, label: str) -> dict[str, pl.DataFrame]:
    """Token-embedding geometry of (V, H) ``E``: summary, spectrum, histograms, simplices,
    digits, categories."""
    rng = np.random.default_rng([s.seed, 3])
    V, H = E.shape
    norms = np.linalg.norm(E, axis=1)
    live = np.flatnonzero(norms > tg.EPS)
    sample = E[live[tg.sample_rows(live.size, s.cosine_sample, rng)]]
    cos = tg.pairwise_cosines(sample)
    ev = tg.covariance_spectrum(E)
    gauss = tg.matched_gaussian(E, len(sample), rng, float(ev.sum()))
    digits = tg.single_tokens(tokenizer, [str(d) for d in range(10)], leading_space=False)
    row = {"vocab": V, "hidden": H, "zero_rows": int(V - live.size), "norm_mean": float(norms.mean()),
           "norm_std": float(norms.std()), "norm_min": float(norms.min()), "norm_max": float(norms.max()),
           "cos_tokens": len(sample), **tg.cosine_summary(cos), "total_variance": float(ev.sum()),
           "top_eigen_share": float(ev[0] / ev.sum()), "participation_ratio": tg.participation_ratio(ev),
           "pr_per_dim": tg.participation_ratio(ev) / H,
           **{f"dims_{round(f * 100)}": tg.dims_for_variance(ev, f) for f in tg.VARIANCE_FRACTIONS},
           "digit_tokens": len(digits), "digit_distance_corr": None, "digit_adjacent_cos": None,
           "digit_nonadjacent_cos": None}
    digit_rows = []
    if len(digits) == 10:
        vecs = E[[digits[str(d)] for d in range(10)]]
        prof = tg.distance_profile(vecs)
        u = tg.unit_rows(vecs)
        i, j = np.triu_indices(10, k=1)
        row.update(digit_distance_corr=tg.pearson(np.abs(i - j), (u @ u.T)[i, j]), digit_adjacent_cos=prof[1],
                   digit_nonadjacent_cos=float(np.mean((u @ u.T)[i, j][np.abs(i - j) > 1])))
        digit_rows = [{"distance": d, "cos_mean": c} for d, c in prof.items()]
    hist = []
    for source, c in (("embedding", cos), ("gaussian", tg.pairwise_cosines(gauss))):
        edges, counts = tg.cosine_histogram(c, s.histogram_bins)
        hist += [{"source": source, "bin_lo": float(edges[k]), "bin_hi": float(edges[k + 1]), "count": int(counts[k])}
                 for k in range(len(counts))]
    simplex = []
    E_live = E[live] if live.size < V else E
    for seed in range(s.simplex_seeds):
        r = np.random.default_rng([s.seed, 4, seed])
        pts = {"embedding": E_live, "gaussian": tg.matched_gaussian(E, 5 * s.simplices, r, float(ev.sum()))}
        for source, X in pts.items():
            st = tg.volume_stats(tg.simplex_volumes(X, s.simplices, r))
            simplex.append({"seed": seed, "source": source, "simplices": s.simplices, "n_valid": st.n_valid,
                            "volume_mean": st.mean, "volume_cv": None if np.isnan(st.cv) else st.cv})
    cats = []
    held = {c: tg.single_tokens(tokenizer, ws) for c, ws in CATEGORIES.items()}
    usable = {c: E[list(t.values())] for c, t in held.items() if len(t) >= 2}
    stats = tg.category_clustering(usable) if len(usable) >= 2 else {}
    for c, t in held.items():
        st = stats.get(c, {})
        cats.append({"category": c, "n_words": len(t), "words": " ".join(t), "within_cos": st.get("within_cos"),
                     "between_cos": st.get("between_cos"), "lift": st.get("lift")})
    cum = np.cumsum(ev) / ev.sum()
    spectrum = [{"rank": k + 1, "eigenvalue": float(ev[k]), "cumulative_share": float(min(cum[k], 1.0))}
                for k in range(H)]
    return {"embedding": _keyed(TerrainEmbedding, [row], model, label),
            "spectrum": _keyed(TerrainSpectrum, spectrum, model, label),
            "cosine_hist": _keyed(TerrainCosineHistogram, hist, model, label),
            "simplex": _keyed(TerrainSimplex, simplex, model, label),
            "digits": _keyed(TerrainDigits, digit_rows, model, label),
            "categories": _keyed(TerrainCategories, cats, model, label)}


def word_representations(engine, words: tw.WordSet, context: str, batch_size: int) -> list[np.ndarray]:
    """Per layer 0..n_layer: (n_words, H) residual stream at each word's token after ``context``."""
    prefix = engine.tokenizer.encode(context, parse_special=False) if context else []
    states = tg.hidden_states(engine, [[*prefix, t] for t in words.token_ids], batch_size)
    return [np.stack([h[-1] for h in per_seq]) for per_seq in states]


def wordnet_tables(engine, wn, s: TerrainSettings, model: str, label: str) -> dict[str, pl.DataFrame]:
    """WordNet alignment at every layer (0 = token embedding)."""
    words = tw.match_words(wn, engine.tokenizer, s.max_words, s.seed)
    listed = [{"word": w, "token_id": t, "synset": sy.name(), "lexname": sy.lexname()}
              for w, t, sy in zip(words.words, words.token_ids, words.synsets)]
    out = {"wordnet_words": _keyed(WordnetWords, listed, model, label)}
    if len(words) < 3:
        for name in ("wordnet_seeds", "wordnet_summary", "wordnet_bands", "wordnet_hypernym"):
            out[name] = _keyed(TABLES[name], [], model, label)
        return out
    sim = tw.path_similarity_matrix(words.synsets)
    hyp = tw.hypernym_pairs(words.synsets, s.max_depth)
    seeds, summary, bands, decay = [], [], [], []
    for layer, reps in enumerate(word_representations(engine, words, s.word_context, s.batch_size)):
        if s.layers is not None and layer not in s.layers:
            continue
        runs = tw.alignment_runs(reps, sim, s.wordnet_seeds, s.pairs_per_seed, s.seed)
        keys = ("n_pairs", "pearson", "spearman", "null_pearson", "null_spearman", "cos_mean")
        seeds += [{"layer": layer, "seed": r["seed"], **{k: r[k] for k in keys}} for r in runs]
        for stat, (m, lo, hi) in tw.summarize(runs, ("pearson", "spearman", "null_pearson", "null_spearman")).items():
            summary.append({"layer": layer, "statistic": stat, "mean": m, "ci_lo": lo, "ci_hi": hi,
                            "seeds": s.wordnet_seeds, "words": len(words)})
        for b, (lo_b, hi_b) in enumerate(tw.BANDS):
            m, lo, hi = tg.interval([r[f"band{b}"] for r in runs])
            bands.append({"layer": layer, "band_lo": lo_b, "band_hi": hi_b,
                          "pairs_per_seed": float(np.mean([r[f"band{b}_n"] for r in runs])),
                          "cos_mean": m, "ci_lo": lo, "ci_hi": hi})
        hr = tw.hypernym_runs(reps, hyp, s.wordnet_seeds, s.seed)
        for d in sorted({r["depth"] for r in hr}):
            m, lo, hi = tg.interval([r["cos_mean"] for r in hr if r["depth"] == d])
            decay.append({"layer": layer, "depth": d, "n_pairs": sum(1 for p in hyp if p[2] == d),
                          "cos_mean": m, "ci_lo": lo, "ci_hi": hi})
    out.update(wordnet_seeds=_keyed(WordnetSeeds, seeds, model, label),
               wordnet_summary=_keyed(WordnetSummary, summary, model, label),
               wordnet_bands=_keyed(WordnetBands, bands, model, label),
               wordnet_hypernym=_keyed(WordnetHypernym, decay, model, label))
    return out


def profile(engine, wn, settings: TerrainSettings, model: str, label: str,
            sentences: tuple[str, ...] = SENTENCES) -> dict[str, pl.DataFrame]:
    """Every terrain table of one model file, keyed by its name in :data:`TABLES`."""
    E = tg.token_embeddings(engine)
    out = embedding_tables(E, engine.tokenizer, settings, model, label)
    seqs = [engine.tokenizer.encode(t, parse_special=False) for t in sentences]
    layers = tg.layer_evolution(tg.hidden_states(engine, seqs, settings.batch_size))
    out["layers"] = _keyed(TerrainLayers, layers, model, label)
    out.update(wordnet_tables(engine, wn, settings, model, label))
    return out


