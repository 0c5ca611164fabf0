"""neagari.analysis.audits on small hand-made flip records whose answers are worked out by hand below."""

from __future__ import annotations

import json

import polars as pl
import pytest

from neagari.analysis import audits
from neagari.analysis import schemas
from neagari.search.patch import Move, read_patch


def _flip(it, tb, ta, cb, ca, names=("A", "B", "A"), typ=None, layer=1, proj="ffn_up.weight", group=0):
    """A flip record; target names repeat on purpose (upstream files do this)."""
    rec = {"layer": layer, "proj": proj, "group": group, "iteration": it,
           "target_gaps_before": [[n, g] for n, g in zip(names, tb)],
           "target_gaps_after": [[n, g] for n, g in zip(names, ta)],
           "control_gaps_before": [["C", g] for g in cb], "control_gaps_after": [["C", g] for g in ca]}
    if typ == "scale":
        rec.update(type="scale", bit=5)
    elif typ == "group":
        rec["type"] = "group"
    return rec


# Three flips on targets (A, B, A) and one control C. Per-flip target deltas (after - before):
#   flip 0, iter 2: [+0.1, +0.1, +0.05]           no crossing;          control -0.1
#   flip 1, iter 5: [ 0.0, -0.4, +0.1]            B breaks, 2nd A fixes; control +0.2
#   flip 2, iter 9: [+0.1,  0.0,  0.0]            no crossing;          control 1.1 -> -0.2 breaks
RECORDS = [
    _flip(2, [-0.5, 0.2, -0.1], [-0.4, 0.3, -0.05], [1.0], [0.9]),
    _flip(5, [-0.4, 0.3, -0.05], [-0.4, -0.1, 0.05], [0.9], [1.1], typ="scale"),
    _flip(9, [-0.4, -0.1, 0.05], [-0.3, -0.1, 0.05], [1.1], [-0.2], typ="group"),
]


def _valid(df: pl.DataFrame, schema) -> pl.DataFrame:
    schema.validate(df)
    return df


# ---------------------------------------------------------------------------- boundary crossing


def test_boundary_crossing_per_flip():
    per_flip, _ = audits.boundary_crossing(RECORDS)
    _valid(per_flip, schemas.BoundaryCrossingFlips)
    assert per_flip["iteration"].to_list() == [2, 5, 9]
    assert per_flip["move_type"].to_list() == ["group", "scale", "group"]
    assert per_flip["n_fixes"].to_list() == [0, 1, 0]
    assert per_flip["n_breaks"].to_list() == [0, 1, 0]
    assert per_flip["n_control_breaks"].to_list() == [0, 0, 1]
    assert per_flip["changes_target_sign"].to_list() == [False, True, False]
    # means over the 3 targets: 0.25/3, -0.3/3, 0.1/3; |.|: 0.25/3, 0.5/3, 0.1/3
    assert per_flip["mean_delta"].to_list() == pytest.approx([0.25 / 3, -0.1, 0.1 / 3])
    assert per_flip["mean_abs_delta"].to_list() == pytest.approx([0.25 / 3, 0.5 / 3, 0.1 / 3])
    assert per_flip["control_mean_abs_delta"].to_list() == pytest.approx([0.1, 0.2, 1.3])


def test_boundary_crossing_summary():
    _, summary = audits.boundary_crossing(RECORDS, label="editing")
    row = _valid(summary, schemas.BoundaryCrossingSummary).row(0, named=True)
    assert row["patch"] == "editing" and row["flips"] == 3
    assert row["flips_changing_any_target_sign"] == 1 and row["flips_changing_any_control_sign"] == 1
    assert (row["total_fixes"], row["total_breaks"]) == (1, 1)
    # all 9 (flip, target) deltas sum to 0.25 - 0.3 + 0.1 = 0.05
    assert row["mean_delta"] == pytest.approx(0.05 / 9)
    # wrong at the start: positions 0 (-0.5) and 2 (-0.1); median distance (0.5 + 0.1)/2
    assert row["n_wrong"] == 2 and row["median_wrong_distance"] == pytest.approx(0.3)
    assert row["distance_ratio"] == pytest.approx(0.3 / (0.05 / 9))  # = 54
    # nearest wrong: the *second* "A" (position 2), -0.1 -> 0.05 by deltas 0.05, 0.1, 0
    assert (row["nearest_wrong_index"], row["nearest_wrong_name"]) == (2, "A")
    assert row["nearest_wrong_start"] == pytest.approx(-0.1)
    assert row["nearest_wrong_mean_delta"] == pytest.approx(0.05)
    assert row["nearest_wrong_end"] == pytest.approx(0.05)


def test_boundary_crossing_reads_an_upstream_patch(tmp_path):
    # An upstream file as the paper published them: no "type" on weight flips, repeated names.
    doc = {"version": 2, "format": "bankai_group_xor_v2", "domain": "editing", "search_layers": [1, 2],
           "iterations": 10, "flips": [{k: v for k, v in r.items() if k != "type" or v == "scale"}
                                       for r in RECORDS],
           "fitness_history": [0.0] * 10}
    path = tmp_path / "patch_editing.json"
    path.write_text(json.dumps(doc))
    patch = read_patch(path)
    assert patch.source_format == "bankai_group_xor_v2" and len(patch.moves) == 3
    per_flip, summary = audits.boundary_crossing(patch.records, label="editing")
    assert per_flip["move_type"].to_list() == ["group", "scale", "group"]
    row = summary.row(0, named=True)
    assert row["nearest_wrong_name"] == "A" and row["nearest_wrong_index"] == 2
    assert row["mean_delta"] == pytest.approx(0.05 / 9)


def test_boundary_crossing_pooled():
    other = [_flip(0, [-2.0], [-1.9], [], [], names=("Z",))]
    per_flip, summary = audits.boundary_crossing_pooled({"p1": RECORDS, "p2": other})
    _valid(per_flip, schemas.BoundaryCrossingFlips)
    _valid(summary, schemas.BoundaryCrossingSummary)
    assert per_flip["patch"].to_list() == ["p1", "p1", "p1", "p2"]
    assert summary["patch"].to_list() == ["p1", "p2", "all"]
    total = summary.row(2, named=True)
    # 10 (flip, target) deltas summing to 0.05 + 0.1; wrong distances 0.5, 0.1, 2.0
    assert total["flips"] == 4 and total["n_wrong"] == 3
    assert total["mean_delta"] == pytest.approx(0.015)
    assert total["median_wrong_distance"] == pytest.approx(0.5)
    assert total["distance_ratio"] == pytest.approx(0.5 / 0.015)
    assert total["nearest_wrong_name"] == "p1:A" and total["nearest_wrong_start"] == pytest.approx(-0.1)
    assert summary.row(1, named=True)["nearest_wrong_end"] == pytest.approx(-1.9)


def test_boundary_crossing_of_a_search_that_kept_no_flip():
    # the paper's math domain can end with no accepted move (our default run's did): its row says
    # so, and the pooled row is the pool of the other patches alone
    per_flip, summary = audits.boundary_crossing_pooled({"p1": RECORDS, "math": []})
    _valid(summary, schemas.BoundaryCrossingSummary)
    assert summary["patch"].to_list() == ["p1", "math", "all"]
    empty = summary.row(1, named=True)
    assert empty["flips"] == 0 and empty["total_fixes"] == 0 and empty["n_wrong"] is None
    assert summary.row(2, named=True)["flips"] == summary.row(0, named=True)["flips"] == per_flip.height
    per_flip, summary = audits.boundary_crossing([], "math")
    assert per_flip.height == 0 and summary["flips"].to_list() == [0]
    with pytest.raises(ValueError, match="no patch kept a flip"):
        audits.boundary_crossing_pooled({"math": []})


def test_boundary_crossing_counts_a_gap_of_exactly_zero_as_wrong():
    # a probe is right only when its gap is > 0, so 0.0 is wrong. Targets (X, Y, Z), one control:
    #   X  0.0 -> +0.5   wrong -> right: a fix (before <= 0, after > 0)
    #   Y +0.5 ->  0.0   right -> wrong: a break (before > 0, after <= 0)
    #   Z  0.0 ->  0.0   wrong -> wrong: neither
    #   control 0.0 -> +0.25: a control fix
    # deltas +0.5, -0.5, 0.0: mean 0.0 exactly, so distance_ratio is undefined (null)
    rec = _flip(4, [0.0, 0.5, 0.0], [0.5, 0.0, 0.0], [0.0], [0.25], names=("X", "Y", "Z"))
    per_flip, summary = audits.boundary_crossing([rec])
    assert per_flip["n_fixes"].to_list() == [1] and per_flip["n_breaks"].to_list() == [1]
    assert per_flip["n_control_fixes"].to_list() == [1] and per_flip["n_control_breaks"].to_list() == [0]
    assert per_flip["changes_target_sign"].to_list() == [True]
    row = _valid(summary, schemas.BoundaryCrossingSummary).row(0, named=True)
    assert (row["total_fixes"], row["total_breaks"], row["flips_changing_any_control_sign"]) == (1, 1, 1)
    # wrong at the start: X (0.0) and Z (0.0); distances |0| and |0|, median 0
    assert row["n_wrong"] == 2 and row["median_wrong_distance"] == 0.0
    assert row["mean_delta"] == 0.0 and row["distance_ratio"] is None
    # nearest wrong: both at 0.0, the first (X, index 0) is taken
    assert (row["nearest_wrong_index"], row["nearest_wrong_name"], row["nearest_wrong_end"]) == (0, "X", 0.5)


def test_boundary_crossing_ratio_of_a_negative_mean_delta_is_positive():
    # §7.6: distance_ratio = median |gap| of the wrong targets / |mean_delta|, a positive multiple.
    # Two flips on targets (P, Q): every delta is -0.25 (all exact in binary)
    #   flip 0: P -1.0 -> -1.25, Q 0.5 -> 0.25;  flip 1: P -1.25 -> -1.5, Q 0.25 -> 0.0 (Q breaks)
    # mean_delta = (4 x -0.25) / 4 = -0.25; wrong at the start: P alone, distance 1.0;
    # ratio = 1.0 / |-0.25| = 4.0 (not -4.0)
    recs = [_flip(0, [-1.0, 0.5], [-1.25, 0.25], [2.0], [2.0], names=("P", "Q")),
            _flip(1, [-1.25, 0.25], [-1.5, 0.0], [2.0], [2.0], names=("P", "Q"))]
    per_flip, summary = audits.boundary_crossing(recs)
    assert per_flip["mean_delta"].to_list() == [-0.25, -0.25]
    assert per_flip["n_breaks"].to_list() == [0, 1]
    row = _valid(summary, schemas.BoundaryCrossingSummary).row(0, named=True)
    assert row["mean_delta"] == -0.25 and row["mean_abs_delta"] == 0.25
    assert row["n_wrong"] == 1 and row["median_wrong_distance"] == 1.0
    assert row["distance_ratio"] == 4.0
    assert row["nearest_wrong_mean_delta"] == -0.25 and row["nearest_wrong_end"] == -1.5
    # pooled with RECORDS (mean 0.05/9 over 9 pairs): 13 pairs summing to 0.05 - 1.0 = -0.95, so
    # mean -0.95/13; wrong distances 0.5, 0.1 (RECORDS) and 1.0: median 0.5; ratio 0.5 / (0.95/13)
    _, pooled = audits.boundary_crossing_pooled({"p1": RECORDS, "neg": recs})
    total = pooled.row(2, named=True)
    assert total["mean_delta"] == pytest.approx(-0.95 / 13)
    assert total["distance_ratio"] == pytest.approx(0.5 * 13 / 0.95)  # ≈ 6.84, positive


def test_boundary_crossing_without_gap_logs_says_why():
    with pytest.raises(ValueError, match="target_gaps_before"):
        audits.boundary_crossing([{"layer": 1, "proj": "ffn_up.weight", "group": 0, "iteration": 0}])


def test_boundary_crossing_rejects_changing_target_lists():
    changed = RECORDS[:1] + [_flip(3, [1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0], [1.0], names=("A", "B", "X"))]
    with pytest.raises(ValueError, match="other targets"):
        audits.boundary_crossing(changed)


# ---------------------------------------------------------------------------- acceptance


def test_acceptance_table():
    runs = {"a": [True, False, False, True, True, False, True, True], "empty": []}
    df = _valid(audits.acceptance_table(runs, checkpoints=(2, 4, 10), window=3), schemas.AcceptanceTable)
    a, empty = df.row(0, named=True), df.row(1, named=True)
    # 5 of 8; first 2: 1/2; first 4: 2/4; 10 is past the run; last 3 (F, T, T): 2/3
    assert (a["iterations"], a["accepted"], a["rate"]) == (8, 5, 0.625)
    assert (a["rate_at_2"], a["rate_at_4"], a["rate_at_10"]) == (0.5, 0.5, None)
    assert a["rolling_final"] == pytest.approx(2 / 3)
    assert empty["rate"] is None and empty["rolling_final"] is None


# ---------------------------------------------------------------------------- interference


def test_interference_by_quartile():
    # 10 iterations: quartiles [0,3) [3,5) [5,8) [8,10); flips at 2, 5, 9 fall in 1, 3, 4
    df = _valid(audits.interference_by_quartile(RECORDS, 10), schemas.InterferenceByQuartile)
    assert df["iter_lo"].to_list() == [0, 3, 5, 8] and df["iter_hi"].to_list() == [3, 5, 8, 10]
    assert df["flips"].to_list() == [1, 0, 1, 1]
    assert df["mean_target_improvement"].to_list() == pytest.approx([0.25 / 3, None, -0.1, 0.1 / 3])
    assert df["mean_abs_control_disturbance"].to_list() == pytest.approx([0.1, None, 0.2, 1.3])
    assert df["pct_controls_improved"].to_list() == [0.0, None, 100.0, 0.0]


def test_interference_by_quartile_split_by_move_type():
    df = audits.interference_by_quartile(RECORDS, 10, by_move_type=True)
    _valid(df, schemas.InterferenceByQuartile)
    assert df.height == 8
    flips = {(q, t): n for q, t, n in df.select("quartile", "move_type", "flips").iter_rows()}
    assert flips[(3, "scale")] == 1 and flips[(3, "weight")] == 0 and flips[(1, "weight")] == 1


def test_interference_by_quartile_rejects_iterations_outside_the_run():
    with pytest.raises(ValueError, match="iteration 9"):
        audits.interference_by_quartile(RECORDS, 9)


def test_interference_matrix():
    scores = pl.DataFrame({
        "patch_domain": ["editing"] * 3, "probe_domain": ["math", "math", "editing"],
        "probe": ["m1", "m2", "e1"], "gap_base": [-1.0, 1.0, 0.2], "gap_patched": [0.5, 0.5, -0.1]})
    df = _valid(audits.interference_matrix(scores), schemas.InterferenceMatrix)
    math_row, edit_row = df.row(0, named=True), df.row(1, named=True)
    # math: deltas +1.5 and -0.5 -> mean 0.5, m1 fixed; editing: -0.3, e1 broken
    assert (math_row["probe_domain"], math_row["n_probes"], math_row["n_fixed"]) == ("math", 2, 1)
    assert math_row["mean_delta"] == pytest.approx(0.5)
    assert edit_row["mean_delta"] == pytest.approx(-0.3) and edit_row["n_broken"] == 1
    with pytest.raises(ValueError, match="gap_patched"):
        audits.interference_matrix(scores.drop("gap_patched"))


# ---------------------------------------------------------------------------- where flips land


UP1, DOWN2 = "ffn_up.weight", "ffn_down.weight"


def test_move_type_share():
    moves = {"math": [Move(1, UP1, 3, "scale", 5), Move(1, UP1, 4)], "coding": []}
    df = _valid(audits.move_type_share(moves), schemas.MoveTypeShare)
    assert df.row(0) == ("math", 2, 1, 1, 0.5)
    assert df.row(1) == ("coding", 0, 0, 0, None)


def test_layer_projection_counts():
    moves = [Move(1, UP1, 0), Move(1, UP1, 0, "scale", 4), Move(1, UP1, 1), Move(0, DOWN2, 2)]
    df = _valid(audits.layer_projection_counts(moves), schemas.LayerProjectionCounts)
    assert df.rows() == [(0, DOWN2, 1, 1), (1, UP1, 3, 2)]


def test_group_overlap():
    n_groups = {"blk.1.ffn_up.weight": 10, "blk.2.ffn_down.weight": 4}
    moves = {
        "x": [Move(1, UP1, 0), Move(1, UP1, 0, "scale", 6), Move(1, UP1, 1), Move(1, UP1, 2), Move(2, DOWN2, 0)],
        "y": [Move(1, UP1, 2), Move(1, UP1, 3), Move(2, DOWN2, 0), Move(2, DOWN2, 1)],
        "z": [Move(2, DOWN2, 3)],
    }
    df = _valid(audits.group_overlap(moves, n_groups), schemas.GroupOverlap)
    assert df.select("domain_a", "domain_b").rows() == [("x", "y"), ("x", "z"), ("y", "z")]
    xy = df.row(0, named=True)
    # x: up {0,1,2}, down {0}; y: up {2,3}, down {0,1}; shared up {2}, down {0}; union 4+4-2
    assert (xy["groups_a"], xy["groups_b"], xy["shared"]) == (4, 4, 2)
    assert xy["jaccard"] == pytest.approx(2 / 6)
    # chance: up 3*2/10 + down 1*2/4 = 1.1
    assert xy["expected_shared"] == pytest.approx(1.1)
    assert xy["overlap_ratio"] == pytest.approx(2 / 1.1)
    xz = df.row(1, named=True)
    # only the down tensor is touched by both: 1*1/4; nothing shared
    assert (xz["shared"], xz["expected_shared"], xz["overlap_ratio"]) == (0, pytest.approx(0.25), 0.0)


def test_group_overlap_checks_tensors_and_ranges():
    with pytest.raises(ValueError, match="no entry"):
        audits.group_overlap({"x": [Move(5, UP1, 0)]}, {"blk.1.ffn_up.weight": 10})
    with pytest.raises(ValueError, match="out of range"):
        audits.group_overlap({"x": [Move(1, UP1, 10)]}, {"blk.1.ffn_up.weight": 10})


# ---------------------------------------------------------------------------- null baseline


TRAINED = [{"model": "bonsai-1.7b", "seed": 0, "accepted": 234, "iterations": 500}]
NULL = [{"model": "bonsai-1.7b-randsign", "seed": 0, "accepted": 84, "iterations": 500},
        {"model": "bonsai-1.7b-randsign", "seed": 1, "accepted": 90, "iterations": 500}]


def test_null_baseline_table_reproduces_paper_intervals():
    df = _valid(audits.null_baseline_table(TRAINED + NULL[:1]), schemas.NullBaselineTable)
    assert df["rate"].to_list() == [0.468, 0.168]
    assert [round(x, 3) for x in df["ci_lo"]] == [0.425, 0.138]
    assert [round(x, 3) for x in df["ci_hi"]] == [0.512, 0.203]


def test_null_baseline_verdict_pools_seeds():
    row = _valid(audits.null_baseline_verdict(TRAINED, NULL), schemas.NullBaselineVerdict).row(0, named=True)
    # null pooled: (84 + 90) / 1000 = 0.174; gap 46.8 - 17.4 = 29.4 pp
    assert (row["null_accepted"], row["null_iterations"], row["null_seeds"]) == (174, 1000, 2)
    assert row["gap_pp"] == pytest.approx(29.4)
    # sample SD of 0.168 and 0.180: |0.012| / sqrt(2)
    assert row["null_rate_sd"] == pytest.approx(0.012 / 2 ** 0.5) and row["trained_rate_sd"] is None
    assert row["passed"] and row["null_model"] == "bonsai-1.7b-randsign"


def test_null_baseline_verdict_fails_small_gap():
    weak = [{"model": "t", "seed": 0, "accepted": 100, "iterations": 500}]
    row = audits.null_baseline_verdict(weak, NULL[:1]).row(0, named=True)
    # 20.0% - 16.8% = 3.2 pp < 10
    assert row["gap_pp"] == pytest.approx(3.2) and not row["gap_meets_threshold"] and not row["passed"]


def _run(stage, name, accepted, iterations, base, final, n_targets=1, kind=None, seed=None, records=()):
    from types import SimpleNamespace

    summary = {"accepted": accepted, "iterations_run": iterations, "acceptance_rate": accepted / iterations,
               "n_targets": n_targets, "base_gaps": base, "final_gaps": final}
    flags = [i < accepted for i in range(iterations)]
    return audits.AuditedRun(stage=stage, name=name, patch=SimpleNamespace(records=list(records), moves=[]),
                             summary=summary, flags=flags, kind=kind, seed=seed)


def test_audits_of_one_models_runs():
    runs = [_run("pass1", "math", 3, 10, [-1.0, 2.0], [1.0, 1.5]),
            _run("lambda", "math-lam3.0", 2, 10, [-1.0, 2.0], [-0.5, 2.0]),
            _run("nullbase", "trained-s0", 4, 10, [0.0], [0.0], kind="trained", seed=0),
            _run("nullbase", "null-s0", 1, 10, [0.0], [0.0], kind="null", seed=0),
            _run("randomflip", "math", 3, 3, [-1.0, 2.0], [-2.0, -1.0])]
    assert audits.search_acceptance(runs, [5], 5)["run"].to_list() == ["pass1/math", "lambda/math-lam3.0",
                                                                       "nullbase/trained-s0", "nullbase/null-s0"]
    assert audits.search_acceptance(runs, [5], 5, stage="lambda")["run"].to_list() == ["lambda/math-lam3.0"]
    trained, null = audits.null_baseline_sides(runs, "m")
    assert trained == [{"model": "m", "seed": 0, "accepted": 4, "iterations": 10}]
    assert null == [{"model": "m-mlp-randomized", "seed": 0, "accepted": 1, "iterations": 10}]
    rf = audits.random_flip_null(runs, "m")
    assert rf.select("kind", "flips", "targets_fixed", "controls_broken").rows() == [("search", 3, 1, 0),
                                                                                  ("random", 3, 0, 1)]
    assert audits.fitness_modes(runs, "m").is_empty()
    assert audits.pipeline_layer_projection(runs).is_empty()
