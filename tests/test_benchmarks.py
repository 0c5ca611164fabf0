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
