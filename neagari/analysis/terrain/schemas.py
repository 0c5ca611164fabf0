"""pandera models of the terrain tables (:mod:`neagari.analysis.terrain.profile`; its ``TABLES`` pairs
each table's name with its model for the rules that write them all).

Every table carries ``model`` (the config's model name) and ``label`` (``base``, ``pass1-editing``,
``null-s0``, ...: which GGUF of that model). Cosines are dimensionless in [-1, 1]; norms, variances
and volumes are in the units of the representation; ``layer`` 0 is the token embedding and layer
l > 0 the residual stream after block l - 1 (the last one before the final norm). Intervals are
central 95% percentile intervals over seeds.
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

_COS = {"ge": -1.0 - 1e-6, "le": 1.0 + 1e-6}


class _Keyed(pa.DataFrameModel):
    """Columns every terrain table opens with; strict (no unlisted columns) for all of them."""

    model: str
    label: str

    class Config:
        strict = True


class TerrainEmbedding(_Keyed):
    """One row per model file: token-embedding geometry."""

    vocab: int = pa.Field(ge=1)
    hidden: int = pa.Field(ge=1)
    zero_rows: int = pa.Field(ge=0)
    norm_mean: float = pa.Field(ge=0)
    norm_std: float = pa.Field(ge=0)
    norm_min: float = pa.Field(ge=0)
    norm_max: float = pa.Field(ge=0)
    cos_tokens: int = pa.Field(ge=2)  # tokens sampled for the pairwise cosines
    cos_mean: float = pa.Field(**_COS)
    cos_std: float = pa.Field(ge=0)
    cos_median: float = pa.Field(**_COS)
    cos_p01: float = pa.Field(**_COS)
    cos_p05: float = pa.Field(**_COS)
    cos_p95: float = pa.Field(**_COS)
    cos_p99: float = pa.Field(**_COS)
    total_variance: float = pa.Field(ge=0)
    top_eigen_share: float = pa.Field(ge=0, le=1)
    participation_ratio: float = pa.Field(ge=1 - 1e-9)
    pr_per_dim: float = pa.Field(gt=0, le=1 + 1e-9)
    dims_80: int = pa.Field(ge=1)
    dims_90: int = pa.Field(ge=1)
    dims_95: int = pa.Field(ge=1)
    dims_99: int = pa.Field(ge=1)
    digit_tokens: int = pa.Field(ge=0, le=10)  # digits 0-9 held as single tokens
    digit_distance_corr: float = pa.Field(nullable=True)  # Pearson(|i - j|, cosine)
    digit_adjacent_cos: float = pa.Field(nullable=True)
    digit_nonadjacent_cos: float = pa.Field(nullable=True)


    @pa.dataframe_check
    def dims_ordered(cls, data) -> pl.LazyFrame:
        d = [pl.col(c) for c in ("dims_80", "dims_90", "dims_95", "dims_99", "hidden")]
        return data.lazyframe.select((d[0] <= d[1]) & (d[1] <= d[2]) & (d[2] <= d[3]) & (d[3] <= d[4]))


class TerrainSpectrum(_Keyed):
    """Eigenvalues of the token-embedding covariance, descending."""

    rank: int = pa.Field(ge=1)
    eigenvalue: float = pa.Field(ge=0)
    cumulative_share: float = pa.Field(ge=0, le=1 + 1e-9)

    class Config:
        unique = ["model", "label", "rank"]


class TerrainCosineHistogram(_Keyed):
    """Pairwise-cosine histogram of sampled tokens and of matched isotropic Gaussian points."""

    source: str = pa.Field(isin=["embedding", "gaussian"])
    bin_lo: float = pa.Field(ge=-1, le=1)
    bin_hi: float = pa.Field(ge=-1, le=1)
    count: int = pa.Field(ge=0)


class TerrainSimplex(_Keyed):
    """Per seed and source: 4-simplex (5 random points) Cayley-Menger volumes, mean and CV."""

    seed: int = pa.Field(ge=0)
    source: str = pa.Field(isin=["embedding", "gaussian"])
    simplices: int = pa.Field(ge=1)
    n_valid: int = pa.Field(ge=0)  # volume > 0
    volume_mean: float = pa.Field(ge=0, nullable=True)
    volume_cv: float = pa.Field(ge=0, nullable=True)

    class Config:
        unique = ["model", "label", "seed", "source"]


class TerrainDigits(_Keyed):
    """Digit manifold: mean cosine of the digit tokens i, j at each |i - j|."""

    distance: int = pa.Field(ge=1, le=9)
    cos_mean: float = pa.Field(**_COS)


class TerrainCategories(_Keyed):
    """Semantic categories held as single ``" word"`` tokens: within vs between cosine."""

    category: str
    n_words: int = pa.Field(ge=0)
    words: str
    within_cos: float = pa.Field(nullable=True)
    between_cos: float = pa.Field(nullable=True)
    lift: float = pa.Field(nullable=True)


class TerrainLayers(_Keyed):
    """Residual stream per layer over the sentence set: token norms and within-sentence cosines."""

    layer: int = pa.Field(ge=0)
    n_tokens: int = pa.Field(ge=1)
    norm_mean: float = pa.Field(ge=0)
    norm_std: float = pa.Field(ge=0)
    cos_mean: float = pa.Field(nullable=True)
    cos_std: float = pa.Field(ge=0, nullable=True)

    class Config:
        unique = ["model", "label", "layer"]


class WordnetWords(_Keyed):
    """The words the alignment uses: WordNet nouns held as one ``" word"`` token."""

    word: str
    token_id: int = pa.Field(ge=0)
    synset: str  # first noun sense, e.g. dog.n.01
    lexname: str  # WordNet lexicographer file, e.g. noun.animal


class WordnetSeeds(_Keyed):
    """Per representation layer and seed: path similarity vs cosine over a pair sample."""

    layer: int = pa.Field(ge=0)
    seed: int = pa.Field(ge=0)
    n_pairs: int = pa.Field(ge=1)
    pearson: float = pa.Field(nullable=True)
    spearman: float = pa.Field(nullable=True)
    null_pearson: float = pa.Field(nullable=True)  # word-to-vector assignment shuffled
    null_spearman: float = pa.Field(nullable=True)
    cos_mean: float

    class Config:
        unique = ["model", "label", "layer", "seed"]


class WordnetSummary(_Keyed):
    """Per layer and statistic (pearson, spearman, null_pearson, null_spearman): mean and 95%
    interval over seeds."""

    layer: int = pa.Field(ge=0)
    statistic: str = pa.Field(isin=["pearson", "spearman", "null_pearson", "null_spearman"])
    mean: float = pa.Field(nullable=True)
    ci_lo: float = pa.Field(nullable=True)
    ci_hi: float = pa.Field(nullable=True)
    seeds: int = pa.Field(ge=1)
    words: int = pa.Field(ge=0)

    class Config:
        unique = ["model", "label", "layer", "statistic"]


class WordnetBands(_Keyed):
    """Mean cosine of the word pairs whose path similarity lies in (band_lo, band_hi]."""

    layer: int = pa.Field(ge=0)
    band_lo: float = pa.Field(ge=0, le=1)
    band_hi: float = pa.Field(ge=0, le=1)
    pairs_per_seed: float = pa.Field(ge=0)
    cos_mean: float = pa.Field(nullable=True)
    ci_lo: float = pa.Field(nullable=True)
    ci_hi: float = pa.Field(nullable=True)


class WordnetHypernym(_Keyed):
    """Hypernym decay: mean cosine between a word and its ancestor word ``depth`` is-a steps up."""

    layer: int = pa.Field(ge=0)
    depth: int = pa.Field(ge=1)
    n_pairs: int = pa.Field(ge=1)
    cos_mean: float = pa.Field(nullable=True)
    ci_lo: float = pa.Field(nullable=True)
    ci_hi: float = pa.Field(nullable=True)
