"""Benchmarks the way GGUF models are usually evaluated (PAPER.md §6 item 7): the model served by
llama.cpp's OpenAI-compatible server (``python -m llama_cpp.server``, llama-cpp-python[server]) on
a free localhost port, and evaluated by lm-evaluation-harness (``lm_eval``) through its
``local-chat-completions`` model with ``--log_samples``. lm-eval runs through
:mod:`neagari.evaluation.lm_eval_main`, which seeds IFEval's language detection (unseeded, the same
reply can pass a language check in one run and fail it in the next).

The paper's settings: the server renders the GGUF's own chat template (thinking disabled unless
asked for, through ``--chat_template_kwargs``), context 8192, seed 42; lm-eval asks for greedy
continuations (temperature 0, no repeat penalty) and keeps only what follows the last
``</think>`` (its ``think_end_token``). Each benchmark is one harness task (:data:`TASKS`): the
harness's own template (prompt, stop strings, answer filters, metric), with its dataset replaced
by the pinned local table the workflow downloaded, so lm-eval reads no hub dataset. Every task is
zero-shot: one user message per item (MMLU adds its subject line as a system message).

Per-item verdicts come from the sample logs (:mod:`neagari.evaluation.harness_samples`), into the
per-item table of :class:`neagari.evaluation.schemas.BenchItems`; the paired comparison of two
runs is :func:`neagari.evaluation.llama_eval.paired_comparison`, as for our own scorers.

Resumable per item: lm-eval's response cache (``--use_cache``, SQLite, written as each response
arrives) is keyed by the request (messages and generation settings) only, so it lives in a
directory named by the hash of everything else an answer depends on (:func:`cache_key`); a run
after a kill asks the server only for the items the cache lacks.

The server reuses the KV cache of the prompt prefix it shares with the previous request. On the
CPU that gives the logits of a fresh evaluation (ggml computes each token's row alone); on a GPU,
batch-size-dependent kernels may move a near-tie, as in any llama.cpp server evaluation.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import polars as pl

from neagari.evaluation.harness_samples import TASK_PREFIX, task_name  # noqa: F401 (part of this module's API)

N_CTX = 8192  # the paper's server context
SEED = 42  # the paper's server seed (greedy decoding never draws from it)
THINK_END = "</think>"
HOST = "127.0.0.1"
STARTUP_TIMEOUT_S = 600  # loading an 8B GGUF from a network file system can take minutes
REQUEST_TIMEOUT_S = 3600  # one 2,048-token answer of the 8B model on CPU cores
MODEL_NAME = "neagari"  # the server's model alias, as lm-eval names it in requests and paths
OWN_TASKS = Path(__file__).resolve().parent / "lm_eval_tasks"
DATA_FORMATS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "json", ".json": "json"}

log_default = logging.getLogger("neagari.evaluation.harness")


class HarnessError(RuntimeError):
    """A benchmark run that cannot go on (server down, lm-eval failed, unusable sample logs). One line."""


@dataclass(frozen=True)
class Recipe:
    """One benchmark as a harness task.

    template: the task YAML the generated task includes: ``lm_eval:<path under lm_eval/tasks>``
        or a file path (our own templates live in ``neagari/evaluation/lm_eval_tasks``).
    filter, metric: which filter's output and which metric of the sample log are the item's verdict.
    item_id: the item's id in our tables, formatted with ``doc_id`` (the row in the table) and
        the row's fields.
    overrides: keys set over the template (besides the dataset and the generation settings).
    """

    benchmark: str
    template: str
    filter: str
    metric: str
    item_id: str
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def template_path(self) -> Path:
        if self.template.startswith("lm_eval:"):
            import lm_eval.tasks

            return Path(lm_eval.tasks.__file__).resolve().parent / self.template.removeprefix("lm_eval:")
        return Path(self.template).resolve()


# The harness's tasks for the paper's four benchmarks. GSM8K: the harness's gsm8k prompt, zero-shot
# (its 5-shot examples come from the train split, which the workflow does not download), judged by
# its flexible-extract filter (the last number of the reply), as the chat reply rarely ends in
# "#### N". MMLU: the harness's MMLU-Redux generative prompt and letter filter over the MMLU test
# table of the config (the paper's n = 14,042 is MMLU's; MMLU-Redux 2.0 itself has 5,700
# re-annotated questions), or the harness's plain MMLU generative prompt. MuSR: the harness has
# MuSR only as log-likelihood multiple choice, which a chat endpoint cannot score; ours keeps its
# prompt and asks for the option number.
_MMLU_DESCRIPTION = "The following are multiple choice questions (with answers) about {{subject.replace('_', ' ')}}.\n\n"
TASKS: dict[str, Recipe] = {
    "gsm8k": Recipe("gsm8k", "lm_eval:gsm8k/gsm8k.yaml", "flexible-extract", "exact_match", "gsm8k/{doc_id}"),
    "ifeval": Recipe("ifeval", "lm_eval:ifeval/ifeval.yaml", "none", "prompt_level_strict_acc", "ifeval/{key}"),
    "mmlu_redux_generative": Recipe("mmlu", "lm_eval:mmlu-redux/generative/_default_template_yaml", "default",
                                    "exact_match", "mmlu/{subject}/{doc_id}", {"description": _MMLU_DESCRIPTION}),
    "mmlu_generative": Recipe("mmlu", "lm_eval:mmlu/generative/_default_template_yaml", "get_response",
                              "exact_match", "mmlu/{subject}/{doc_id}", {"description": _MMLU_DESCRIPTION}),
    "musr_generative": Recipe("musr", str(OWN_TASKS / "musr_generative.yaml"), "default", "exact_match",
                              "musr/{doc_id}"),
}
DEFAULT_TASKS = {"gsm8k": "gsm8k", "ifeval": "ifeval", "mmlu": "mmlu_redux_generative", "musr": "musr_generative"}


def recipes_for(benchmarks: Mapping[str, Any], tasks: Mapping[str, str] | None = None) -> dict[str, Recipe]:
    """benchmark name -> its recipe: ``tasks[name]`` (a :data:`TASKS` key), else :data:`DEFAULT_TASKS`."""
    tasks = {**DEFAULT_TASKS, **(tasks or {})}
    out = {}
    for name in benchmarks:
        if name not in tasks or tasks[name] not in TASKS:
            raise HarnessError(f"no harness task for benchmark {name!r} (known tasks: {', '.join(TASKS)})")
        recipe = TASKS[tasks[name]]
        if recipe.benchmark != name:
            raise HarnessError(f"harness task {tasks[name]!r} is a {recipe.benchmark} task, not {name}")
        out[name] = recipe
    return out


# ---------------------------------------------------------------------------- task files


def template_generation(recipe: Recipe) -> dict:
    """The template's generation settings (its stop strings in particular)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    return dict(load_yaml(recipe.template_path(), resolve_func=False).get("generation_kwargs") or {})


def task_config(recipe: Recipe, benchmark: str, data: str | os.PathLike, max_new_tokens: int | None = None) -> dict:
    """The generated task: the recipe's template on the local table ``data`` (its only split,
    "test"), zero-shot, greedy, at most ``max_new_tokens`` new tokens (else the template's)."""
    data = Path(data).resolve()
    if data.suffix.lower() not in DATA_FORMATS:
        raise HarnessError(f"{data}: unknown table format {data.suffix!r} (expected {', '.join(DATA_FORMATS)})")
    # llama-cpp-python's server applies a repeat penalty of 1.1 unless a request says otherwise,
    # before its greedy pick; 1.0 makes temperature 0 the plain argmax (llama.cpp's own default)
    generation = {**template_generation(recipe), "do_sample": False, "temperature": 0.0, "repeat_penalty": 1.0}
    if max_new_tokens is not None:
        generation["max_gen_toks"] = int(max_new_tokens)
    # tag None: the task stays out of the template's task groups (gsm8k's math_word_problems)
    return {"include": str(recipe.template_path()), "task": task_name(benchmark), "tag": None,
            "dataset_path": DATA_FORMATS[data.suffix.lower()], "dataset_name": None,
            "dataset_kwargs": {"data_files": {"test": str(data)}},
            "training_split": None, "validation_split": None, "fewshot_split": None, "test_split": "test",
            "fewshot_config": None, "num_fewshot": 0, **recipe.overrides, "generation_kwargs": generation}


def write_tasks(recipes: Mapping[str, Recipe], data: Mapping[str, str | os.PathLike], directory: str | os.PathLike,
                max_new_tokens: Mapping[str, int] | None = None) -> list[str]:
    """One task YAML per benchmark in ``directory`` (lm-eval's ``--include_path``); their names."""
    import yaml

    directory = Path(directory)
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    names = []
    for bench, recipe in recipes.items():
        cfg = task_config(recipe, bench, data[bench], (max_new_tokens or {}).get(bench))
        (directory / f"{cfg['task']}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
        names.append(cfg["task"])
    return names


def seeded_samples(data: Mapping[str, str | os.PathLike], limit: int | None, seed: int) -> dict[str, list[int]] | None:
    """lm-eval's ``--samples``: per task, the rows of the seeded sample of ``limit`` rows that
    :func:`neagari.evaluation.benchmark_items.load_items` draws (None: every row)."""
    if limit is None:
        return None
    from neagari.evaluation.datasets import read_rows

    out = {}
    for bench, path in data.items():
        n = len(read_rows(path))
        index = list(range(n)) if limit >= n else sorted(random.Random(seed).sample(range(n), limit))
        out[task_name(bench)] = index
    return out


def install_punkt_tab(archive: str | os.PathLike, nltk_data: str | os.PathLike) -> Path:
    """NLTK's punkt_tab (IFEval's sentence and word counts) unpacked from its pinned zip into the
    NLTK data directory ``nltk_data`` (``tokenizers/punkt_tab``); the directory, for ``NLTK_DATA``."""
    nltk_data = Path(nltk_data)
    dest = nltk_data / "tokenizers"
    if not (dest / "punkt_tab" / "english").is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(archive) as z:
            if not any(n.startswith("punkt_tab/english/") for n in z.namelist()):
                raise HarnessError(f"{archive}: no punkt_tab/english/ in the archive")
            z.extractall(dest)
    return nltk_data


# ---------------------------------------------------------------------------- the server


def gpu_layers(n_gpu_layers: int | None = None) -> int:
    """Layers to offload: ``n_gpu_layers`` if given, else all (-1) where llama.cpp was built with
    GPU offload (a CUDA build), else none."""
    if n_gpu_layers is not None:
        return int(n_gpu_layers)
    import llama_cpp

    return -1 if llama_cpp.llama_supports_gpu_offload() else 0


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _no_proxy_env(env: Mapping[str, str]) -> dict:
    """``env`` with localhost kept off any HTTP proxy (requests and aiohttp honour *_PROXY)."""
    keep = [h for h in env.get("NO_PROXY", env.get("no_proxy", "")).split(",") if h]
    hosts = ",".join(dict.fromkeys([*keep, HOST, "localhost"]))
    return {**env, "NO_PROXY": hosts, "no_proxy": hosts}


class LlamaServer:
    """``python -m llama_cpp.server`` on one GGUF, on a free localhost port, for a ``with`` block.

    Started on entry and waited for (``/v1/models`` answering) up to ``startup_timeout_s``; a
    server that exits or does not come up in time raises :class:`HarnessError` naming its log.
    Stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, model: str | os.PathLike, log_file: str | os.PathLike, *, n_ctx: int = N_CTX, seed: int = SEED,
                 n_gpu_layers: int = 0, n_threads: int | None = None, thinking: bool = False,
                 startup_timeout_s: float = STARTUP_TIMEOUT_S, alias: str = MODEL_NAME):
        self.model = Path(model)
        self.log_file = Path(log_file)
        self.settings = {"n_ctx": int(n_ctx), "seed": int(seed), "n_gpu_layers": int(n_gpu_layers),
                         "chat_template_kwargs": {"enable_thinking": bool(thinking)}}
        self.n_threads = n_threads
        self.startup_timeout_s = startup_timeout_s
        self.alias = alias
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def command(self) -> list[str]:
        s = self.settings
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model), "--model_alias", self.alias,
               "--host", HOST, "--port", str(self.port), "--n_ctx", str(s["n_ctx"]), "--seed", str(s["seed"]),
               "--n_gpu_layers", str(s["n_gpu_layers"]),
               "--chat_template_kwargs", json.dumps(s["chat_template_kwargs"]),
               # logits of every prompt position are for log-likelihoods, which chat requests never
               # ask for: n_ctx x n_vocab floats (5 GB for the 8B model) saved
               "--logits_all", "false"]
        if self.n_threads:
            cmd += ["--n_threads", str(self.n_threads), "--n_threads_batch", str(self.n_threads)]
        return cmd

    def __enter__(self) -> "LlamaServer":
        if not self.model.is_file():
            raise HarnessError(f"{self.model}: no such model file")
        self.port = free_port()
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "wb") as out:
            self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=_no_proxy_env(os.environ))
        try:
            self._wait()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while True:
            if (rc := self.proc.poll()) is not None:
                raise HarnessError(f"llama.cpp server on {self.model.name} exited with status {rc} before serving; "
                                   f"see {self.log_file}")
            try:
                with opener.open(f"{self.url}/v1/models", timeout=5) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                raise HarnessError(f"llama.cpp server on {self.model.name} did not come up within "
                                   f"{self.startup_timeout_s:g} s; see {self.log_file}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------------------- lm-eval


def lm_eval_command(base_url: str, tasks: list[str], include_path: str | os.PathLike, output_path: str | os.PathLike,
                    *, seed: int = SEED, cache: str | os.PathLike | None = None,
                    samples: Mapping[str, list[int]] | None = None, timeout_s: int = REQUEST_TIMEOUT_S,
                    alias: str = MODEL_NAME) -> list[str]:
    """The lm-eval command line: chat completions against ``base_url`` (``http://host:port``),
    the server's chat template, one request at a time, greedy, ``<think>`` stripped, samples logged."""
    model_args = {"model": alias, "base_url": f"{base_url}/v1/chat/completions", "num_concurrent": 1,
                  "max_retries": 3, "tokenized_requests": False, "seed": seed, "think_end_token": THINK_END,
                  "timeout": timeout_s}
    cmd = [sys.executable, "-m", "neagari.evaluation.lm_eval_main", "run", "--model", "local-chat-completions",
           "--model_args", json.dumps(model_args), "--tasks", ",".join(tasks), "--include_path", str(include_path),
           "--apply_chat_template", "--seed", str(seed), "--output_path", str(output_path), "--log_samples"]
    if cache is not None:
        cmd += ["--use_cache", str(cache)]
    if samples is not None:
        cmd += ["--samples", json.dumps(samples)]
    return cmd


def lm_eval_env(datasets_cache: str | os.PathLike, nltk_data: str | os.PathLike | None = None) -> dict:
    """lm-eval's environment: no hub access (every dataset is a local table), the datasets cache
    in ``datasets_cache``, NLTK's data from ``nltk_data`` where given."""
    env = _no_proxy_env(os.environ)
    env.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", HF_DATASETS_CACHE=str(datasets_cache),
               TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    if nltk_data is not None:
        env["NLTK_DATA"] = str(nltk_data)
    return env


def run_lm_eval(cmd: list[str], env: Mapping[str, str], log_file: str | os.PathLike) -> None:
    log_file = Path(log_file)
    with open(log_file, "wb") as out:
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=dict(env)).returncode
    if rc != 0:
        tail = [line for line in log_file.read_text(errors="replace").splitlines() if line.strip()][-1:]
        raise HarnessError(f"lm-eval exited with status {rc}: {tail[0][:300] if tail else 'no output'}; see {log_file}")


def versions() -> dict:
    from importlib.metadata import version

    return {"llama_cpp_python": version("llama_cpp_python"), "lm_eval": version("lm_eval")}


def cache_key(model_sha256: str, server: Mapping[str, Any], thinking: bool) -> str:
    """What an answer depends on besides the request: model bytes, server settings, the thinking
    switch and the two packages' versions (a 16-hex digest)."""
    from neagari.hashing import sha256_bytes

    what = {"model_sha256": model_sha256, "server": dict(server), "thinking": bool(thinking), **versions()}
    return sha256_bytes(json.dumps(what, sort_keys=True).encode())[:16]


def evaluate(model: str | os.PathLike, data: Mapping[str, str | os.PathLike], out_dir: str | os.PathLike, *,
             recipes: Mapping[str, Recipe] | None = None, cache_dir: str | os.PathLike | None = None,
             max_new_tokens: Mapping[str, int] | None = None, limit: int | None = None, seed: int = SEED,
             n_ctx: int = N_CTX, n_gpu_layers: int | None = None, n_threads: int | None = None,
             thinking: bool = False, nltk_data: str | os.PathLike | None = None,
             startup_timeout_s: float = STARTUP_TIMEOUT_S, request_timeout_s: int = REQUEST_TIMEOUT_S,
             log: logging.Logger | None = None) -> pl.DataFrame:
    """One model on the benchmarks ``data`` (name -> local table) through server and harness; the
    per-item table (:class:`neagari.evaluation.schemas.BenchItems`), items in benchmark order.

    out_dir: the task files, lm-eval's results and sample logs (``out_dir/lm_eval``), the server's
    and lm-eval's logs. cache_dir: lm-eval's response cache (kept across runs; None: no cache).
    recipes: benchmark -> :class:`Recipe` (default :func:`recipes_for`). limit: the seeded sample
    of :func:`seeded_samples`."""
    from neagari.evaluation.harness_samples import read_samples
    from neagari.hashing import sha256_file

    log = log or log_default
    out_dir = Path(out_dir)
    recipes = dict(recipes) if recipes is not None else recipes_for(data)
    if set(recipes) != set(data):
        raise HarnessError(f"benchmarks without a table or a task: {sorted(set(recipes) ^ set(data))}")
    out_dir.mkdir(parents=True, exist_ok=True)
    results = out_dir / "lm_eval"
    if results.exists():
        shutil.rmtree(results)  # sample logs of an earlier run would be read as this one's
    tasks = write_tasks(recipes, data, out_dir / "tasks", max_new_tokens)
    layers = gpu_layers(n_gpu_layers)
    server = LlamaServer(model, out_dir / "server.log", n_ctx=n_ctx, seed=seed, n_gpu_layers=layers,
                         n_threads=n_threads, thinking=thinking, startup_timeout_s=startup_timeout_s)
    cache = None
    scratch = out_dir / "datasets"
    if cache_dir is not None:
        key = cache_key(sha256_file(model), server.settings, thinking)
        cache = Path(cache_dir) / key / "responses"
        scratch = Path(cache_dir) / "datasets"
        log.info("lm-eval response cache %s_rank0.db", cache)
    t0 = time.monotonic()
    with server:
        log.info("llama.cpp server on %s at %s (n_ctx %d, seed %d, n_gpu_layers %d, thinking %s), up in %.1f s",
                 Path(model).name, server.url, n_ctx, seed, layers, thinking, time.monotonic() - t0)
        cmd = lm_eval_command(server.url, tasks, out_dir / "tasks", results, seed=seed, cache=cache,
                              samples=seeded_samples(data, limit, seed), timeout_s=request_timeout_s)
        log.info("lm-eval on %s", ", ".join(tasks))
        run_lm_eval(cmd, lm_eval_env(scratch, nltk_data), out_dir / "lm_eval.log")
    log.info("lm-eval done in %.1f s", time.monotonic() - t0)
    return read_samples(results, recipes)
