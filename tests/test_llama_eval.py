"""neagari.evaluation.llama_eval: llama.cpp greedy generation against our engine on the same Q1_0 file,
stop strings, <think> stripping and exact-match scoring, and the paired base/patched comparison."""

from __future__ import annotations

import polars as pl
import pytest

from neagari.engine.engine import Engine
from neagari.engine.fixtures import FixtureSpec, write_fixture_model
from neagari.evaluation.llama_eval import cut_at_stop, paired_comparison
from neagari.evaluation.scorers import exact_match

PROMPTS = ["The capital of France is", "def add(a, b):\n    return", "In 1969, 3 astronauts flew",
           "<|im_start|>user\nExtract the sentence about dosage.<|im_end|>\n<|im_start|>assistant\n",
           "{\"status\": \"ok\", \"items\": [1, 2,", "I don't know; you'll see"]
N = 16  # greedy tokens compared per prompt
TIE = 0.01  # top-2 margin under 1% of the logit range: llama.cpp's 8-bit activations may flip it


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    llama_eval = pytest.importorskip("neagari.evaluation.llama_eval")
    pytest.importorskip("llama_cpp")
    path = write_fixture_model(tmp_path_factory.mktemp("llama_eval") / "m.gguf",
                               FixtureSpec(n_layer=2, hidden=128, ffn=256, n_head=4, n_kv_head=2, head_dim=32,
                                           tied_embeddings=False, seed=5))
    gen = llama_eval.LlamaGenerator(path, n_ctx=512, n_threads=1)
    yield Engine.load(path), gen
    gen.close()


# ---------------------------------------------------------------------------- against our engine


@pytest.mark.llama
def test_tokenization_matches_engine(models):
    engine, gen = models
    for text in PROMPTS:
        assert gen.tokenize(text) == engine.tokenizer.encode(text), text


@pytest.mark.llama
def test_greedy_generation_matches_engine(models):
    """Same greedy tokens as Engine.generate up to the first near-tie of llama.cpp's logits."""
    engine, gen = models
    full = 0
    for text in PROMPTS:
        ids = engine.tokenizer.encode(text)
        ours = engine.generate([ids], max_new_tokens=N)[0]
        ref = gen.generate_ids(ids, N, track_margins=True)
        tie = next((i for i, m in enumerate(ref.margins) if m <= TIE), None)
        n = len(ref.margins) if tie is None else tie  # the tied step itself may differ
        assert ours[:n] == ref.ids[:n], text
        if tie is None:
            # both stopped at the same place: the budget or the same end-of-turn token
            assert ours == ref.ids, text
            full += 1
    assert full >= 2, "near-ties everywhere: too few full comparisons"


@pytest.mark.llama
def test_generation_from_empty_cache_each_time(models):
    _, gen = models
    first = gen.generate(PROMPTS[0], N)
    gen.generate(PROMPTS[1], N)
    assert gen.generate(PROMPTS[0], N) == first


@pytest.mark.llama
def test_text_is_decoded_pieces(models):
    engine, gen = models
    g = gen.generate(PROMPTS[2], N)
    assert g.text == engine.tokenizer.decode(g.ids)
    assert g.finish in ("eog", "length")
    assert g.finish == "eog" or len(g.ids) == N


@pytest.mark.llama
def test_stop_string_cuts_generation(models):
    """Stopping at a substring of the free continuation: same text up to it, fewer tokens."""
    _, gen = models
    free = gen.generate(PROMPTS[0], 24)
    text = free.text
    # two printable ASCII characters after the start (a random model also emits broken UTF-8)
    at = [i for i in range(1, len(text) - 1) if text[i : i + 2].isascii() and text[i : i + 2].isprintable()]
    assert at, f"no ASCII stop string to cut at in {text!r}"
    stop = text[at[len(at) // 2] : at[len(at) // 2] + 2]
    cut = gen.generate(PROMPTS[0], 24, stops=["never-there", stop])
    assert cut.finish == "stop"
    assert cut.text == text[: text.index(stop)]
    assert cut.ids == free.ids[: len(cut.ids)]
    # the generation ends with the token that completed the stop string
    pieces = b"".join(gen.piece(i) for i in cut.ids)
    assert stop.encode() in pieces and stop.encode() not in pieces[: -len(gen.piece(cut.ids[-1]))]


@pytest.mark.llama
def test_budget_and_context(models):
    _, gen = models
    assert len(gen.generate(PROMPTS[0], 3).ids) <= 3
    long = gen.tokenize(PROMPTS[0]) * 200
    with pytest.raises(ValueError, match="context"):
        gen.generate_ids(long[: gen.n_ctx], 4)
    near_end = long[: gen.n_ctx - 2]
    assert len(gen.generate_ids(near_end, 50).ids) <= 2


@pytest.mark.llama
def test_evaluate_items_scores_exact_match(models):
    """Items whose answer is the model's own greedy continuation score correct, others wrong."""
    from neagari.evaluation.llama_eval import evaluate_items

    _, gen = models
    free = gen.generate(PROMPTS[1], 8)
    first_line = free.text.split("\n")[0]
    assert first_line.strip(), "continuation starts with a newline"
    third = gen.generate(PROMPTS[0], 8).text
    # preconditions of the expected verdicts below: no think markers for the scorer to strip, no
    # stop string inside the free continuation (so the stopped run produces the same text)
    assert third.strip() and not any(s in third for s in ("<think>", "</think>", "<|im_end|>"))
    assert "<think>" not in first_line and "</think>" not in first_line
    items = [
        {"id": "a", "domain": "x", "prompt": PROMPTS[1], "answer": f"  {first_line.strip()} ", "stop": "\n"},
        {"id": "b", "domain": "x", "prompt": PROMPTS[1], "answer": "not the output", "stop": "\n"},
        {"id": "c", "domain": "y", "prompt": PROMPTS[0], "answer": f"\t{third.strip()}\n", "stop": "<|im_end|>"},
        {"id": "d", "domain": "y", "prompt": PROMPTS[0], "answer": third.strip()[:-1], "stop": "<|im_end|>"},
    ]
    table = evaluate_items(gen, items, max_new_tokens=8)
    assert table["id"].to_list() == ["a", "b", "c", "d"]
    # c: the model's own continuation up to whitespace; d: the same less its last character
    assert table["correct"].to_list() == [True, False, True, False]
    assert table["output"][0] == first_line
    assert table["output"][2] == third and table["output"][3] == third
    assert "\n" not in table["output"][0]


# ---------------------------------------------------------------------------- hand-made strings


@pytest.mark.parametrize("text, stops, want", [
    ("42\nnext", ["\n"], ("42", True)),
    ("42<|im_end|>\nmore", ["<|im_end|>"], ("42", True)),
    ("a, b; c", [";", ","], ("a", True)),  # the earliest stop wins, not the first listed
    ("no stop here", ["\n", ""], ("no stop here", False)),
    ("", ["\n"], ("", False)),
    ("\nleading", ["\n"], ("", True)),
])
def test_cut_at_stop(text, stops, want):
    assert cut_at_stop(text, stops) == want


@pytest.mark.parametrize("output, answer, want", [
    ("42", "42", True),
    ("  42 \n", "42", True),
    ("42", " 42\n", True),
    ("<think>\nlet me see: 41?\n</think>\n\n42", "42", True),
    ("<think>\n\n</think>\n\ndragon meadow dagger", "dragon meadow dagger", True),
    ("</think>\n\n42", "42", True),  # the template opened the block in the prompt
    ("42 <think>unfinished thought", "42", True),  # cut off mid-thought
    ("<think>42", "42", False),  # only a thought, no answer
    ("42.", "42", False),
    ("4 2", "42", False),
    ("Dragon", "dragon", False),  # exact: case counts
    ("", "", True),
])
def test_exact_match(output, answer, want):
    assert exact_match(output, answer) is want


# ---------------------------------------------------------------------------- paired comparison


def _runs(pairs_by_domain):
    """Base and patched per-item tables from {domain: (both right, b, c, both wrong)}."""
    rows_b, rows_p = [], []
    for domain, counts in pairs_by_domain.items():
        kinds = [(True, True)] * counts[0] + [(False, True)] * counts[1] + [(True, False)] * counts[2] \
            + [(False, False)] * counts[3]
        for i, (base, patched) in enumerate(kinds):
            rows_b.append({"id": f"{domain}-{i}", "domain": domain, "correct": base})
            rows_p.append({"id": f"{domain}-{i}", "domain": domain, "correct": patched})
    return pl.DataFrame(rows_b), pl.DataFrame(rows_p[::-1])  # order must not matter


def test_paired_comparison_reproduces_paper_gsm8k():
    """§6.7 GSM8K: n = 1,319, 1,125 -> 1,135 correct, discordant 21 vs 11, p = 0.110,
    95% CI [-0.08, +1.60] pp (Wald); Newcombe's hybrid score interval beside it."""
    base, patched = _runs({"gsm8k": (1125 - 11, 21, 11, 1319 - 1125 - 21)})
    t = paired_comparison(base, patched)
    assert t["domain"].to_list() == ["gsm8k", "all"]
    row = t.row(0, named=True)
    assert (row["n"], row["base_correct"], row["patched_correct"], row["b"], row["c"]) == (1319, 1125, 1135, 21, 11)
    assert round(row["base_accuracy_pct"], 2) == 85.29 and round(row["patched_accuracy_pct"], 2) == 86.05
    assert round(row["mcnemar_p"], 3) == 0.110
    assert (round(row["wald_ci_lo_pp"], 2), round(row["wald_ci_hi_pp"], 2)) == (-0.08, 1.60)
    assert (round(row["ci_lo_pp"], 2), round(row["ci_hi_pp"], 2)) == (-0.11, 1.64)
    assert row["diff_pp"] == pytest.approx(100 * 10 / 1319)


def test_paired_comparison_domains_and_all():
    base, patched = _runs({"math": (3, 2, 0, 5), "coding": (4, 0, 1, 0)})
    t = paired_comparison(base, patched)
    assert t["domain"].to_list() == ["coding", "math", "all"]
    rows = {r["domain"]: r for r in t.iter_rows(named=True)}
    assert (rows["math"]["n"], rows["math"]["b"], rows["math"]["c"]) == (10, 2, 0)
    assert rows["math"]["base_accuracy_pct"] == pytest.approx(30.0)
    assert rows["math"]["patched_accuracy_pct"] == pytest.approx(50.0)
    assert rows["math"]["mcnemar_p"] == pytest.approx(0.5)  # 2 * (1/2)^2
    assert (rows["coding"]["b"], rows["coding"]["c"], rows["coding"]["mcnemar_p"]) == (0, 1, 1.0)
    # no discordant pair in a domain: the interval still has width
    base, patched = _runs({"tool_calling": (3, 0, 0, 2)})
    row = paired_comparison(base, patched).row(0, named=True)
    assert row["ci_lo_pp"] < 0 < row["ci_hi_pp"] and row["wald_ci_lo_pp"] == row["wald_ci_hi_pp"] == 0
    assert (rows["all"]["n"], rows["all"]["b"], rows["all"]["c"]) == (15, 2, 1)
    assert rows["all"]["diff_pp"] == pytest.approx(100 / 15)
    from neagari.evaluation.schemas import BenchComparison

    BenchComparison.validate(t.select(pl.lit("m").alias("model"), pl.all()))


def test_paired_comparison_refuses_different_items():
    base, patched = _runs({"math": (3, 2, 0, 5)})
    with pytest.raises(ValueError, match="different items"):
        paired_comparison(base, patched.head(9))


# ---------------------------------------------------------------------------- held-out summary


def test_heldout_summary_script_reproduces_paper(tmp_path):
    """scripts/eval_heldout_summary.py on the paper's §6.8.1 cross-tab: COPY -> PASS 6/78 = 7.7%,
    Wilson [3.6, 15.8], below the pre-registered 20%; per domain legal 3/15 ... logs 0/19."""
    import runpy
    import types
    from pathlib import Path

    from snakemake.iocontainers import Namedlist

    rows = [("PASS", "PASS", "legal")] * 19 + [("PASS", "COPY", "api")] + [("PARTIAL", "PARTIAL", "code")] * 2
    per_domain = {"legal": (3, 15), "medical": (3, 16), "api": (0, 14), "code": (0, 14), "logs": (0, 19)}
    for domain, (k, n) in per_domain.items():
        rows += [("COPY", "PASS", domain)] * k + [("COPY", "COPY", domain)] * (n - k)
    table = pl.DataFrame(rows, schema=["base_outcome", "patched_outcome", "domain"], orient="row").with_columns(
        name=pl.format("p{}", pl.int_range(pl.len())), base_output=pl.lit(""), patched_output=pl.lit(""))
    table.write_parquet(tmp_path / "t.parquet")
    out = {"crosstab": str(tmp_path / "c.parquet"), "summary": str(tmp_path / "s.parquet")}
    smk = types.SimpleNamespace(
        input=Namedlist(fromdict={"table": str(tmp_path / "t.parquet")}), output=Namedlist(fromdict=out),
        log=Namedlist([str(tmp_path / "log")]), params=types.SimpleNamespace(threshold=0.2),
        wildcards=types.SimpleNamespace(model="m", fitness="focused"), rule="eval_heldout_summary", config={})
    script = Path(__file__).parents[1] / "scripts" / "eval_heldout_summary.py"
    runpy.run_path(str(script), init_globals={"snakemake": smk})

    crosstab = pl.read_parquet(out["crosstab"])
    assert crosstab.height == 16 and crosstab["count"].sum() == 100
    cells = {(r["base_outcome"], r["patched_outcome"]): r["count"] for r in crosstab.iter_rows(named=True)}
    assert (cells["PASS", "PASS"], cells["PASS", "COPY"], cells["COPY", "PASS"], cells["COPY", "COPY"],
            cells["PARTIAL", "PARTIAL"], cells["OTHER", "OTHER"]) == (19, 1, 6, 72, 2, 0)
    summary = {r["domain"]: r for r in pl.read_parquet(out["summary"]).iter_rows(named=True)}
    top = summary["all"]
    assert (top["base_copy"], top["converted"], round(100 * top["rate"], 1)) == (78, 6, 7.7)
    assert (round(100 * top["ci_lo"], 1), round(100 * top["ci_hi"], 1)) == (3.6, 15.8)
    assert top["generalizes"] is False and (top["base_pass"], top["pass_lost"]) == (20, 1)
    assert {d: (r["converted"], r["base_copy"]) for d, r in summary.items() if d != "all"} == per_domain
    assert all(r["generalizes"] is None for d, r in summary.items() if d != "all")
    assert Path(out["summary"] + ".prov.json").exists()
