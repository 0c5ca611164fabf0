"""Seconds per training step of the embedded model (forward, backward, AdamW) at a given shape.

  python benchmarks/bench_train_step.py --ffn 384 --out benchmarks/out/train-step.json

Random token rows, so only the shape matters; the median of the timed steps after two warm-ups.
Run two at once (`&`) to see the default workflow's setting: two models side by side, 1 thread each.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from neagari.engine.config import ModelConfig
from neagari.embedded.train import Packed, build_model, lm_loss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in (("hidden", 256), ("layers", 4), ("ffn", 768), ("heads", 4), ("kv-heads", 2),
                          ("head-dim", 64), ("vocab", 2048), ("batch", 8), ("seq", 256), ("steps", 8),
                          ("threads", 1)):
        ap.add_argument(f"--{name}", type=int, default=default)
    ap.add_argument("--variant", choices=["qat", "fp"], default="qat")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = ModelConfig(n_layer=a.layers, hidden=a.hidden, ffn=a.ffn, n_head=a.heads, n_kv_head=a.kv_heads,
                      head_dim=a.head_dim, context_length=max(512, a.seq), rope_theta=1e4, tied_embeddings=False,
                      vocab_size=a.vocab)
    model = build_model(cfg, a.variant == "qat", 0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    rows = Packed(torch.randint(0, a.vocab, (64, a.seq + 1), generator=g), torch.ones(64, a.seq + 1))
    times = []
    for _ in range(a.steps + 2):
        t = time.perf_counter()
        loss = lm_loss(model, rows[torch.randint(64, (a.batch,), generator=g)])
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    rec = {"benchmark": "train_step", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "machine": {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__},
           "settings": vars(a), "s_per_step": statistics.median(times[2:]),
           "tokens_per_s": a.batch * a.seq / statistics.median(times[2:])}
    print(json.dumps(rec))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(rec, indent=1) + "\n")


if __name__ == "__main__":
    main()
