"""Search iterations/s: `neagari search`'s loop against a plain loop that scores one probe at a
time with a full forward pass (the upstream engine's design, dequantized weights cached).

Both loops use the same model, probes, proposals (seeded) and fitness, and must accept the same
moves; the plain loop is run for fewer iterations (it is the slow one) and its rate compared.

    python benchmarks/bench_search.py --shape embedded --iterations 200
    python benchmarks/bench_search.py --shape bonsai-1.7b --iterations 10 --plain-iterations 3
    python benchmarks/bench_search.py --shape bonsai-1.7b --device cuda --iterations 200
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from neagari.engine.engine import Engine
from neagari.engine.fixtures import FixtureSpec, write_fixture_model
from neagari.search.probes import Probe, token_ids
from neagari.search.fitness import Fitness
from neagari.search.proposal import ProposalConfig, Proposer
from neagari.search.runner import Search, SearchConfig

SHAPES = {
    # the embedded model of config/config.yaml
    "embedded": FixtureSpec(n_layer=4, hidden=256, ffn=768, n_head=4, n_kv_head=2, head_dim=64, vocab_size=2048,
                            tied_embeddings=False, rope_theta=10000.0),
    # Bonsai 1.7B = Qwen3-1.7B (PAPER.md §1); the vocabulary is the fixture tokenizer's (the
    # search computes only two head rows per probe, so vocabulary size does not enter its cost)
    "bonsai-1.7b": FixtureSpec(n_layer=28, hidden=2048, ffn=6144, n_head=16, n_kv_head=8, head_dim=128,
                               vocab_size=2048, tied_embeddings=True, rope_theta=1_000_000.0),
    "bonsai-8b": FixtureSpec(n_layer=36, hidden=4096, ffn=12288, n_head=32, n_kv_head=8, head_dim=128,
                             vocab_size=2048, tied_embeddings=False, rope_theta=1_000_000.0),
}
TEXTS = ["Extract the sentence about dosage from this text: The patient takes 5 mg twice daily.",
         "The capital of France is", "def add(a, b):\n    return", "Copy this exactly: \"Hello, world!\"",
         "347 + 589 = ", "Replace \"red\" with \"blue\" in: red car", "Q: Which city is the capital of Italy?\nA:",
         "Answer in uppercase letters. Where is the wallet?", "get_weather(city=", "The quick brown fox jumps over"]


def probes(n: int, repeat: int = 1) -> list[Probe]:
    """n probes; ``repeat`` makes each prompt that many copies of its text (longer prompts)."""
    return [Probe(name=f"p{i}", prompt=" ".join([TEXTS[i % len(TEXTS)]] * repeat) + " " * (i // len(TEXTS)),
                  correct=" A", wrong=" B",
                  correct_id=10 + i, wrong_id=20 + i) for i in range(n)]


def plain_loop(engine, ps, n_targets, cfg: SearchConfig, iterations: int) -> tuple[list, float]:
    """One full forward per probe per iteration; apply the move, score, keep or undo."""
    enc = [token_ids(p, engine.tokenizer) for p in ps]

    def gaps():
        out = []
        for ids, c, w in enc:
            lg = engine.logits([ids])[0]
            out.append(float(lg[c] - lg[w]))
        return np.array(out)

    cur = gaps()
    fit = Fitness(cfg.fitness, cur[:n_targets], cur[n_targets:], cfg.lam)
    proposer = Proposer(engine, cfg.proposal, cfg.seed)
    accepted, t0 = [], time.perf_counter()
    for t in range(iterations):
        m = proposer.propose(t)
        move = (lambda: engine.flip_group(m.tensor, m.group)) if m.type == "group" else \
            (lambda: engine.flip_scale_bit(m.tensor, m.group, m.bit))
        move()
        new = gaps()
        if fit.judge(cur[:n_targets], cur[n_targets:], new[:n_targets], new[n_targets:]).accept:
            fit.accepted(cur[:n_targets], new[:n_targets])
            cur = new
            accepted.append(m)
        else:
            move()  # self-inverse
    return accepted, time.perf_counter() - t0


def time_trials(evaluator, engine, cfg: SearchConfig, sizes: list[int], batches: int = 20) -> dict[int, float]:
    """Proposals evaluated per second by one speculative batch of K (no commit), per K."""
    proposer = Proposer(engine, cfg.proposal, cfg.seed + 1)
    rates = {}
    for k in sizes:
        moves = [[proposer.propose(b * k + i) for i in range(k)] for b in range(batches + 1)]
        evaluator.trial(moves[0]).cpu()  # warm-up
        t0 = time.perf_counter()
        for ms in moves[1:]:
            evaluator.trial(ms).cpu()  # .cpu(): wait for the device
        rates[k] = k * batches / (time.perf_counter() - t0)
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="embedded")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--probes", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=1, help="each prompt this many copies of its text")
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--plain-iterations", type=int, default=None)
    ap.add_argument("--speculate", type=int, default=1)
    ap.add_argument("--fitness", default="average", choices=["average", "focused", "focused_proportional"],
                    help="focused accepts far less often: where speculation pays")
    ap.add_argument("--lam", type=float, default=1.0, help="control penalty λ (large λ: low acceptance)")
    ap.add_argument("--trial-sizes", default="",
                    help="also time speculative batches alone, e.g. 1,8,32: proposals evaluated per second "
                         "(the search's rate at acceptance p and batch K is (1-(1-p)^K)/p batches' worth)")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="weight cache type")
    ap.add_argument("--layers", default="all",
                    help="search layers: 'all' (the paper's 1.7B targeted runs) or a list like 1,2,3,4,34 (8B)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--fixture", default=None,
                    help="GGUF path of the random model: written if missing, reused if present (saves minutes at 8B)")
    ap.add_argument("--out", default="benchmarks/out/search.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    spec = SHAPES[a.shape]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        path = Path(a.fixture) if a.fixture else Path(tmp) / "m.gguf"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_fixture_model(path, spec)
        build_s = time.perf_counter() - t0
        ps = probes(a.probes, a.repeat)
        n_t = a.probes // 2
        layers = tuple(range(spec.n_layer)) if a.layers == "all" else tuple(int(x) for x in a.layers.split(","))
        cfg = SearchConfig(iterations=a.iterations, proposal=ProposalConfig(layers=layers), fitness=a.fitness,
                           lam=a.lam, speculate=a.speculate, min_rate=0.0, checkpoint_every=10**9)
        eng = Engine.load(path, device=a.device, dtype=a.dtype)
        t0 = time.perf_counter()
        search = Search(eng, path, ps[:n_t], ps[n_t:], cfg, Path(tmp) / "s")
        init_s = time.perf_counter() - t0
        res = search.run(progress=False)
        n_tokens = search.evaluator.n_tokens
        trial_rates = time_trials(search.evaluator, eng, cfg, [int(k) for k in a.trial_sizes.split(",") if k])
        peak_gib = torch.cuda.max_memory_allocated() / 2**30 if a.device.startswith("cuda") else None
        ours_rate = res.iterations_run / res.elapsed_s
        n_plain = a.iterations if a.plain_iterations is None else a.plain_iterations
        del search, eng  # free the first engine's weight cache before the second one is built
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        plain_rate, agree = float("nan"), None
        if n_plain:  # --plain-iterations 0: our loop alone (memory checks at large probe counts)
            plain_moves, plain_s = plain_loop(Engine.load(path, device=a.device, dtype=a.dtype), ps, n_t, cfg, n_plain)
            plain_rate = n_plain / plain_s
            ours = [(m.tensor, m.group, m.type, m.bit) for m in res.moves]
            agree = ours[: len(plain_moves)] == [(m.tensor, m.group, m.type, m.bit) for m in plain_moves]
    result = {"shape": a.shape, "spec": spec.__dict__, "device": a.device, "dtype": a.dtype, "layers": list(layers),
              "speculate": a.speculate, "fitness": a.fitness, "lam": a.lam, "probes": a.probes, "padded_tokens": n_tokens,
              "peak_gpu_memory_gib": peak_gib, "trial_proposals_per_s": trial_rates, "threads": a.threads,
              "iterations": res.iterations_run, "accepted": res.accepted, "ours_it_per_s": ours_rate,
              "plain_iterations": n_plain, "plain_it_per_s": plain_rate, "ratio": ours_rate / plain_rate,
              "same_accepted_moves_over_plain_prefix": agree, "model_build_s": build_s, "cache_build_s": init_s,
              "machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                          "torch": torch.__version__,
                          "gpu": torch.cuda.get_device_name(0) if a.device.startswith("cuda") else None},
              "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    print(f"| {a.shape} | {a.device} {a.dtype} spec={a.speculate} {a.fitness} λ={a.lam:g} layers={a.layers} | {a.probes} | {ours_rate:.3g} it/s | {plain_rate:.3g} it/s | "
          f"{ours_rate / plain_rate:.1f}x | {'-' if agree is None else 'yes' if agree else 'NO'} |")


if __name__ == "__main__":
    main()
