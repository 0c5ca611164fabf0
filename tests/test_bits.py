"""The bits-per-weight comparison (§3.3, §8) on hand-made audit tables."""

from __future__ import annotations

import polars as pl
import pytest

from neagari.engine import q1, q2
from neagari.report.bits import bits_per_weight, bits_verdict, comparison_tables, mlp_format, model_rows, training_of
from neagari.stats import wilson_interval


def acceptance(*runs):
    return pl.DataFrame([{"run": r, "iterations": n, "accepted": k} for r, n, k in runs])


def flips(*rows):
    return pl.DataFrame([{"patch": p, "mean_abs_delta": d, "changes_target_sign": c} for p, d, c in rows],
                        schema={"patch": pl.String, "mean_abs_delta": pl.Float64, "changes_target_sign": pl.Boolean})


NULL = {"trained_accepted": 150, "trained_iterations": 500, "null_accepted": 100, "null_iterations": 500}


def test_bits_per_weight_of_the_formats():
    assert bits_per_weight(q1) == 1.125 and bits_per_weight(q2) == 2.25  # 18 bytes per 128 and per 64 weights


def test_format_and_training_of_a_model():
    types = {"blk.0.ffn_up.weight": 42, "blk.0.ffn_gate.weight": 42, "blk.0.ffn_down.weight": 42,
             "blk.0.attn_q.weight": 41, "blk.0.attn_norm.weight": 0}
    assert mlp_format(types) == "Q2_0"
    with pytest.raises(ValueError, match="not of one block format"):
        mlp_format({**types, "blk.1.ffn_up.weight": 41})
    assert training_of({"source": "shipped", "variant": "qat"}) == "QAT"
    assert training_of({"source": "shipped", "variant": "ternary"}) == "QAT"
    assert training_of({"source": "shipped", "variant": "fp"}) == "post hoc"
    assert training_of({"source": "posthoc", "posthoc": {"from": "f", "format": "Q2_0"}}) == "post hoc"


def test_model_rows_count_pass1_only():
    acc = acceptance(("pass1/editing", 200, 50), ("pass1/math", 100, 10), ("pass2/editing", 100, 90),
                     ("nullbase/trained-s0", 500, 150))
    fl = flips(("pass1/editing", 0.5, False), ("pass1/editing", 1.5, True), ("pass1/math", 0.25, False),
               ("pass2/editing", 9.0, True))
    row, domains = model_rows("m", "Q1_0", "QAT", acc, NULL, fl)
    assert (row["iterations"], row["accepted"], row["rate"]) == (300, 60, 0.2)
    assert (row["ci_lo"], row["ci_hi"]) == wilson_interval(60, 300)
    assert row["bits_per_weight"] == 1.125
    assert (row["flips"], row["crossing_flips"], row["median_abs_delta"]) == (3, 1, 0.5)
    assert row["crossing_share"] == pytest.approx(1 / 3)
    assert row["null_gap_pp"] == pytest.approx(10.0)  # 30% vs 20%
    assert row["null_gap_lo_pp"] < 10 < row["null_gap_hi_pp"]
    assert [(d["domain"], d["rate"]) for d in domains] == [("editing", 0.25), ("math", 0.1)]
    row, _ = model_rows("m", "Q2_0", "post hoc", acc, None, flips())
    assert row["null_gap_pp"] is None and row["flips"] == 0 and row["crossing_share"] is None


def _table(one_qat, tern_qat, one_ph=None, tern_ph=None):
    rows = []
    for name, fmt, training, counts in (("a", "Q1_0", "QAT", one_qat), ("b", "Q2_0", "QAT", tern_qat),
                                         ("c", "Q1_0", "post hoc", one_ph), ("d", "Q2_0", "post hoc", tern_ph)):
        if counts:
            rows.append(model_rows(name, fmt, training, acceptance(("pass1/editing", counts[1], counts[0])), None,
                                   flips()))
    return comparison_tables(rows)[0]


def test_verdict_rules():
    # 30% vs 10% of 1,000: the difference's interval is far above 0
    v = bits_verdict(_table((300, 1000), (100, 1000)))
    assert v["verdict"] == "confirmed" and len(v["pairs"]) == 1
    assert v["pairs"][0]["difference_pp"] == pytest.approx(20.0) and v["pairs"][0]["lo_pp"] > 0
    # the post-hoc pair (10% vs 9% of 500) holds 0: not every pair agrees
    assert bits_verdict(_table((300, 1000), (100, 1000), (50, 500), (45, 500)))["verdict"] == "inconclusive"
    assert bits_verdict(_table((100, 1000), (300, 1000), (10, 500), (100, 500)))["verdict"] == "refuted"
    assert bits_verdict(_table((100, 1000), None, (10, 500), None))["verdict"] == "not measured"


def test_comparison_table_is_sorted_by_bits_and_validated():
    table = _table((300, 1000), (100, 1000), (50, 500), (45, 500))
    assert table["bits_per_weight"].to_list() == [1.125, 1.125, 2.25, 2.25]
    assert table["training"].to_list() == ["QAT", "post hoc", "QAT", "post hoc"]
    bad = model_rows("x", "Q1_0", "random", acceptance(("pass1/editing", 10, 1)), None, flips())
    with pytest.raises(Exception, match="training"):
        comparison_tables([bad])


def test_smoke_run_sets_the_four_members_side_by_side(smoke_run):
    """The smoke workflow searches a 1-bit QAT, a 1-bit post-hoc, a ternary QAT and a ternary
    post-hoc member (search.comparison.models); the paper's table gives each its MLP format from
    its file and its training from the config, and each ternary null redrew its codes."""
    from neagari.engine.gguf_io import GGUFFile
    from neagari.engine.quants import block_format

    for name, fmt in (("tiny-qat", "Q1_0"), ("tiny-fp", "Q1_0"), ("tiny-ternary", "Q2_0"), ("tiny-fp-q2", "Q2_0")):
        f = GGUFFile(smoke_run / f"results/models/{name}.gguf")
        assert block_format(f.tensors["blk.0.ffn_up.weight"].ggml_type).NAME == fmt
    paper = (smoke_run / "results/paper/paper.md").read_text()
    section = paper[paper.index("## Bits per weight"):]
    section = section[: section.index("\n## ")]
    rows = {}
    for line in section.splitlines():  # the first table: one row per model
        if line.startswith("| tiny-"):
            rows.setdefault(line.split(" | ")[0].strip("| "), line.split(" | ")[1:4])
    assert rows["tiny-qat"] == ["Q1_0", "QAT", "1.125"] and rows["tiny-fp"] == ["Q1_0", "post hoc", "1.125"]
    assert rows["tiny-ternary"] == ["Q2_0", "QAT", "2.25"] and rows["tiny-fp-q2"] == ["Q2_0", "post hoc", "2.25"]
    assert "QAT (`tiny-qat` − `tiny-ternary`)" in section and "post hoc (`tiny-fp` − `tiny-fp-q2`)" in section
    for name in ("tiny-ternary", "tiny-fp-q2"):
        log = (smoke_run / f"logs/models/null/{name}-s0.log").read_text()
        assert "mode uniform: zero share" in log
