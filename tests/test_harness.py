"""neagari.evaluation.harness: each model served by llama.cpp's OpenAI-compatible server and
evaluated by lm-evaluation-harness on local tables (no hub access), its per-item verdicts read
from the sample logs; checked against the server's answers to the same messages asked directly
(the test's own HTTP requests and verdicts), and the McNemar counts that follow. The shipped
embedded models stand in for base and patched."""

from __future__ import annotations

import json
import shutil
import sqlite3
import urllib.request
from pathlib import Path

import polars as pl
import pytest
import yaml

pytest.importorskip("lm_eval")
pytest.importorskip("llama_cpp")
pytest.importorskip("fastapi")  # llama-cpp-python[server]

from neagari.evaluation import harness  # noqa: E402
from neagari.evaluation.harness_samples import SampleLogError, read_sample_log  # noqa: E402
from neagari.evaluation.llama_eval import paired_comparison  # noqa: E402
from neagari.evaluation.lm_eval_main import seed_language_detection  # noqa: E402
from neagari.evaluation.schemas import BenchComparison, BenchItems  # noqa: E402
from neagari.stats import mcnemar_exact  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODELS = {"base": REPO / "resources/models/embedded-qat.gguf", "patched": REPO / "resources/models/embedded-fp.gguf"}
N_CTX = 512  # the embedded models' context
ECHO_TOKENS = 10
IFEVAL_TOKENS = 16
PROMPTS = ["The capital of France is", "Extract the sentence about dosage.", "def add(a, b):",
           "List three colours.", "What is 3 + 4?", "Repeat after me: blue sky.", "Name a river.",
           "The patient takes 5 mg twice daily. How much?"]
JUNK_PROMPT = "Say something."  # its item's target is no reply, so both models get it wrong
ASKED = [*PROMPTS, JUNK_PROMPT]
IFEVAL_ROWS = [
    {"key": 11, "prompt": "Write a note about the weather. Do not use any commas.",
     "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
    {"key": 12, "prompt": "Describe a cat using lowercase letters only.",
     "instruction_id_list": ["change_case:english_lowercase"], "kwargs": [{}]},
    {"key": 13, "prompt": "Say hello. End your reply with the exact phrase 'Is there anything else?'",
     "instruction_id_list": ["startend:end_checker"], "kwargs": [{"end_phrase": "Is there anything else?"}]},
]
# A task of the test's own: the reply up to the first newline, exact match with the target.
ECHO_TEMPLATE = {
    "output_type": "generate_until", "doc_to_text": "{{prompt}}", "doc_to_target": "{{target}}",
    "generation_kwargs": {"until": ["\n"], "do_sample": False, "temperature": 0.0},
    "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
    "metadata": {"version": 1.0},
}


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    """No hub access in this process either, and an NLTK data path with a punkt_tab folder, so
    that lm-eval's IFEval module does not try to download it (the checks used here need no data)."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("offline")
    nltk_data = root / "nltk_data"
    (nltk_data / "tokenizers" / "punkt_tab" / "english").mkdir(parents=True)
    for k, v in {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(root / "datasets"),
                 "NLTK_DATA": str(nltk_data)}.items():
        mp.setenv(k, v)
    import datasets
    import huggingface_hub.constants
    import nltk

    mp.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    mp.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    mp.setattr(nltk.data, "path", [str(nltk_data), *nltk.data.path])
    yield nltk_data
    mp.undo()


def ask(url: str, messages: list[dict], max_tokens: int, stop: list[str]) -> str:
    """The server's greedy reply to ``messages``, asked directly, with what follows the last
    ``</think>`` kept (left-stripped, as lm-eval keeps it)."""
    body = {"model": harness.MODEL_NAME, "messages": messages, "max_tokens": max_tokens, "temperature": 0.0,
            "repeat_penalty": 1.0, "stop": stop, "seed": harness.SEED}
    req = urllib.request.Request(f"{url}/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=120) as resp:
        text = json.load(resp)["choices"][0]["message"]["content"] or ""
    return text.split("</think>")[-1].lstrip()


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def direct(tmp_path_factory):
    """Per model: its replies to PROMPTS (echo settings) and to the IFEval prompts, asked directly."""
    logs = tmp_path_factory.mktemp("direct")
    out = {}
    for variant, model in MODELS.items():
        with harness.LlamaServer(model, logs / f"{variant}.log", n_ctx=N_CTX, n_gpu_layers=0, n_threads=1) as srv:
            out[variant] = {"echo": [ask(srv.url, user(p), ECHO_TOKENS, ["\n"]) for p in ASKED],
                            "ifeval": [ask(srv.url, user(r["prompt"]), IFEVAL_TOKENS, []) for r in IFEVAL_ROWS]}
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory, offline, direct):
    """Both models through server and harness on two local tasks: 'echo', whose targets are made
    from the direct replies (items the base gets right and the patched wrong, the reverse, and
    neither), and the real IFEval recipe on three rows."""
    root = tmp_path_factory.mktemp("harness")
    base, patched = direct["base"]["echo"], direct["patched"]["echo"]
    differ = [i for i in range(len(PROMPTS)) if base[i] != patched[i]]
    assert len(differ) >= 2, f"base and patched reply alike to all but {len(differ)} prompts"
    rows = [{"prompt": PROMPTS[differ[0]], "target": base[differ[0]]},
            {"prompt": PROMPTS[differ[1]], "target": patched[differ[1]]},
            *({"prompt": PROMPTS[i], "target": base[i]} for i in range(len(PROMPTS)) if i not in differ[:2]),
            {"prompt": JUNK_PROMPT, "target": "no reply is this"}]
    (root / "echo.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "ifeval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in IFEVAL_ROWS))
    (root / "echo.yaml").write_text(yaml.safe_dump(ECHO_TEMPLATE))
    recipes = {"echo": harness.Recipe("echo", str(root / "echo.yaml"), "none", "exact_match", "echo/{doc_id}"),
               "ifeval": harness.TASKS["ifeval"]}
    data = {"echo": root / "echo.jsonl", "ifeval": root / "ifeval.jsonl"}
    tables = {v: harness.evaluate(m, data, root / v, recipes=recipes, cache_dir=root / f"{v}-cache",
                                  max_new_tokens={"echo": ECHO_TOKENS, "ifeval": IFEVAL_TOKENS}, n_ctx=N_CTX,
                                  n_gpu_layers=0, n_threads=1, thinking=False, nltk_data=offline)
              for v, m in MODELS.items()}
    return {"root": root, "rows": rows, "tables": tables}


def expected(direct, rows, variant: str) -> list[bool]:
    """The verdicts the direct replies give: echo by exact match, IFEval by lm-eval's checks, with
    language detection seeded as in the harness's lm-eval process."""
    from lm_eval.tasks.ifeval.utils import process_results

    seed_language_detection()

    reply = dict(zip(ASKED, direct[variant]["echo"]))
    echo = [reply[r["prompt"]] == r["target"] for r in rows]
    ifeval = [process_results(r, [a])["prompt_level_strict_acc"] for r, a in zip(IFEVAL_ROWS, direct[variant]["ifeval"])]
    return echo + ifeval


def test_verdicts_from_sample_logs_match_the_direct_replies(run, direct):
    for variant, table in run["tables"].items():
        BenchItems.validate(table)
        assert table["id"].to_list() == [f"echo/{i}" for i in range(len(run["rows"]))] + [
            f"ifeval/{r['key']}" for r in IFEVAL_ROWS]
        reply = dict(zip(ASKED, direct[variant]["echo"]))
        assert table["output"].to_list() == [reply[r["prompt"]] for r in run["rows"]] + direct[variant]["ifeval"]
        assert table["correct"].to_list() == expected(direct, run["rows"], variant), variant
        assert table["answer"].to_list()[: len(run["rows"])] == [r["target"] for r in run["rows"]]
    base = run["tables"]["base"].filter(pl.col("domain") == "echo")["correct"].to_list()
    assert base[0] and not base[-1]  # the item made from the base's reply, and the one nobody gives


def test_lm_eval_sent_the_messages_asked_directly(run):
    """The logged request of each item is one user message with the item's text, greedy, with
    the task's stop string and budget."""
    log = next((run["root"] / "base" / "lm_eval").rglob("samples_neagari_echo_*.jsonl"))
    for line, row in zip(log.read_text().splitlines(), run["rows"]):
        rec = json.loads(line)
        args = rec["arguments"]["gen_args_0"]
        chat = args["arg_0"][0] if isinstance(args["arg_0"], list) else args["arg_0"]  # lm-eval's JsonChatStr
        assert json.loads(chat) == user(row["prompt"])
        assert args["arg_1"]["until"] == ["\n"] and args["arg_1"]["max_gen_toks"] == ECHO_TOKENS
        assert args["arg_1"]["temperature"] == 0.0 and args["arg_1"]["do_sample"] is False
        assert args["arg_1"]["repeat_penalty"] == 1.0  # the server's default 1.1 would bend greedy


def test_mcnemar_counts_follow(run, direct):
    comp = paired_comparison(run["tables"]["base"], run["tables"]["patched"])
    BenchComparison.validate(comp.select(pl.lit("m").alias("model"), pl.all()))
    want_base, want_patched = expected(direct, run["rows"], "base"), expected(direct, run["rows"], "patched")
    b = sum(not x and y for x, y in zip(want_base, want_patched))
    c = sum(x and not y for x, y in zip(want_base, want_patched))
    row = comp.filter(pl.col("domain") == "all").row(0, named=True)
    assert (row["b"], row["c"], row["n"]) == (b, c, len(want_base))
    assert row["mcnemar_p"] == pytest.approx(mcnemar_exact(b, c))
    echo = comp.filter(pl.col("domain") == "echo").row(0, named=True)
    assert echo["b"] >= 1 and echo["c"] >= 1  # the two items made to disagree


def test_response_cache_holds_each_reply(run):
    """lm-eval's response cache (what a rerun after a kill resumes from): one entry per item, in a
    folder named by the model and server settings."""
    for variant, table in run["tables"].items():
        (db,) = (run["root"] / f"{variant}-cache").glob("*/responses_rank0.db")
        with sqlite3.connect(db) as con:
            (n,) = con.execute("select count(*) from unnamed").fetchone()
        assert n == table.height
    keys = {db.parent.name for v in MODELS for db in (run["root"] / f"{v}-cache").glob("*/responses_rank0.db")}
    assert len(keys) == 2  # two models, two caches


def test_rerun_after_a_kill_asks_only_for_the_missing_items(run, offline, tmp_path):
    """Half the cached replies dropped (a run killed midway), run again: the server is asked for
    the other half only, and the table is the uninterrupted run's."""
    root = run["root"]
    cache = tmp_path / "cache"
    shutil.copytree(root / "base-cache", cache)
    (db,) = cache.glob("*/responses_rank0.db")
    with sqlite3.connect(db) as con:
        keys = [k for (k,) in con.execute("select key from unnamed order by rowid")]
        con.executemany("delete from unnamed where key = ?", [(k,) for k in keys[::2]])
    recipes = {"echo": harness.Recipe("echo", str(root / "echo.yaml"), "none", "exact_match", "echo/{doc_id}"),
               "ifeval": harness.TASKS["ifeval"]}
    data = {"echo": root / "echo.jsonl", "ifeval": root / "ifeval.jsonl"}
    again = harness.evaluate(MODELS["base"], data, tmp_path / "out", recipes=recipes, cache_dir=cache,
                             max_new_tokens={"echo": ECHO_TOKENS, "ifeval": IFEVAL_TOKENS}, n_ctx=N_CTX,
                             n_gpu_layers=0, n_threads=1, thinking=False, nltk_data=offline)
    log = (tmp_path / "out" / "lm_eval.log").read_text()
    left = len(keys[::2])
    assert f"Cached requests: {len(keys) - left}, Requests remaining: {left}" in log
    assert again.equals(run["tables"]["base"])


# ---------------------------------------------------------------------------- no model needed


def _tables(root: Path) -> dict[str, Path]:
    pl.DataFrame({"question": ["Tom has 3 apples and buys 4. How many?", "What is 2 + 2?"],
                  "answer": ["3 + 4 = 7\n#### 7", "#### 4"]}).write_parquet(root / "gsm8k.parquet")
    (root / "ifeval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in IFEVAL_ROWS))
    pl.DataFrame({"question": ["Which is a prime?", "Which organ pumps blood?"],
                  "subject": ["elementary_mathematics", "anatomy"],
                  "choices": [["4", "6", "7", "9"], ["lung", "heart", "liver", "skin"]],
                  "answer": [2, 1]}).write_parquet(root / "mmlu.parquet")
    pl.DataFrame({"narrative": ["A body was found.", "A jewel went missing."],
                  "question": ["Who is the murderer?", "Who took it?"],
                  "choices": ["['Ann', 'Bob']", "['Cy', 'Di', 'Ed']"],
                  "answer_index": [1, 2], "answer_choice": ["Bob", "Ed"]}).write_csv(root / "musr.csv")
    return {"gsm8k": root / "gsm8k.parquet", "ifeval": root / "ifeval.jsonl", "mmlu": root / "mmlu.parquet",
            "musr": root / "musr.csv"}


def test_paper_tasks_load_offline_on_local_tables(tmp_path, offline):
    """The four paper tasks, as written for lm-eval, load the local tables (no hub) and give the
    harness's prompts and targets, zero-shot, with the recipes' filters and metrics defined."""
    from lm_eval.tasks import TaskManager

    data = _tables(tmp_path)
    recipes = harness.recipes_for(data)
    names = harness.write_tasks(recipes, data, tmp_path / "tasks", {"gsm8k": 64, "mmlu": 8})
    tasks = TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False).load(names)["tasks"]
    got = {}
    for bench, recipe in recipes.items():
        task = tasks[harness.task_name(bench)]
        docs = list(task.test_docs())
        assert len(docs) == (3 if bench == "ifeval" else 2)
        assert task.config.num_fewshot == 0 and task.config.output_type == "generate_until"
        filters = [f["name"] for f in task.config.filter_list] if task.config.filter_list else ["none"]
        assert recipe.filter in filters and recipe.metric in [m["metric"] for m in task.config.metric_list]
        assert task.config.generation_kwargs["temperature"] == 0.0
        got[bench] = (task.doc_to_text(docs[0]), task.doc_to_target(docs[0]), task)
    assert got["gsm8k"][0] == "Question: Tom has 3 apples and buys 4. How many?\nAnswer:"
    assert got["gsm8k"][2].config.generation_kwargs["max_gen_toks"] == 64
    assert "Question:" in got["gsm8k"][2].config.generation_kwargs["until"]  # the template's stops kept
    assert got["ifeval"][0] == IFEVAL_ROWS[0]["prompt"]
    assert got["mmlu"][0].startswith("Which is a prime?\nA. 4\nB. 6\nC. 7\nD. 9\nPlease respond with the correct letter")
    assert got["mmlu"][1] == "C"
    from lm_eval.utils import apply_template

    description = apply_template(got["mmlu"][2].config.description, {"subject": "elementary_mathematics"})
    assert description == "The following are multiple choice questions (with answers) about elementary mathematics.\n\n"
    assert got["musr"][0].endswith("1 - Ann\n2 - Bob\n\nAnswer with the number of the correct option.\nAnswer:")
    assert got["musr"][1] == "2"


def test_recipes_are_checked():
    assert harness.recipes_for({"mmlu": "x"}, {"mmlu": "mmlu_generative"})["mmlu"] is harness.TASKS["mmlu_generative"]
    with pytest.raises(harness.HarnessError, match="is a gsm8k task, not mmlu"):
        harness.recipes_for({"mmlu": "x"}, {"mmlu": "gsm8k"})
    with pytest.raises(harness.HarnessError, match="no harness task for benchmark 'arc'"):
        harness.recipes_for({"arc": "x"})


def test_seeded_samples_are_the_scorer_paths_rows(tmp_path):
    from neagari.evaluation.benchmark_items import load_items

    path = _tables(tmp_path)["mmlu"]
    big = tmp_path / "mmlu_big.parquet"
    pl.concat([pl.read_parquet(path)] * 20).write_parquet(big)
    picked = harness.seeded_samples({"mmlu": big}, 5, seed=42)["neagari_mmlu"]
    items, _ = load_items("mmlu", big, limit=5, seed=42)
    assert picked == [int(it["id"].rsplit("/", 1)[1]) for it in items]
    assert harness.seeded_samples({"mmlu": big}, None, seed=42) is None


def test_server_that_cannot_load_fails_in_one_line(tmp_path):
    bad = tmp_path / "not-a-model.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(harness.HarnessError) as e:
        with harness.LlamaServer(bad, tmp_path / "server.log", n_ctx=N_CTX, n_gpu_layers=0, startup_timeout_s=60):
            pass
    assert "\n" not in str(e.value) and "exited with status" in str(e.value) and "server.log" in str(e.value)
    with pytest.raises(harness.HarnessError, match="no such model file"):
        with harness.LlamaServer(tmp_path / "absent.gguf", tmp_path / "s.log"):
            pass


def _sample(doc_id: int, filt: str, value, **doc) -> str:
    return json.dumps({"doc_id": doc_id, "doc": doc, "target": "7", "resps": [[f"reply {doc_id}"]],
                       "filtered_resps": ["7"], "filter": filt, "metrics": ["exact_match"], "exact_match": value})


def test_sample_log_reader(tmp_path):
    recipe = harness.TASKS["gsm8k"]
    log = tmp_path / "samples_neagari_gsm8k_2026.jsonl"
    log.write_text("\n".join([_sample(1, "strict-match", 0.0), _sample(1, "flexible-extract", 1.0),
                              _sample(0, "flexible-extract", 0.0), _sample(0, "strict-match", 1.0)]) + "\n")
    rows = read_sample_log(log, "gsm8k", recipe)
    assert [(r["id"], r["correct"], r["output"]) for r in rows] == [("gsm8k/0", False, "reply 0"),
                                                                    ("gsm8k/1", True, "reply 1")]
    assert rows[0]["n_new_tokens"] is None and rows[0]["finish"] is None
    log.write_text(_sample(0, "strict-match", 1.0) + "\n")
    with pytest.raises(SampleLogError, match="no item under filter 'flexible-extract'.*strict-match"):
        read_sample_log(log, "gsm8k", recipe)
    log.write_text(_sample(0, "flexible-extract", 0.5) + "\n")
    with pytest.raises(SampleLogError, match="not a per-item verdict"):
        read_sample_log(log, "gsm8k", recipe)
    log.write_text(_sample(0, "default", 1.0) + "\n")
    with pytest.raises(SampleLogError, match="needs field 'subject'"):
        read_sample_log(log, "mmlu", harness.TASKS["mmlu_redux_generative"])


def test_harness_env_is_the_main_env_plus_the_harness_pins():
    """envs/harness.yaml: envs/neagari.yaml's packages at its versions, and the harness packages
    at requirements-test.txt's pins."""
    main = yaml.safe_load((REPO / "envs/neagari.yaml").read_text())["dependencies"]
    env = yaml.safe_load((REPO / "envs/harness.yaml").read_text())["dependencies"]
    assert [d for d in env if not isinstance(d, dict)] == [d for d in main if not isinstance(d, dict)]
    main_pip = next(d for d in main if isinstance(d, dict))["pip"]
    pip = next(d for d in env if isinstance(d, dict))["pip"]
    assert pip[: len(main_pip)] == main_pip
    test_pins = {line.split("==")[0]: line for line in (REPO / "requirements-test.txt").read_text().splitlines()
                 if "==" in line and not line.startswith("#")}
    for line in pip[len(main_pip):]:
        assert test_pins.get(line.split("==")[0]) == line, line
    assert (REPO / "envs/harness.post-deploy.sh").stat().st_mode & 0o111


def test_language_detection_is_seeded_for_ifeval():
    """IFEval's language checks give one verdict per reply: seeded, langdetect's probabilities for
    an ambiguous reply (a small model's) repeat exactly, call after call, in this process and in
    the lm-eval process the harness starts (unseeded, its n-gram sampling makes them vary)."""
    import subprocess
    import sys

    from langdetect import DetectorFactory, detect_langs

    reply = "braveatureeig ceilingorgrom not be li fromitchenowothtow"
    code = ("import neagari.evaluation.lm_eval_main as m; "
            "m.seed_language_detection(); from langdetect import detect_langs; "
            f"print(repr([(l.lang, l.prob) for l in detect_langs({reply!r})]))")
    previous = DetectorFactory.seed
    try:
        seed_language_detection()
        here = {repr([(x.lang, x.prob) for x in detect_langs(reply)]) for _ in range(20)}
    finally:
        DetectorFactory.seed = previous
    assert len(here) == 1
    there = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
             for _ in range(2)}
    assert there == here
    assert harness.lm_eval_command("http://h:1", ["t"], "inc", "out")[1:3] == ["-m", "neagari.evaluation.lm_eval_main"]
