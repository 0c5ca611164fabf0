"""When does the embedded model start to copy? Train on copy drills only, then score the copy diagnostic.

A cheap CPU probe of the copy (induction) circuit: the config's embedded model and
training settings (validated as the workflow does), trained for --steps steps on the corpus's
copy-drill rows only (the curriculum's drill phase), exported to
Q1_0, then the quality report's copy diagnostic on held-out drills (NLL of a word list's
repetition vs its first occurrence; a copying model predicts the repetition almost exactly).

  python benchmarks/copy_onset.py --name s400 --steps 400 --corpus CORPUS.jsonl --out benchmarks/out/copy-onset

--qk-norm-init sets the initial gain of every attention q/k RMSNorm (default 1, as build_model):
with QK-norm the attention logits are bounded by about sqrt(head_dim) times the two gains, so a
larger start was a candidate for sharper attention sooner.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import tokenizers
import torch
import yaml
from embedded_sweep import embedded_config  # the sibling sweep tool's config overrides
from snakemake.utils import validate

from neagari.engine.config import ModelConfig
from neagari.engine.engine import Engine
from neagari.engine.export import write_model
from neagari.evaluation.quality import copy_diagnostic
from neagari.engine.tokenizer import gguf_tokenizer_metadata
from neagari.embedded.toydata import CORPUS_ONLY
from neagari.embedded.toydata.copying import heldout_drills
from neagari.embedded.train import TrainConfig, build_model, corpus_rows, export_weights, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--qk-norm-init", type=float, default=1.0)
    ap.add_argument("--config", default="config/config.yaml")
    ap.add_argument("--results", default="results", help="a workflow run's results/ (tokenizer, held-out corpus)")
    ap.add_argument("--corpus", default=None, help="training corpus (default RESULTS/data/corpus.train.jsonl)")
    ap.add_argument("--n-drills", type=int, default=100)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    res, out = Path(a.results), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    tok = tokenizers.Tokenizer.from_file(str(res / "models/embedded/tokenizer.json"))
    config = yaml.safe_load(Path(a.config).read_text())
    validate(config, schema=str(Path(a.config).with_name("schema.yaml")))  # as the workflow: defaults filled in
    # every step on the drills; one held-out evaluation (16 rows) at the end, which the record ignores
    cfg = embedded_config(config, [f"train.steps={a.steps}", f"train.lr={a.lr}", f"train.copy_steps={a.steps}",
                                   "train.copy_fraction=0", f"train.eval_every={10**9}", "train.eval_rows=16",
                                   "train.threads=1"])
    tc = TrainConfig(**cfg["train"], seed=cfg["seed"])
    train_rows, copy_rows = corpus_rows(a.corpus or res / "data/corpus.train.jsonl", tok, tc, set(CORPUS_ONLY))
    eval_rows, _ = corpus_rows(res / "data/corpus.heldout.jsonl", tok, tc)
    arch = {k: v for k, v in cfg["architecture"].items() if k != "seed"}  # as the workflow
    mcfg = ModelConfig(**arch, vocab_size=tok.get_vocab_size())
    model = build_model(mcfg, qat=True, seed=cfg["seed"])
    with torch.no_grad():
        for b in model.blocks:
            b.attn.q_norm.weight.fill_(a.qk_norm_init)
            b.attn.k_norm.weight.fill_(a.qk_norm_init)
    t0 = time.time()
    train(model, train_rows, eval_rows, tc, copy_rows=copy_rows)
    train_s = time.time() - t0
    gguf = out / f"{a.name}.gguf"
    write_model(gguf, mcfg, export_weights(model), gguf_tokenizer_metadata(tok), name=a.name)
    diag = copy_diagnostic(Engine.load(gguf), heldout_drills(cfg["seed"], a.n_drills))
    gguf.unlink()
    rec = {"benchmark": "copy_onset", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "machine": {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__},
           "settings": vars(a), "train_s": train_s, "first_nll": diag["first_nll"], "repeat_nll": diag["repeat_nll"],
           "qk_norm_gain_after": [round(float(b.attn.q_norm.weight.mean()), 3) for b in model.blocks]}
    (out / f"{a.name}.json").write_text(json.dumps(rec, indent=1) + "\n")
    print(json.dumps(rec))


if __name__ == "__main__":
    main()
