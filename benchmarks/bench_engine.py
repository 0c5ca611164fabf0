"""Engine throughput against llama.cpp on random Q1_0 fixture models.

Measures, for each model size, on the same prompts:
  * scoring: prompts/s of ``Engine.logits(prompts, last_only=True, batch_size=B)`` against
    llama.cpp evaluating each prompt (``reset()`` + ``eval(ids)``, last-token logits read back);
  * greedy generation: tokens/s of ``Engine.generate`` (KV cache) against llama.cpp stepping one
    token at a time with argmax, for one prompt and for 8 prompts (ours batched, llama.cpp one
    after another).

Usage: python benchmarks/bench_engine.py [--sizes small medium] [--device cpu|cuda] [--out PATH]
                                         [--repeats 3] [--threads N] [--clock wall|cpu]
torch and llama.cpp use --threads threads (default: one per core); llama.cpp always runs on the CPU.
Rates are per second of time.perf_counter (--clock cpu: time.process_time), median of --repeats
runs after one warm-up.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from neagari.engine.engine import Engine
from neagari.engine.fixtures import FixtureSpec, write_fixture_model

SIZES = {
    "small": FixtureSpec(n_layer=4, hidden=256, ffn=768, n_head=4, n_kv_head=2, head_dim=64, vocab_size=512),
    "medium": FixtureSpec(n_layer=8, hidden=1024, ffn=3072, n_head=16, n_kv_head=8, head_dim=64, vocab_size=2000),
}
TEXTS = [
    "The quick brown fox jumps over the lazy dog while the model predicts the next token.",
    "Paris is the capital of France; Berlin is the capital of Germany; Rome is the capital of Italy.",
    "In 1969, 3 astronauts flew 384,400 km. Pi is about 3.14159 and e is about 2.71828.",
    "def add(a, b):\n    return a + b\n\nfor i in range(10):\n    print(i * i)\n",
    '{"status": "ok", "items": [1, 2, 3]}  SELECT * FROM users WHERE id = 42;',
    "Les élèves étudient à l'école. Straße, naïve café, 日本語のテキスト, emoji and ünïcödé.",
    "I don't know; you'll see; they're here; we've done it; she'd agree; IT'S LOUD.",
    "Extract the sentence about dosage. The patient takes 5 mg twice daily with food.",
]
N_SCORE, SCORE_LEN = 64, (20, 60)  # scoring prompts and their length range in tokens
N_NEW, N_GEN_BATCH = 64, 8  # greedy tokens per prompt; prompts in the batched generation
SCORE_BATCHES = (1, 8, 64)


def make_prompts(tokenizer, n: int, lengths: tuple[int, int], seed: int) -> list[list[int]]:
    """Seeded windows of random length from the token stream of TEXTS."""
    stream: list[int] = []
    while len(stream) < 4 * lengths[1]:
        stream += [t for text in TEXTS for t in tokenizer.encode(text + "\n")]
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = rng.randint(*lengths)
        start = rng.randrange(len(stream) - length)
        out.append(stream[start : start + length])
    return out


def median_time(fn, repeats: int, clock=time.perf_counter, sync=lambda: None) -> float:
    """Median seconds of fn() over repeats, after one warm-up call."""
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        sync()
        times.append(clock() - t0)
    return statistics.median(times)


class LlamaRef:
    """llama.cpp on the CPU: last-token logits only (logits_all=False), read straight from the context."""

    def __init__(self, path: Path, threads: int):
        import llama_cpp

        self.lib = llama_cpp
        self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=512, n_batch=512, logits_all=False,
                                   n_threads=threads, n_threads_batch=threads, n_gpu_layers=0,
                                   seed=0, verbose=False)
        self.n_vocab = self.llm.n_vocab()

    def _eval_last(self, ids) -> np.ndarray:
        self.llm.eval(ids)
        ptr = self.lib.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def score(self, prompts) -> list[np.ndarray]:
        out = []
        for ids in prompts:
            self.llm.reset()
            out.append(self._eval_last(ids).copy())
        return out

    def greedy(self, ids, n_new: int) -> list[int]:
        self.llm.reset()
        logits, toks = self._eval_last(ids), []
        for i in range(n_new):
            toks.append(int(logits.argmax()))
            if i < n_new - 1:
                logits = self._eval_last([toks[-1]])
        return toks


def bench_size(name: str, args: argparse.Namespace, tmp: Path) -> dict:
    path = write_fixture_model(tmp / f"{name}.gguf", SIZES[name])
    eng = Engine.load(path, device=args.device)
    ref = LlamaRef(path, args.threads)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    # --clock cpu: CPU seconds of this process (all its threads), unaffected by other processes' load
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    prompts = make_prompts(eng.tokenizer, N_SCORE, SCORE_LEN, seed=0)
    gen_prompts = make_prompts(eng.tokenizer, N_GEN_BATCH, SCORE_LEN, seed=1)
    res = {"vocab": eng.cfg.vocab_size, "n_prompts": N_SCORE, "prompt_tokens": sum(map(len, prompts)),
           "score": {}, "generate": {}}

    # sanity: both engines agree on the argmax of most prompts (random weights: near-ties exist)
    ours = torch.stack(eng.logits(prompts, last_only=True)).argmax(-1).numpy()
    theirs = np.stack(ref.score(prompts)).argmax(-1)
    res["score_argmax_agreement"] = float((ours == theirs).mean())

    def rate(group: str, key: str, count: int, fn, dev_sync=sync) -> None:
        res[group][key] = count / median_time(fn, args.repeats, clock, dev_sync)
        print(f"  {name} {group} {key}: {res[group][key]:.1f}/s", file=sys.stderr, flush=True)

    for bs in SCORE_BATCHES:
        rate("score", f"neagari_B{bs}", N_SCORE, lambda: eng.logits(prompts, last_only=True, batch_size=bs))
    rate("score", "llama.cpp", N_SCORE, lambda: ref.score(prompts), lambda: None)

    one = gen_prompts[0]
    gen = lambda ps: eng.generate(ps, max_new_tokens=N_NEW, stop_ids=set())
    a, b = gen([one])[0], ref.greedy(one, N_NEW)
    res["greedy_common_prefix"] = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), N_NEW)
    rate("generate", "neagari_1", N_NEW, lambda: gen([one]))
    rate("generate", "llama.cpp_1", N_NEW, lambda: ref.greedy(one, N_NEW), lambda: None)
    rate("generate", f"neagari_{N_GEN_BATCH}", N_NEW * N_GEN_BATCH, lambda: gen(gen_prompts))
    rate("generate", f"llama.cpp_{N_GEN_BATCH}", N_NEW * N_GEN_BATCH,
         lambda: [ref.greedy(p, N_NEW) for p in gen_prompts], lambda: None)
    return res


def machine(device: str, threads: int) -> dict:
    import llama_cpp

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"processor": platform.processor(), "cpu": cpu, "cpu_count": os.cpu_count(), "threads": threads,
            "torch": torch.__version__, "llama_cpp_python": llama_cpp.__version__,
            "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "loadavg_1m_start": round(os.getloadavg()[0], 2)}  # other work on the machine skews timings


def table(results: dict) -> str:
    rows = ["| model (vocab) | measure | neagari | llama.cpp | neagari / llama.cpp |", "|---|---|---:|---:|---:|"]
    for name, r in results.items():
        row = lambda what, a, b: rows.append(f"| {name} ({r['vocab']}) | {what} | {a:.1f} | {b:.1f} | {a / b:.2f} |")
        s, g = r["score"], r["generate"]
        for bs in SCORE_BATCHES:
            row(f"scoring {N_SCORE} prompts, B={bs} (prompts/s)", s[f"neagari_B{bs}"], s["llama.cpp"])
        row(f"greedy {N_NEW} tokens, 1 prompt (tok/s)", g["neagari_1"], g["llama.cpp_1"])
        row(f"greedy {N_NEW} tokens, {N_GEN_BATCH} prompts, total (tok/s)",
            g[f"neagari_{N_GEN_BATCH}"], g[f"llama.cpp_{N_GEN_BATCH}"])
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch and llama.cpp threads")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="cpu: process CPU time, unaffected by other load; meaningful with --threads 1 only")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/engine.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    m = machine(args.device, args.threads)
    report = {"machine": m, "clock": args.clock, "results": {}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sizes:  # the JSON is rewritten after each size, so a cut-off run keeps what it did
            report["results"][name] = bench_size(name, args, Path(tmp))
            m["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
            args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{m['cpu']}, {m['cpu_count']} cores, {args.threads} threads, {args.clock} clock, "
          f"torch {m['torch']} ({m['device']}), llama-cpp-python {m['llama_cpp_python']}, {m['date']}, "
          f"load {m['loadavg_1m_start']} -> {m['loadavg_1m_end']}\n")
    print(table(report["results"]))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
