"""Paper-scale benchmark items (GSM8K, IFEval, MMLU, MuSR): rows in the datasets' published column
layouts become rendered chat items, and hand-written outputs are scored as a reader would."""

from __future__ import annotations

import json

import polars as pl
import pytest

from neagari.evaluation.benchmark_items import BenchmarkError, load_items, render_items, score_output
from neagari.engine.gguf_io import GGUFFile
from neagari.engine.tokenizer import GGUFTokenizer


@pytest.fixture
def files(tmp_path):
    # column layouts as in openai/gsm8k, google/IFEval, cais/mmlu and TAUR-Lab/MuSR
    pl.DataFrame({"question": ["Tom has 3 apples and buys 15 more. How many?", "What is 2 + 2?"],
                  "answer": ["3 + 15 = <<3+15=18>>18\n#### 18", "#### 4"]}).write_parquet(tmp_path / "gsm8k.parquet")
    ifeval = [{"key": 1000, "prompt": "Write one sentence about cats, all in lowercase.",
               "instruction_id_list": ["change_case:english_lowercase"], "kwargs": [{}]},
              {"key": 1001, "prompt": "Answer in Kannada.", "instruction_id_list": ["language:response_language"],
               "kwargs": [{"language": "kn"}]}]
    (tmp_path / "ifeval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ifeval))
    pl.DataFrame({"question": ["Which planet is largest?"], "subject": ["astronomy"],
                  "choices": [["Mars", "Jupiter", "Venus", "Earth"]], "answer": [1]}).write_parquet(tmp_path / "mmlu.parquet")
    pl.DataFrame({"narrative": ["Ann was in the library. Bob was at home."], "question": ["Who did it?"],
                  "choices": ["['Ann', 'Bob']"], "answer_index": [1], "answer_choice": ["Bob"]}
                 ).write_parquet(tmp_path / "musr.parquet")
    return tmp_path


def test_items_from_each_format(files):
    gsm, c = load_items("gsm8k", files / "gsm8k.parquet")
    assert c == {"rows": 2, "items": 2, "skipped_unsupported": 0}
    assert gsm[0]["id"] == "gsm8k/0" and gsm[0]["user"].startswith("Tom has 3 apples")
    assert "#### <number>" in gsm[0]["user"]
    ife, c = load_items("ifeval", files / "ifeval.jsonl")
    # the language instruction is outside the implemented subset: left out and counted
    assert c == {"rows": 2, "items": 1, "skipped_unsupported": 1} and ife[0]["id"] == "ifeval/1000"
    mmlu, _ = load_items("mmlu", files / "mmlu.parquet")
    assert mmlu[0]["gold"] == "B" and "B. Jupiter" in mmlu[0]["user"]
    musr, _ = load_items("musr", files / "musr.parquet")
    assert musr[0]["gold"] == 2 and "2. Bob" in musr[0]["user"] and musr[0]["user"].startswith("Ann was")


def test_limit_is_a_seeded_sample_in_file_order(tmp_path):
    import random

    n = 20
    pl.DataFrame({"question": [f"What is {i} + 1?" for i in range(n)],
                  "answer": [f"#### {i + 1}" for i in range(n)]}).write_parquet(tmp_path / "g.parquet")
    full, _ = load_items("gsm8k", tmp_path / "g.parquet")
    assert [it["id"] for it in full] == [f"gsm8k/{i}" for i in range(n)]
    samples = []
    for seed in range(6):
        a, _ = load_items("gsm8k", tmp_path / "g.parquet", limit=5, seed=seed)
        rows = [int(it["id"].split("/")[1]) for it in a]
        # the documented sample: Python's random.Random(seed).sample of the row indices, sorted
        assert rows == sorted(random.Random(seed).sample(range(n), 5))
        assert a == [full[i] for i in rows]  # the same items as the full load, in file order
        assert all(it["user"].startswith(f"What is {i} + 1?") and it["gold"] == f"#### {i + 1}" for i, it in zip(rows, a))
        samples.append(rows)
    assert len({tuple(r) for r in samples}) > 1  # the seed matters
    assert load_items("gsm8k", tmp_path / "g.parquet", limit=n)[0] == full  # limit >= rows: everything


def test_bad_inputs_fail_clearly(files, tmp_path):
    with pytest.raises(BenchmarkError, match="unknown benchmark"):
        load_items("hellaswag", files / "gsm8k.parquet")
    with pytest.raises(BenchmarkError, match="lacks column"):
        load_items("mmlu", files / "gsm8k.parquet")


def test_rendering_uses_the_models_chat_template(files, fixture_models):
    tok = GGUFTokenizer.from_metadata(dict(GGUFFile(fixture_models["tied_gqa"]).metadata))
    items, _ = load_items("mmlu", files / "mmlu.parquet")
    out = render_items(items, tok.apply_chat_template, thinking=False, max_new_tokens={"mmlu": 64})
    want = tok.apply_chat_template([{"role": "user", "content": items[0]["user"]}], add_generation_prompt=True,
                                   enable_thinking=False)
    assert out[0]["prompt"] == want and out[0]["max_new_tokens"] == 64
    assert out[0]["prompt"].startswith("<|im_start|>user\nWhich planet is largest?")


@pytest.mark.parametrize("bench, output, correct", [
    ("gsm8k", "<think>3+15</think>He has 18 apples.\n#### 18", True),
    ("gsm8k", "#### 17", False),
    ("ifeval", "cats purr softly.", True),
    ("ifeval", "Cats purr softly.", False),
    ("mmlu", "<think>largest gas giant</think>Answer: B", True),
    ("mmlu", "Answer: A", False),
    ("musr", "Answer: 2", True),
    ("musr", "Answer: 1", False),
])
def test_scoring_by_hand(files, bench, output, correct):
    suffix = "jsonl" if bench == "ifeval" else "parquet"
    item = load_items(bench, files / f"{bench}.{suffix}")[0][0]
    assert score_output(item, output) is correct


def test_exact_items_keep_exact_match():
    assert score_output({"answer": "936"}, "936") and not score_output({"answer": "936"}, "93")


def test_musr_csv_in_the_repository_layout(tmp_path):
    """MuSR's own CSV (a BOM, quoted multi-line narratives, choices as a Python list literal) gives
    the same items as the parquet of the same rows."""
    rows = {"narrative": ['Ann was in the library, "reading".\nBob was at home.'], "question": ["Who did it?"],
            "choices": ["['Ann', 'Bob']"], "answer_index": [1], "answer_choice": ["Bob"]}
    pl.DataFrame(rows).write_parquet(tmp_path / "musr.parquet")
    csv = pl.DataFrame(rows).write_csv()
    (tmp_path / "murder_mystery.csv").write_bytes(b"\xef\xbb\xbf" + csv.encode())
    assert load_items("musr", tmp_path / "murder_mystery.csv") == load_items("musr", tmp_path / "musr.parquet")


# ---------------------------------------------------------------------------- resumable evaluation


class Stop(Exception):
    pass


def stop_at(item_id, evaluate):
    """``evaluate``, killed when it reaches the item ``item_id``."""
    def run(it):
        if it["id"] == item_id:
            raise Stop
        return evaluate(it)
    return run


def _items(n=7):
    return [{"id": f"gsm8k/{i}", "domain": "gsm8k", "scorer": "gsm8k", "gold": f"#### {i}", "prompt": f"q{i}",
             "max_new_tokens": 8 + i} for i in range(n)]


def test_resumable_loop_resumes_exactly(tmp_path):
    from neagari.evaluation.resumable import evaluate_resumable, partial_path

    items = _items()
    seen = []

    def evaluate(it, fail_after=None):
        if fail_after is not None and len(seen) == fail_after:
            raise Stop
        seen.append(it["id"])
        return {"id": it["id"], "out": it["prompt"].upper(), "ok": it["max_new_tokens"] % 2 == 0, "x": 0.1 * len(seen)}

    whole = evaluate_resumable(items, evaluate, tmp_path / "whole.partial.jsonl", {"model_sha256": "a" * 64})
    seen.clear()
    partial = partial_path(tmp_path / "t.parquet")
    assert partial.name == "t.parquet.partial.jsonl"
    with pytest.raises(Stop):
        evaluate_resumable(items, lambda it: evaluate(it, fail_after=3), partial, {"model_sha256": "a" * 64})
    assert len(partial.read_text().splitlines()) == 1 + 3  # header + 3 finished items
    written = []
    got = evaluate_resumable(items, evaluate, partial, {"model_sha256": "a" * 64}, write=written.append)
    assert seen == [it["id"] for it in items]  # every item evaluated exactly once over both runs
    assert got == whole and written == [whole] and not partial.exists()


def test_resumable_drops_a_torn_last_line(tmp_path):
    from neagari.evaluation.resumable import evaluate_resumable

    items, partial = _items(3), tmp_path / "p.jsonl"
    evaluate = lambda it: {"id": it["id"], "v": it["prompt"]}  # noqa: E731
    whole = evaluate_resumable(items, evaluate, tmp_path / "w.jsonl", {})
    with pytest.raises(Stop):
        evaluate_resumable(items, stop_at("gsm8k/2", evaluate), partial, {})
    with open(partial, "ab") as f:
        f.write(b'{"id": "gsm8k/2", "v"')  # killed in the middle of a write
    assert evaluate_resumable(items, evaluate, partial, {}) == whole


@pytest.mark.parametrize("change, differs", [
    (lambda items, h: (items, {**h, "model_sha256": "b" * 64}), "model_sha256"),
    (lambda items, h: (items, {**h, "generation": {"n_ctx": 4096}}), "generation"),
    (lambda items, h: ([{**items[0], "prompt": "other"}, *items[1:]], h), "items"),
    (lambda items, h: (items[:-1], h), "items"),
])
def test_resumable_refuses_a_partial_file_of_other_settings(tmp_path, change, differs):
    from neagari.evaluation.resumable import PartialFileError, evaluate_resumable

    items, partial = _items(4), tmp_path / "p.jsonl"
    header = {"model_sha256": "a" * 64, "generation": {"n_ctx": 8192}}
    with pytest.raises(Stop):
        evaluate_resumable(items, stop_at("gsm8k/1", lambda it: {"id": it["id"]}), partial, header)
    before = partial.read_bytes()
    other_items, other_header = change(items, header)
    with pytest.raises(PartialFileError) as e:
        evaluate_resumable(other_items, lambda it: pytest.fail("nothing is evaluated"), partial, other_header)
    msg = str(e.value)
    assert "\n" not in msg and f"differs in {differs}" in msg and "delete it to start over" in msg
    assert partial.read_bytes() == before  # left as it was


class FakeGenerator:
    """The part of LlamaGenerator evaluate_items uses: a deterministic 'model'."""

    def tokenize(self, text):
        return list(text.encode())

    def generate(self, prompt, max_new_tokens, stops=()):
        from neagari.evaluation.llama_eval import Generation

        n = int(prompt[1:])
        text = f"#### {n if n % 3 else n + 1}"  # every third answer wrong
        return Generation(list(range(min(len(text), max_new_tokens))), text, "eog")


def test_evaluate_items_interrupted_by_the_scorer_resumes_to_the_same_table(tmp_path, monkeypatch):
    from neagari.evaluation import llama_eval
    from neagari.evaluation.resumable import partial_path
    from neagari.evaluation.schemas import BenchItems
    from neagari.tables import read_table, write_table

    items, gen = _items(), FakeGenerator()
    header = {"model_sha256": "a" * 64, "generation": {"n_ctx": 8192, "seed": 42}}
    whole = llama_eval.evaluate_items(gen, items)
    assert whole["correct"].to_list() == [i % 3 != 0 for i in range(len(items))]

    out = tmp_path / "base.parquet"
    real_score, calls = llama_eval.score_output, []

    def scorer_killed_after(k):
        def score(item, output):
            if len(calls) == k:
                raise Stop
            calls.append(item["id"])
            return real_score(item, output)
        return score

    monkeypatch.setattr(llama_eval, "score_output", scorer_killed_after(4))
    with pytest.raises(Stop):
        llama_eval.evaluate_items(gen, items, partial=partial_path(out), header=header,
                                  write=lambda t: write_table(t, out, BenchItems))
    assert not out.exists() and len(partial_path(out).read_text().splitlines()) == 1 + 4
    monkeypatch.setattr(llama_eval, "score_output", real_score)
    got = llama_eval.evaluate_items(gen, items, partial=partial_path(out), header=header,
                                    write=lambda t: write_table(t, out, BenchItems))
    assert got.equals(whole) and read_table(out).equals(whole) and not partial_path(out).exists()

    # a partial file from another model is refused, not mixed in
    monkeypatch.setattr(llama_eval, "score_output", scorer_killed_after(len(calls) + 2))
    with pytest.raises(Stop):
        llama_eval.evaluate_items(gen, items, partial=partial_path(out), header=header)
    monkeypatch.setattr(llama_eval, "score_output", real_score)
    from neagari.evaluation.resumable import PartialFileError

    with pytest.raises(PartialFileError, match=r"made with other settings \(differs in model_sha256\)"):
        llama_eval.evaluate_items(gen, items, partial=partial_path(out), header={**header, "model_sha256": "b" * 64})


@pytest.mark.llama
def test_eval_benchmark_script_resumes_after_a_kill(tmp_path, fixture_models, monkeypatch):
    """scripts/eval_benchmark.py under llama.cpp: killed after 3 items, run again, it gives the table of
    an uninterrupted run and removes its partial file; a partial file of another model is refused."""
    import runpy
    import types
    from pathlib import Path

    from snakemake.iocontainers import Namedlist

    pytest.importorskip("llama_cpp")
    from neagari.evaluation import llama_eval
    from neagari.evaluation.resumable import PartialFileError, partial_path

    items = [{"id": f"exact/{i}", "domain": "exact", "prompt": p, "answer": "x", "max_new_tokens": 6}
             for i, p in enumerate(["The capital of France is", "def add(a, b):", "1, 2, 3,", "Hello", "<|im_start|>"])]
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(it) + "\n" for it in items))
    script = Path(__file__).parents[1] / "scripts" / "eval_benchmark.py"

    def run(out, model="tied_gqa"):
        smk = types.SimpleNamespace(
            input=Namedlist(fromdict={"model": str(fixture_models[model]), "eval_sets": str(tmp_path / "items.jsonl")}),
            output=Namedlist(fromdict={"table": str(out)}), log=Namedlist([str(tmp_path / "log")]), threads=1,
            params=types.SimpleNamespace(n_ctx=256, seed=42, max_new_tokens=None, n_gpu_layers=0),
            wildcards=types.SimpleNamespace(model="m", variant="base"), rule="eval_benchmark", config={})
        runpy.run_path(str(script), init_globals={"snakemake": smk})

    run(tmp_path / "whole.parquet")
    whole = pl.read_parquet(tmp_path / "whole.parquet")
    assert whole["id"].to_list() == [it["id"] for it in items] and not partial_path(tmp_path / "whole.parquet").exists()

    out, real, calls = tmp_path / "base.parquet", llama_eval.score_output, []

    def killed(item, output):
        if len(calls) == 3:
            raise Stop
        calls.append(item["id"])
        return real(item, output)

    monkeypatch.setattr(llama_eval, "score_output", killed)
    with pytest.raises(Stop):
        run(out)
    assert not out.exists() and len(partial_path(out).read_text().splitlines()) == 1 + 3
    monkeypatch.setattr(llama_eval, "score_output", real)
    other = [m for m in fixture_models if m != "tied_gqa"][0]
    with pytest.raises(PartialFileError, match="differs in .*model_sha256"):
        run(out, model=other)
    run(out)
    assert pl.read_parquet(out).equals(whole) and not partial_path(out).exists()
