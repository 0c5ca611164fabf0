"""Train one variant of the embedded model and measure what the quality report measures.

For tuning the embedded model's recipe without running the workflow: the same corpus,
tokenizer, probe sets and evaluation sets as a workflow run (results/ of a run that built them),
one training run with config overrides, then held-out loss, per-domain exact match, the share of
wrong target probes after calibration, held-out verbatim outcomes, and a copy diagnostic (loss on
a repeated word list vs on its first occurrence, held-out drills). Writes OUT/NAME.json.

  python benchmarks/embedded_sweep.py --name lr6e-3 --set train.lr=0.006 --device cuda --out /tmp/sweep

Runs on CPU or CUDA; GPU numbers differ from CPU ones in the last bits, not in kind. The copy
diagnostic is the quality report's own (`neagari.evaluation.quality.copy_diagnostic`). The records of
2026-11-23 in benchmarks/embedded-sweeps/ came from an earlier inline version: 200 drills from
random.Random(1), scored on the trained network before export, each list's first token left out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import tokenizers
import torch
import yaml
from snakemake.utils import validate

from neagari.search.calibrate import calibrate_document
from neagari.engine.config import ModelConfig
from neagari.engine.engine import Engine
from neagari.engine.export import write_model
from neagari.evaluation.quality import copy_diagnostic, evaluate_items, heldout_nll, verbatim_outcomes
from neagari.engine.tokenizer import gguf_tokenizer_metadata
from neagari.embedded.toydata import CORPUS_ONLY, DOMAINS
from neagari.embedded.toydata.copying import heldout_drills
from neagari.embedded.train import TrainConfig, build_model, corpus_rows, export_weights, train


def embedded_config(config: dict, overrides: list[str]) -> dict:
    cfg = config["embedded"]
    for item in overrides:
        key, _, value = item.partition("=")
        node = cfg
        *parents, leaf = key.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = yaml.safe_load(value)
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override of the config's embedded block, e.g. train.steps=1280")
    ap.add_argument("--variant", choices=["qat", "fp"], default="qat")
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--results", default="results", help="a workflow run's results/ (corpus, tokenizer, task sets)")
    ap.add_argument("--corpus", default=None, help="training corpus (default RESULTS/data/corpus.train.jsonl)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    T0 = time.time()
    torch.set_num_threads(args.threads)
    res, out = Path(args.results), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load(Path(args.config).read_text())
    validate(config, schema=str(Path(args.config).with_name("schema.yaml")))  # as the workflow: defaults filled in
    cfg = embedded_config(config, args.set)
    tok = tokenizers.Tokenizer.from_file(str(res / "models/embedded/tokenizer.json"))
    tc = TrainConfig(**{**cfg["train"], "threads": args.threads, "device": args.device}, seed=cfg["seed"])
    train_rows, copy_rows = corpus_rows(args.corpus or res / "data/corpus.train.jsonl", tok, tc,
                                        set(CORPUS_ONLY) if (tc.copy_steps or tc.copy_fraction) else None)
    eval_rows, _ = corpus_rows(res / "data/corpus.heldout.jsonl", tok, tc)
    arch = {k: v for k, v in cfg["architecture"].items() if k != "seed"}
    mcfg = ModelConfig(**arch, vocab_size=tok.get_vocab_size())
    model = build_model(mcfg, qat=args.variant == "qat", seed=cfg["seed"])
    print(f"data ready {time.time() - T0:.0f}s", flush=True)
    t0 = time.time()
    history = train(model, train_rows, eval_rows, tc, copy_rows=copy_rows)
    train_s = time.time() - t0
    record = {"name": args.name, "overrides": args.set, "variant": args.variant, "device": args.device,
              "train_s": train_s, "s_per_step": train_s / tc.steps, "tokens": tc.steps * tc.batch_size * tc.seq_len,
              "final_eval_loss": history[-1]["eval_loss"]}
    model.cpu()
    gguf = out / f"{args.name}.gguf"
    write_model(gguf, mcfg, export_weights(model), gguf_tokenizer_metadata(tok), name=args.name)
    print(f"trained {time.time() - T0:.0f}s", flush=True)
    engine = Engine.load(gguf, device=args.device)
    texts = [json.loads(line)["text"] for line in open(res / "data/corpus.heldout.jsonl")][:300]
    record["heldout_nll"] = heldout_nll(engine, texts)[0]
    copying = copy_diagnostic(engine, heldout_drills(cfg["seed"], config["quality"]["n_copy_lists"]))
    record["copy"] = {"first_list_nll": copying["first_nll"], "repeat_nll": copying["repeat_nll"]}
    wrong = {}
    for path in sorted(p for p in (res / "data/probes").glob("*.json") if not p.name.endswith(".prov.json")):
        doc = calibrate_document(engine, json.loads(path.read_text()))
        gaps = [d["base_gap"] for g in doc["probes"].values() for d in g]
        wrong[path.stem] = sum(g <= 0 for g in gaps) / len(gaps)
    record["wrong_share"] = wrong
    print(f"calibrated {time.time() - T0:.0f}s", flush=True)
    items = [json.loads(line) for line in open(res / "data/eval/eval_sets.jsonl")]
    per = evaluate_items(engine, items)
    record["exact_match"] = {d: float(g["correct"].mean()) for (d,), g in per.group_by("domain")}
    verb = verbatim_outcomes(engine, json.loads((res / "data/heldout/verbatim_heldout.json").read_text())["probes"])
    record["verbatim"] = dict(zip(*verb["outcome"].value_counts().to_dict(as_series=False).values()))
    lo, hi = config["quality"]["wrong_target_band"]
    record["in_band"] = [d for d in DOMAINS if lo <= wrong[d] <= hi]
    (out / f"{args.name}.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
