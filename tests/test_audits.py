"""neagari.analysis.audits on small hand-made flip records whose answers are worked out by hand below,
and on the paper's published patch files (downloaded, or the copies stored under tests/data/upstream)."""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import lzma
import os
import shutil
import statistics
import tempfile
from pathlib import Path

import polars as pl
import pytest
import yaml

from neagari.analysis import audits, crossing
from neagari.analysis import schemas
from neagari.report.published import Published
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
    per_flip, _ = crossing.boundary_crossing(RECORDS)
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
    _, summary = crossing.boundary_crossing(RECORDS, label="editing")
    row = _valid(summary, schemas.BoundaryCrossingSummary).row(0, named=True)
    assert row["patch"] == "editing" and row["flips"] == 3
    assert row["flips_changing_any_target_sign"] == 1 and row["flips_changing_any_control_sign"] == 1
    assert (row["total_fixes"], row["total_breaks"]) == (1, 1)
    # all 9 (flip, target) deltas sum to 0.25 - 0.3 + 0.1 = 0.05
    assert row["mean_delta"] == pytest.approx(0.05 / 9)
    # wrong at the start: positions 0 (A, -0.5) and 2 (A again, -0.1). By name, as upstream's
    # notebook reads the list into a dict, that is one probe A with the gap listed last, -0.1
    assert row["n_wrong_listed"] == 2 and row["n_wrong_probes"] == 1
    assert row["median_wrong_distance"] == pytest.approx(0.1) and row["mean_wrong_distance"] == pytest.approx(0.1)
    assert row["median_distance_ratio"] == pytest.approx(0.1 / (0.05 / 9))  # = 18
    assert row["mean_distance_ratio"] == pytest.approx(0.1 / (0.05 / 9))
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
    per_flip, summary = crossing.boundary_crossing(patch.records, label="editing")
    assert per_flip["move_type"].to_list() == ["group", "scale", "group"]
    row = summary.row(0, named=True)
    assert row["nearest_wrong_name"] == "A" and row["nearest_wrong_index"] == 2
    assert row["mean_delta"] == pytest.approx(0.05 / 9)


# A second patch on targets (Z, A, Y), all wrong: -2.0, -0.7, -0.4; one flip, deltas +0.1, 0, 0.
# A is also a probe of RECORDS (wrong there by name at -0.1), as pass 2 reuses pass 1's probes.
OTHER = [_flip(0, [-2.0, -0.7, -0.4], [-1.9, -0.7, -0.4], [], [], names=("Z", "A", "Y"))]


def test_boundary_crossing_pooled():
    per_flip, summary = crossing.boundary_crossing_pooled({"p1": RECORDS, "p2": OTHER})
    _valid(per_flip, schemas.BoundaryCrossingFlips)
    _valid(summary, schemas.BoundaryCrossingSummary)
    assert per_flip["patch"].to_list() == ["p1", "p1", "p1", "p2"]
    assert summary["patch"].to_list() == ["p1", "p2", "all"]
    total = summary.row(2, named=True)
    # 12 (flip, target) deltas summing to 0.05 + 0.1
    assert total["flips"] == 4 and total["mean_delta"] == pytest.approx(0.0125)
    # each probe once, where first listed: A at p1's start (0.1), Z (2.0), Y (0.4) from p2
    assert total["n_wrong_probes"] == 3 and total["n_wrong_listed"] is None
    assert total["median_wrong_distance"] == pytest.approx(0.4)
    assert total["mean_wrong_distance"] == pytest.approx(2.5 / 3)
    assert total["median_distance_ratio"] == pytest.approx(0.4 / 0.0125)  # = 32
    assert total["mean_distance_ratio"] == pytest.approx(2.5 / 3 / 0.0125)  # ≈ 66.7
    assert total["nearest_wrong_name"] == "p1:A" and total["nearest_wrong_start"] == pytest.approx(-0.1)
    p2 = summary.row(1, named=True)
    assert (p2["n_wrong_probes"], p2["nearest_wrong_name"], p2["nearest_wrong_end"]) == (3, "Y", -0.4)


def test_boundary_crossing_pooled_over_every_patch_start_as_the_notebook():
    _, summary = crossing.boundary_crossing_pooled({"p1": RECORDS, "p2": OTHER}, pool="every")
    total = _valid(summary, schemas.BoundaryCrossingSummary).row(2, named=True)
    # p1's wrong probe A (0.1) and all three of p2's (2.0, 0.7, 0.4): A counts in both patches;
    # by position p1 lists 2 wrong and p2 3
    assert (total["n_wrong_probes"], total["n_wrong_listed"]) == (4, 5)
    assert total["median_wrong_distance"] == pytest.approx(0.55)
    assert total["mean_wrong_distance"] == pytest.approx(0.8)
    assert total["median_distance_ratio"] == pytest.approx(44.0) and total["mean_distance_ratio"] == pytest.approx(64.0)
    # the flips and their deltas pool the same either way
    first = crossing.boundary_crossing_pooled({"p1": RECORDS, "p2": OTHER})[1].row(2, named=True)
    assert (first["flips"], first["mean_delta"]) == (total["flips"], total["mean_delta"])
    with pytest.raises(ValueError, match="pool must be one of"):
        crossing.boundary_crossing_pooled({"p1": RECORDS}, pool="last")


def test_wrong_probes_are_keyed_by_name():
    # targets m1 m2 m1 m3 m4 at -5.0 -1.0 +0.5 -3.0 -0.5; deltas +0.5 0 0 +0.5 0 (mean 0.2).
    # By position 4 are wrong; by name m1 is one probe with its last gap, +0.5, so right: the
    # wrong probes are m2 m3 m4 at 1.0, 3.0, 0.5: median 1.0, mean 1.5 (by position: 2.0, 2.375)
    names = ("m1", "m2", "m1", "m3", "m4")
    rec = _flip(0, [-5.0, -1.0, 0.5, -3.0, -0.5], [-4.5, -1.0, 0.5, -2.5, -0.5], [1.0], [1.0], names=names)
    _, summary = crossing.boundary_crossing([rec])
    row = _valid(summary, schemas.BoundaryCrossingSummary).row(0, named=True)
    assert (row["n_wrong_listed"], row["n_wrong_probes"]) == (4, 3)
    assert row["median_wrong_distance"] == 1.0 and row["mean_wrong_distance"] == 1.5
    assert row["mean_delta"] == pytest.approx(0.2)
    assert row["median_distance_ratio"] == pytest.approx(5.0) and row["mean_distance_ratio"] == pytest.approx(7.5)
    # the nearest wrong target is still found by position: m4 (index 4, -0.5)
    assert (row["nearest_wrong_index"], row["nearest_wrong_name"]) == (4, "m4")


def test_boundary_crossing_of_a_search_that_kept_no_flip():
    # the paper's math domain can end with no accepted move (our default run's did): its row says
    # so, and the pooled row is the pool of the other patches alone
    per_flip, summary = crossing.boundary_crossing_pooled({"p1": RECORDS, "math": []})
    _valid(summary, schemas.BoundaryCrossingSummary)
    assert summary["patch"].to_list() == ["p1", "math", "all"]
    empty = summary.row(1, named=True)
    assert empty["flips"] == 0 and empty["total_fixes"] == 0 and empty["n_wrong_probes"] is None
    assert empty["median_wrong_distance"] is None and empty["mean_distance_ratio"] is None
    assert summary.row(2, named=True)["flips"] == summary.row(0, named=True)["flips"] == per_flip.height
    per_flip, summary = crossing.boundary_crossing([], "math")
    assert per_flip.height == 0 and summary["flips"].to_list() == [0]
    with pytest.raises(ValueError, match="no patch kept a flip"):
        crossing.boundary_crossing_pooled({"math": []})


def test_boundary_crossing_counts_a_gap_of_exactly_zero_as_wrong():
    # a probe is right only when its gap is > 0, so 0.0 is wrong. Targets (X, Y, Z), one control:
    #   X  0.0 -> +0.5   wrong -> right: a fix (before <= 0, after > 0)
    #   Y +0.5 ->  0.0   right -> wrong: a break (before > 0, after <= 0)
    #   Z  0.0 ->  0.0   wrong -> wrong: neither
    #   control 0.0 -> +0.25: a control fix
    # deltas +0.5, -0.5, 0.0: mean 0.0 exactly, so both distance ratios are undefined (null)
    rec = _flip(4, [0.0, 0.5, 0.0], [0.5, 0.0, 0.0], [0.0], [0.25], names=("X", "Y", "Z"))
    per_flip, summary = crossing.boundary_crossing([rec])
    assert per_flip["n_fixes"].to_list() == [1] and per_flip["n_breaks"].to_list() == [1]
    assert per_flip["n_control_fixes"].to_list() == [1] and per_flip["n_control_breaks"].to_list() == [0]
    assert per_flip["changes_target_sign"].to_list() == [True]
    row = _valid(summary, schemas.BoundaryCrossingSummary).row(0, named=True)
    assert (row["total_fixes"], row["total_breaks"], row["flips_changing_any_control_sign"]) == (1, 1, 1)
    # wrong at the start: X (0.0) and Z (0.0); distances |0| and |0|, median and mean 0
    assert row["n_wrong_probes"] == 2 and row["median_wrong_distance"] == 0.0 and row["mean_wrong_distance"] == 0.0
    assert row["mean_delta"] == 0.0
    assert row["median_distance_ratio"] is None and row["mean_distance_ratio"] is None
    # nearest wrong: both at 0.0, the first (X, index 0) is taken
    assert (row["nearest_wrong_index"], row["nearest_wrong_name"], row["nearest_wrong_end"]) == (0, "X", 0.5)


def test_boundary_crossing_ratio_of_a_negative_mean_delta_is_positive():
    # §7.6: each distance ratio = distance of the wrong probes / |mean_delta|, a positive multiple.
    # Two flips on targets (P, Q): every delta is -0.25 (all exact in binary)
    #   flip 0: P -1.0 -> -1.25, Q 0.5 -> 0.25;  flip 1: P -1.25 -> -1.5, Q 0.25 -> 0.0 (Q breaks)
    # mean_delta = (4 x -0.25) / 4 = -0.25; wrong at the start: P alone, distance 1.0;
    # ratio = 1.0 / |-0.25| = 4.0 (not -4.0)
    recs = [_flip(0, [-1.0, 0.5], [-1.25, 0.25], [2.0], [2.0], names=("P", "Q")),
            _flip(1, [-1.25, 0.25], [-1.5, 0.0], [2.0], [2.0], names=("P", "Q"))]
    per_flip, summary = crossing.boundary_crossing(recs)
    assert per_flip["mean_delta"].to_list() == [-0.25, -0.25]
    assert per_flip["n_breaks"].to_list() == [0, 1]
    row = _valid(summary, schemas.BoundaryCrossingSummary).row(0, named=True)
    assert row["mean_delta"] == -0.25 and row["mean_abs_delta"] == 0.25
    assert row["n_wrong_probes"] == 1 and row["median_wrong_distance"] == 1.0
    assert row["median_distance_ratio"] == 4.0 and row["mean_distance_ratio"] == 4.0
    assert row["nearest_wrong_mean_delta"] == -0.25 and row["nearest_wrong_end"] == -1.5
    # pooled with RECORDS (mean 0.05/9 over 9 pairs): 13 pairs summing to 0.05 - 1.0 = -0.95, so
    # mean -0.95/13; wrong probes A (0.1, RECORDS by name) and P (1.0): median = mean = 0.55
    _, pooled = crossing.boundary_crossing_pooled({"p1": RECORDS, "neg": recs})
    total = pooled.row(2, named=True)
    assert total["mean_delta"] == pytest.approx(-0.95 / 13)
    assert total["median_distance_ratio"] == pytest.approx(0.55 * 13 / 0.95)  # ≈ 7.53, positive
    assert total["mean_distance_ratio"] == pytest.approx(0.55 * 13 / 0.95)


def test_boundary_crossing_without_gap_logs_says_why():
    with pytest.raises(ValueError, match="target_gaps_before"):
        crossing.boundary_crossing([{"layer": 1, "proj": "ffn_up.weight", "group": 0, "iteration": 0}])


def test_boundary_crossing_rejects_changing_target_lists():
    changed = RECORDS[:1] + [_flip(3, [1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0], [1.0], names=("A", "B", "X"))]
    with pytest.raises(ValueError, match="other targets"):
        crossing.boundary_crossing(changed)


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


def _upstream_patch(tmp_path, kept, **top):
    """An upstream-format patch file whose flips were kept at iterations ``kept``, read back."""
    doc = {"version": 2, "format": "bankai_group_xor_v2", "domain": "editing", "search_layers": [1],
           "flips": [{"layer": 1, "proj": UP1, "group": i, "iteration": it} for i, it in enumerate(kept)], **top}
    path = tmp_path / "patch.json"
    path.write_text(json.dumps(doc))
    return read_patch(path)


def test_acceptance_of_an_auto_terminated_upstream_run_is_over_the_iterations_it_ran(tmp_path):
    # Budget 1000, stopped after 300 iterations (upstream appends one fitness_history entry per
    # iteration run), flips kept at 0, 5 and 299. Over the 300 run: rate 3/300; first 50: 2/50;
    # first 200: 2/200; 500 and 1000 were never reached (null, not a rate padded with rejects);
    # the last 200 (iterations 100..299) hold one accept: 1/200
    patch = _upstream_patch(tmp_path, [0, 5, 299], iterations=1000, fitness_history=[0.0] * 300)
    assert audits.recorded_iterations(patch) == 300
    flags = audits.recorded_flags(patch)
    assert len(flags) == 300 and [i for i, f in enumerate(flags) if f] == [0, 5, 299]
    row = audits.acceptance_table({"editing": flags}).row(0, named=True)
    assert (row["iterations"], row["accepted"], row["rate"]) == (300, 3, 0.01)
    assert (row["rate_at_50"], row["rate_at_200"], row["rate_at_500"], row["rate_at_1000"]) == (0.04, 0.01, None, None)
    assert row["rolling_final"] == 1 / 200


def test_acceptance_of_our_runners_patch_reads_iterations_run(tmp_path):
    # our runner writes one fitness_history entry per accepted flip, and says iterations_run
    patch = _upstream_patch(tmp_path, [1, 4], iterations_run=7, fitness_history=[0.1, 0.2])
    assert audits.recorded_flags(patch) == [False, True, False, False, True, False, False]


def test_acceptance_without_a_count_of_iterations_run_is_unknown(tmp_path):
    # the budget alone says nothing of where the run stopped
    assert audits.recorded_flags(_upstream_patch(tmp_path, [1, 4], iterations=10)) is None
    # a history shorter than the kept iterations is not one entry per iteration
    assert audits.recorded_flags(_upstream_patch(tmp_path, [1, 9], fitness_history=[0.1, 0.2])) is None
    # iterations numbered from 1: the last of 4 kept is iteration 4
    assert audits.recorded_flags(_upstream_patch(tmp_path, [1, 4], fitness_history=[0.0] * 4)) == [True, False, False, True]


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


def test_search_crossing_pools_the_wrong_probes_of_pass_1():
    # pass 2 listed first still pools after pass 1: probe A counts at pass 1's start (-0.6), not at
    # pass 2's (-0.2); pass 2's own row keeps its start
    from types import SimpleNamespace

    def run(stage, gap):
        rec = _flip(0, [gap], [gap + 0.1], [], [], names=("A",))
        return audits.AuditedRun(stage=stage, name="editing", patch=SimpleNamespace(records=[rec], moves=[]),
                                 summary={}, flags=[True])

    _, summary = audits.search_crossing([run("pass2", -0.2), run("pass1", -0.6)])
    assert summary["patch"].to_list() == ["pass1/editing", "pass2/editing", "all"]
    assert summary["median_wrong_distance"].to_list() == pytest.approx([0.6, 0.2, 0.6])
    assert summary["n_wrong_probes"].to_list() == [1, 1, 1]


# ---------------------------------------------------------------------------- the published patches
# The ten patch files upstream published (config/bonsai-8b.yaml, published_patches), read where
# the workflow downloads them, or from NEAGARI_PUBLISHED_PATCHES (a folder holding v2_patches/ and
# v3_patches/), or else from the xz copies in tests/data/upstream/patches/ (the seven the
# repository snapshot holds; each checked against its sha256 pin before use). Each file present is
# checked against plain Python over its records, the way upstream's boundary_crossing_audit.ipynb
# reads them (gap lists into dicts), and against the paper's figures for it
# (resources/paper/published.yaml); with all ten, the pooled §7.6 figures.

REPO = Path(__file__).resolve().parents[1]
DOWNLOADS = "results/downloads/neagari/patches/"
PUBLISHED_DIR = Path(os.environ.get("NEAGARI_PUBLISHED_PATCHES", REPO / DOWNLOADS))
STORED_DIR = REPO / "tests/data/upstream/patches"
BONSAI_8B = yaml.safe_load((REPO / "config/bonsai-8b.yaml").read_text())
PUBLISHED_CONFIG = BONSAI_8B["published_patches"]
PUBLISHED_PINS = BONSAI_8B["downloads"]["files"]
PAPER = Published(REPO / "resources/paper/published.yaml")


def test_published_patches_are_named_by_their_pass():
    # v2_patches is upstream's pass 1 (weight XOR), v3_patches its pass 2, pass 1 listed first
    assert all(path.startswith(DOWNLOADS) for path in PUBLISHED_CONFIG.values())
    passes = [name.split("_", 1)[0] for name in PUBLISHED_CONFIG]
    assert passes == ["v2"] * 5 + ["v3"] * 5


@functools.cache
def _published_path(name: str) -> Path:
    """The patch file: downloaded (or NEAGARI_PUBLISHED_PATCHES), else the stored xz copy unpacked
    into a temporary folder once its bytes are the pinned ones (else the downloads path, absent)."""
    rel = PUBLISHED_CONFIG[name].removeprefix(DOWNLOADS)
    path, stored = PUBLISHED_DIR / rel, STORED_DIR / f"{rel}.xz"
    if path.is_file() or not stored.is_file():
        return path
    data = lzma.decompress(stored.read_bytes())
    pin = PUBLISHED_PINS[f"neagari/patches/{rel}"]["sha256"]
    assert hashlib.sha256(data).hexdigest() == pin, f"{stored}: not the bytes config/bonsai-8b.yaml pins"
    tmp = tempfile.mkdtemp(prefix="neagari-published-")
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    out = Path(tmp) / rel
    out.parent.mkdir(parents=True)
    out.write_bytes(data)
    return out


@functools.cache
def _published_doc(name: str) -> dict:
    return json.loads(_published_path(name).read_text())


def _printed(key: str):
    """A figure as the paper prints it (percent as percent)."""
    return PAPER.entry(key)["value"]


def _present() -> list[str]:
    return [n for n in PUBLISHED_CONFIG if _published_path(n).is_file()]


def _by_hand(flips: list[dict]) -> dict:
    """One patch in plain Python: the wrong probes as the notebook finds them (its dict of the
    first flip's gaps before, so a repeated name keeps its last gap), and the deltas by position."""
    listed = flips[0]["target_gaps_before"]
    start = dict((n, g) for n, g in listed)
    deltas = [a - b for f in flips for (_, b), (_, a) in zip(f["target_gaps_before"], f["target_gaps_after"])]
    # the notebook's deltas: per flip, for each name of its dict, after minus before
    notebook_deltas = [dict(f["target_gaps_after"])[n] - g for f in flips for n, g in dict(f["target_gaps_before"]).items()]
    return {"order": [n for n, _ in listed], "start": start,
            "wrong": [-g for g in start.values() if g <= 0], "wrong_listed": sum(g <= 0 for _, g in listed),
            "deltas": deltas, "notebook_deltas": notebook_deltas}


@pytest.mark.parametrize("name", list(PUBLISHED_CONFIG))
def test_published_patch_against_plain_python_and_the_paper(name):
    if not _published_path(name).is_file():
        pytest.skip(f"{_published_path(name)} not downloaded")
    doc = _published_doc(name)
    patch = read_patch(_published_path(name))
    ref = _by_hand(doc["flips"])
    _, summary = crossing.boundary_crossing(patch.records, label=name)
    row = _valid(summary, schemas.BoundaryCrossingSummary).row(0, named=True)
    assert row["flips"] == len(doc["flips"])
    assert row["n_wrong_probes"] == len(ref["wrong"]) and row["n_wrong_listed"] == ref["wrong_listed"]
    assert row["median_wrong_distance"] == statistics.median(ref["wrong"])
    assert row["mean_wrong_distance"] == pytest.approx(statistics.fmean(ref["wrong"]), rel=1e-12)
    mean_delta = statistics.fmean(ref["deltas"])
    assert row["mean_delta"] == pytest.approx(mean_delta, rel=1e-9)
    assert row["median_distance_ratio"] == pytest.approx(statistics.median(ref["wrong"]) / abs(mean_delta), rel=1e-9)
    assert row["mean_distance_ratio"] == pytest.approx(statistics.fmean(ref["wrong"]) / abs(mean_delta), rel=1e-9)

    stage, domain = name.split("_", 1)
    flags = audits.recorded_flags(patch)
    assert len(flags) == len(doc["fitness_history"]) and sum(flags) == len(doc["flips"])
    if stage == "v2":  # §6.5: pass-1 flips and acceptance rate per domain
        assert len(doc["flips"]) == _printed(f"pass1.{domain}.flips")
        assert round(100 * sum(flags) / len(flags), 1) == _printed(f"pass1.{domain}.rate")
    else:  # §7.5: the scale share of each pass-2 patch
        share = audits.move_type_share({domain: patch.moves}).row(0, named=True)
        assert share["scale_flips"] == _printed(f"pass2.{domain}.scale_flips")
        assert round(100 * share["scale_share"]) == _printed(f"pass2.{domain}.scale_share")
    if name == "v2_editing":  # §7.1 checkpoints and the §7.6 editing paragraph
        acc = audits.acceptance_table({name: flags}).row(0, named=True)
        for c in ("rate_at_50", "rate_at_200", "rate_at_500", "rate_at_1000", "rolling_final"):
            assert round(100 * acc[c], 1) == _printed(f"acceptance.editing.{c}")
        assert round(row["mean_delta"], 6) == _printed("crossing.editing.mean_delta")
        for c in ("nearest_wrong_start", "nearest_wrong_end"):
            assert round(row[c], 3) == _printed(f"crossing.editing.{c}")
        assert round(row["nearest_wrong_mean_delta"], 6) == _printed("crossing.editing.nearest_wrong_mean_delta")


def _pooled_by_hand(names: list[str]) -> dict:
    per = {n: _by_hand(_published_doc(n)["flips"]) for n in names}
    first: dict[str, float] = {}
    for r in per.values():
        for probe in r["order"]:
            first.setdefault(probe, r["start"][probe])
    return {"first": [-g for g in first.values() if g <= 0],
            "every": [d for r in per.values() for d in r["wrong"]],
            "deltas": [d for r in per.values() for d in r["deltas"]],
            "notebook_deltas": [d for r in per.values() for d in r["notebook_deltas"]]}


def test_published_patches_pooled_against_plain_python():
    names = _present()
    if len(names) < 2:
        pytest.skip(f"fewer than two published patches under {PUBLISHED_DIR}")
    ref = _pooled_by_hand(names)
    mean_delta = statistics.fmean(ref["deltas"])
    records = {n: read_patch(_published_path(n)).records for n in names}
    for pool in ("first", "every"):
        _, summary = crossing.boundary_crossing_pooled(records, pool=pool)
        row = _valid(summary, schemas.BoundaryCrossingSummary).row(-1, named=True)
        wrong = ref[pool]
        assert row["flips"] == sum(len(_published_doc(n)["flips"]) for n in names)
        assert row["mean_delta"] == pytest.approx(mean_delta, rel=1e-9)
        assert row["n_wrong_probes"] == len(wrong)
        assert row["median_wrong_distance"] == statistics.median(wrong)
        assert row["mean_wrong_distance"] == pytest.approx(statistics.fmean(wrong), rel=1e-12)
        assert row["median_distance_ratio"] == pytest.approx(statistics.median(wrong) / abs(mean_delta), rel=1e-9)
        assert row["mean_distance_ratio"] == pytest.approx(statistics.fmean(wrong) / abs(mean_delta), rel=1e-9)
    # the notebook's own ratio ("Ratio: ...x"): its mean wrong distance over every patch's start,
    # over its mean of name-keyed deltas; ours divides by the mean by position, which differs only
    # through the names upstream's math probes list twice
    notebook_ratio = statistics.fmean(ref["every"]) / abs(statistics.fmean(ref["notebook_deltas"]))
    assert row["mean_distance_ratio"] == pytest.approx(notebook_ratio, rel=0.01)


def test_published_patches_reproduce_the_papers_section_7_6():
    missing = [n for n in PUBLISHED_CONFIG if n not in _present()]
    if missing:
        pytest.skip(f"published patches not downloaded: {', '.join(missing)}")
    records = {n: read_patch(_published_path(n)).records for n in PUBLISHED_CONFIG}
    _, summary = crossing.boundary_crossing_pooled(records)
    row = summary.row(-1, named=True)
    assert row["flips"] == _printed("crossing.flips")  # 2,252
    assert row["flips_changing_any_target_sign"] == _printed("crossing.flips_changing_any_target_sign")
    # "3.3 logit points (median across all 141 wrong probes at baseline)": pass 1's starts, by name
    assert row["n_wrong_probes"] == _printed("crossing.n_wrong")
    assert round(row["median_wrong_distance"], 1) == _printed("crossing.median_wrong_distance")
    assert round(row["mean_delta"], 4) == _printed("crossing.mean_delta")
    # "a ratio of approximately 33,000:1", the ratio of the two rounded figures
    assert row["median_distance_ratio"] == pytest.approx(_printed("crossing.distance_ratio"), rel=0.05)
