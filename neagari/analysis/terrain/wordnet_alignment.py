"""WordNet relational alignment: does a model's geometry follow WordNet's noun taxonomy?

Words: WordNet 3.0 noun lemmas (lowercase letters, 3+ of them) that the model's tokenizer holds
as ONE token written with a leading space (``" dog"``, the form a noun takes mid-sentence);
each word stands for its first (most frequent) noun sense. For every pair of words we compare
WordNet path similarity 1 / (1 + shortest is-a path length) with the cosine of the two words'
representations: the token embedding row (layer 0) and the residual stream at the word's position
after each block, the word following a fixed context (``"The"`` by default).

Measures, each repeated over seeds that redraw the pair sample, reported as mean and 95%
percentile interval over seeds: Pearson and Spearman correlation (plus the same after shuffling
which vector belongs to which word: the no-alignment null), mean cosine per path-similarity band,
and hypernym decay (mean cosine between a word and an ancestor word d is-a steps above it).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from neagari.analysis.terrain.measures import interval, pearson, spearman, unit_rows
from neagari.workflow.wordnet import in_order

# Path-similarity bands (lo, hi]; 1/(1+d): 0.5 is one is-a step apart, 0.1 is nine.
BANDS = ((0.25, 1.0), (0.125, 0.25), (0.1, 0.125), (0.0667, 0.1), (0.0, 0.0667))


@dataclass(frozen=True)
class WordSet:
    """Words the tokenizer holds as single tokens, with their token ids and first noun synsets."""

    words: tuple[str, ...]
    token_ids: tuple[int, ...]
    synsets: tuple  # nltk Synset, one per word

    def __len__(self) -> int:
        return len(self.words)


def match_words(wn, tokenizer, max_words: int | None = None, seed: int = 0, min_len: int = 3) -> WordSet:
    """The WordNet nouns among the tokenizer's ``" word"`` tokens (sorted; a seeded subsample of
    ``max_words`` when there are more)."""
    lemmas = set(wn.all_lemma_names("n"))
    found = {}
    for i in range(tokenizer.vocab_size):
        piece = tokenizer.token_to_piece(i)
        w = piece[1:]
        if piece[:1] != " " or len(w) < min_len or not (w.isascii() and w.isalpha() and w.islower()):
            continue
        if w in lemmas and tokenizer.encode(piece, parse_special=False) == [i]:
            senses = [s for s in wn.synsets(w, "n") if w in s.lemma_names()]
            if senses:
                found[w] = (i, senses[0])
    words = sorted(found)
    if max_words is not None and len(words) > max_words:
        keep = np.random.default_rng(seed).choice(len(words), size=max_words, replace=False)
        words = [words[k] for k in sorted(keep)]
    return WordSet(tuple(words), tuple(found[w][0] for w in words), tuple(found[w][1] for w in words))


def ancestor_distances(synset) -> dict:
    """Every hypernym (and instance hypernym) ancestor of a synset → fewest is-a steps to it
    (the synset itself at 0): the breadth-first search nltk's path similarity runs."""
    dist, queue = {}, deque([(synset, 0)])
    while queue:
        s, d = queue.popleft()
        if s in dist:
            continue
        dist[s] = d
        queue.extend((h, d + 1) for h in in_order(s.hypernyms() + s.instance_hypernyms()))
    return dist


def path_similarity_matrix(synsets: Sequence) -> np.ndarray:
    """(n, n) path similarity 1/(1 + d) of noun synsets, d the shortest path through a common
    ancestor; 0 for pairs without one; 1 on the diagonal. Equals nltk's ``path_similarity``."""
    anc = [ancestor_distances(s) for s in synsets]
    n = len(synsets)
    sim = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            a, b = (anc[i], anc[j]) if len(anc[i]) <= len(anc[j]) else (anc[j], anc[i])
            d = min((da + b[s] for s, da in a.items() if s in b), default=None)
            sim[i, j] = sim[j, i] = 0.0 if d is None else 1.0 / (1 + d)
    return sim


def hypernym_pairs(synsets: Sequence, max_depth: int = 8) -> list[tuple[int, int, int]]:
    """(word i, ancestor word j, depth) for every pair where j's synset is an is-a ancestor of
    i's, ``depth`` steps up (1 = direct hypernym), up to ``max_depth``."""
    index = {s: k for k, s in enumerate(synsets)}
    out = []
    for i, s in enumerate(synsets):
        for anc, d in ancestor_distances(s).items():
            j = index.get(anc)
            if j is not None and j != i and 1 <= d <= max_depth:
                out.append((i, j, d))
    return out


def _band_index(sim: np.ndarray) -> np.ndarray:
    out = np.full(sim.shape, -1)
    for b, (lo, hi) in enumerate(BANDS):
        out[(sim > lo) & (sim <= hi)] = b
    return out


def alignment_runs(reps: np.ndarray, sim: np.ndarray, n_seeds: int, n_pairs: int, seed: int = 0) -> list[dict]:
    """One row per seed: Pearson and Spearman of path similarity vs cosine over ``n_pairs`` word
    pairs drawn with replacement from all distinct pairs, the same with word↔vector assignment
    shuffled (null_*), and the mean cosine per band of :data:`BANDS` (``band{b}``, NaN if empty).

    reps: (n, H) one representation per word, rows in the order of ``sim`` (n, n).
    """
    n = len(reps)
    u = unit_rows(reps)
    cos = u @ u.T
    iu, ju = np.triu_indices(n, k=1)
    bands = _band_index(sim[iu, ju])
    rows = []
    for s in range(n_seeds):
        rng = np.random.default_rng([seed, s])
        pick = rng.integers(0, iu.size, size=n_pairs)
        i, j = iu[pick], ju[pick]
        wn_sim, c = sim[i, j], cos[i, j]
        perm = rng.permutation(n)
        c_null = cos[perm[i], perm[j]]
        row = {"seed": s, "n_pairs": int(n_pairs), "pearson": pearson(wn_sim, c), "spearman": spearman(wn_sim, c),
               "null_pearson": pearson(wn_sim, c_null), "null_spearman": spearman(wn_sim, c_null),
               "cos_mean": float(c.mean())}
        for b in range(len(BANDS)):
            m = bands[pick] == b
            row[f"band{b}"] = float(c[m].mean()) if m.any() else float("nan")
            row[f"band{b}_n"] = int(m.sum())
        rows.append(row)
    return rows


def hypernym_runs(reps: np.ndarray, pairs: list[tuple[int, int, int]], n_seeds: int, seed: int = 0) -> list[dict]:
    """Per seed (a bootstrap resample of the ancestor pairs) and depth: mean cosine between a
    word and its ancestor word at that depth. Rows: seed, depth, n_pairs, cos_mean."""
    if not pairs:
        return []
    u = unit_rows(reps)
    arr = np.asarray(pairs)
    cos = np.einsum("nh,nh->n", u[arr[:, 0]], u[arr[:, 1]])
    rows = []
    for s in range(n_seeds):
        rng = np.random.default_rng([seed, s, 1])
        pick = rng.integers(0, len(arr), size=len(arr))
        for d in np.unique(arr[:, 2]):
            m = arr[pick, 2] == d
            if m.any():
                rows.append({"seed": s, "depth": int(d), "n_pairs": int(m.sum()),
                             "cos_mean": float(cos[pick][m].mean())})
    return rows


def summarize(rows: list[dict], keys: Sequence[str], level: float = 0.95) -> dict[str, tuple[float, float, float]]:
    """key → (mean, lo, hi) over the seeds' rows (see :func:`neagari.analysis.terrain.measures.interval`)."""
    return {k: interval([r[k] for r in rows], level) for k in keys}
