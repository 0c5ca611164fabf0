"""Training the embedded model: the engine's own Qwen3 network with trainable linear layers.

Variants of one recipe (same data, steps, seed):
- ``qat``: 1-bit quantization-aware training. Every linear weight (embeddings and LM head
  included, as in Bonsai) is used as sign(w) · fp16(mean |w|) per 128-weight group in the forward
  pass; the backward pass is straight-through. Norms stay float.
- ``ternary``: ternary quantization-aware training, the BitNet b1.58 rule per group: s =
  fp16(mean |w|), weights clip(round(w / s), -1, 1) · s in the forward pass, straight-through
  backward. The groups are the pinned Q2_0's 64-weight blocks, not Ternary Bonsai's 128 (see
  :func:`ternarize`).
- ``fp``: full precision, rounded to Q1_0 post hoc with llama.cpp's rule at export.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from neagari.engine import q1, q2
from neagari.engine.config import ModelConfig
from neagari.engine.model import Qwen3, RMSNorm, build_qwen3
from neagari.embedded import checkpoint
from neagari.embedded.toydata.chat import GENERATION_PROMPT

log = logging.getLogger(__name__)


def binarize(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(signs as ±1, fp16-rounded scales) of an (out, in) weight, per 128-weight group.

    The scale is the mean |w| of the group rounded to FP16, as the Q1_0 file stores it; a zero
    weight counts as positive (llama.cpp: bit = w >= 0).
    """
    blocks = w.reshape(w.shape[0], -1, q1.QK)
    d = blocks.abs().mean(-1, keepdim=True).half().float()  # (out, nb, 1)
    signs = torch.where(blocks >= 0, 1.0, -1.0)
    return signs, d


def ternarize(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes in {-1, 0, +1}, fp16-rounded scales) of an (out, in) weight, per Q2_0 block.

    BitNet b1.58's absmean rule per group: s = mean |w| rounded to FP16 (as the file stores it),
    code = clip(round(w / s), -1, 1), round half to even as torch rounds; an all-zero group has
    s = 0 and codes 0. The groups are the pinned Q2_0's blocks of 64 weights (q2.QK), so that each
    group's scale is the one the file stores and the file dequantizes to the forward pass's weights
    bit for bit.
    """
    blocks = w.reshape(w.shape[0], -1, q2.QK)
    d = blocks.abs().mean(-1, keepdim=True).half().float()  # (out, nb, 1)
    codes = torch.where(d > 0, (blocks / d.clamp_min(torch.finfo(torch.float32).tiny)).round().clamp(-1, 1),
                        torch.zeros_like(blocks))
    return codes, d


class TrainLinear(nn.Module):
    """A linear (or embedding) layer with latent fp32 weights; ``qat`` quantizes in forward, to
    1-bit groups (Q1_0) or, with ``ternary``, to ternary ones (Q2_0)."""

    def __init__(self, out_features: int, in_features: int, qat: bool, std: float, generator=None,
                 ternary: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features, generator=generator) * std)
        self.qat = qat
        self.ternary = ternary

    def effective_weight(self) -> torch.Tensor:
        if not self.qat:
            return self.weight
        codes, d = (ternarize if self.ternary else binarize)(self.weight)
        wq = (codes * d).reshape_as(self.weight)
        return self.weight + (wq - self.weight).detach()  # straight-through estimator

    def forward(self, x):
        return F.linear(x, self.effective_weight())

    def rows(self, ids):
        return F.embedding(ids, self.effective_weight())

    @torch.no_grad()
    def q1_blocks(self) -> np.ndarray:
        """Q1_0 bytes of this layer as the file must hold them.

        QAT: exactly the forward pass's signs and scales (so inference equals training).
        FP: llama.cpp's reference quantizer applied post hoc.
        """
        if self.ternary:
            raise ValueError("a ternary layer exports Q2_0 blocks (q2_blocks), not Q1_0")
        w = self.weight.detach().float().cpu().numpy()
        if not self.qat:
            return q1.quantize(w)
        _, d = binarize(self.weight)  # (out, nb, 1)
        return q1.pack_blocks(d.squeeze(-1).cpu().numpy(), w.reshape(*d.shape[:2], q1.QK) >= 0)

    @torch.no_grad()
    def q2_blocks(self) -> np.ndarray:
        """Q2_0 bytes of this layer: ternary QAT's own codes and scales (so inference equals
        training); a float layer through llama.cpp's reference quantizer (post hoc)."""
        if not self.qat:
            return q2.quantize(self.weight.detach().float().cpu().numpy())
        if not self.ternary:
            raise ValueError("a 1-bit QAT layer exports Q1_0 blocks (q1_blocks), not Q2_0")
        codes, d = ternarize(self.weight)
        return q2.pack_blocks(d.squeeze(-1).cpu().numpy(), (codes + 1).to(torch.uint8).cpu().numpy())

    def blocks(self) -> np.ndarray:
        """The file's bytes of this layer in its own format (Q2_0 if ternary, else Q1_0)."""
        return self.q2_blocks() if self.ternary else self.q1_blocks()


# Projections that write into the residual stream: their outputs start small.
RESIDUAL_WRITES = ("attn_output.weight", "ffn_down.weight")


def build_model(cfg: ModelConfig, qat: bool, seed: int, ternary: bool = False) -> Qwen3:
    """The engine's Qwen3 with TrainLinear layers and trainable norms.

    Initial weights: N(0, 1/in) per linear, N(0, 1) for the embedding, 1/sqrt(2 n_layer hidden)
    for the residual writes; norms start at 1.
    """
    g = torch.Generator().manual_seed(seed)
    out_std = 1 / math.sqrt(2 * cfg.n_layer * cfg.hidden)

    def linear(name: str, shape: tuple[int, int]) -> TrainLinear:
        out_f, in_f = shape
        if name == "token_embd.weight":
            std = 1.0
        elif name.endswith(RESIDUAL_WRITES):
            std = out_std
        else:
            std = 1 / math.sqrt(in_f)
        return TrainLinear(out_f, in_f, qat, std, g, ternary=ternary)

    def norm(name: str, dim: int) -> RMSNorm:
        n = RMSNorm(torch.ones(dim), cfg.rms_eps)
        n.weight.requires_grad_(True)
        return n

    return build_qwen3(cfg, linear, norm)


def export_weights(model: Qwen3) -> dict[str, np.ndarray]:
    """Tensor name → array for :func:`neagari.engine.export.write_model`: block bytes are produced
    by each layer's own ``blocks`` (see there), so the caller passes them pre-quantized (with
    ``block_type=q2.GGML_TYPE`` for a ternary model)."""
    return {name: m.blocks() if isinstance(m, TrainLinear) else m.weight.detach().cpu().numpy()
            for name, m in model.tensor_modules().items()}


def block_type(model: Qwen3) -> int:
    """The GGML block type a trained model's linear layers export to."""
    ternary = {m.ternary for m in model.tensor_modules().values() if isinstance(m, TrainLinear)}
    if len(ternary) != 1:
        raise ValueError("a model mixes ternary and 1-bit layers")
    return q2.GGML_TYPE if ternary.pop() else q1.GGML_TYPE


@dataclass
class TrainConfig:
    steps: int = 600
    batch_size: int = 16
    seq_len: int = 256
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup: int = 30
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    eval_every: int = 50
    # Held-out rows scored at each evaluation (0 = all). The log's loss curve needs no more, and
    # scoring all 763 default rows every 80 steps took a quarter of the training time.
    eval_rows: int = 0
    seed: int = 0
    threads: int = 2
    prompt_weight: float = 1.0  # loss weight of chat prompt tokens (see answer_weights)
    # Curriculum: the first copy_steps steps draw only from the copy-drill rows (see train).
    copy_steps: int = 0
    # After the curriculum, this share of every batch still comes from the copy-drill rows.
    copy_fraction: float = 0.0
    # Where the steps run. Batches are drawn by a CPU generator, so the data order is the same
    # on every device; the default run trains on CPU (the numbers differ in the last bits on GPU).
    device: str = "cpu"
    # "bf16": each training step's forward and loss under bfloat16 autocast (see train); "none": fp32.
    autocast: str = "none"
    # Where the run's checkpoint lives (None: no checkpoints), and the wall seconds between saves
    # (one more after the last step). A run that finds its own checkpoint there resumes from it.
    checkpoint_dir: str | None = None
    checkpoint_every_s: float = 300.0


PAD = -1  # filler in packed rows: fed as the separator, never a prediction target


@dataclass
class Packed:
    """Rows of seq_len + 1 token ids (PAD-filled) and the loss weight of each token as a target
    (0 for PAD)."""

    tokens: torch.Tensor
    weights: torch.Tensor

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, idx) -> "Packed":
        return Packed(self.tokens[idx], self.weights[idx])

    def to(self, device) -> "Packed":
        return Packed(self.tokens.to(device), self.weights.to(device))


def answer_weights(text: str, offsets: list[tuple[int, int]], prompt_weight: float) -> list[float]:
    """Loss weight per token of one corpus text: 1 for the assistant's answer of a chat text (from
    the generation prompt on) and for every token of plain text; `prompt_weight` for the system
    and user turns, whose passages, lines and requests are random draws no model can predict.

    Why: at 1.6 M training tokens the unpredictable prompt content dominated the loss and the
    model learned answer formats but not to copy from its context (0% exact match on the copy
    tasks); down-weighting it is meant to leave the answers to drive the gradient. Measured: it
    lowered held-out loss but did not, on its own, make the model copy.
    """
    cut = text.rfind(GENERATION_PROMPT)
    if cut < 0:
        return [1.0] * len(offsets)
    start = cut + len(GENERATION_PROMPT)
    return [1.0 if begin >= start else prompt_weight for begin, _ in offsets]


def pack_examples(token_lists: list[list[int]], seq_len: int, sep: int,
                  weights: list[list[float]] | None = None) -> Packed:
    """Greedy packing of examples (each followed by ``sep``) into rows of seq_len + 1 tokens, so
    no example is split across rows (longer ones are cut); the rest of a row is PAD. `weights`
    gives each token's loss weight (default 1); the separator after an example gets the weight
    of the example's last token."""
    rows, row_w, cur, cur_w = [], [], [], []

    def close():
        rows.append(cur + [PAD] * (seq_len + 1 - len(cur)))
        row_w.append(cur_w + [0.0] * (seq_len + 1 - len(cur_w)))

    for i, ids in enumerate(token_lists):
        w = [1.0] * len(ids) if weights is None else list(weights[i])
        if len(w) != len(ids):
            raise ValueError(f"example {i}: {len(ids)} tokens but {len(w)} weights")
        ids, w = list(ids[:seq_len]) + [sep], w[:seq_len] + [w[min(len(w), seq_len) - 1] if w else 1.0]
        if cur and len(cur) + len(ids) > seq_len + 1:
            close()
            cur, cur_w = [], []
        cur += ids
        cur_w += w
    if cur:
        close()
    return Packed(torch.tensor(rows, dtype=torch.long), torch.tensor(row_w, dtype=torch.float32))


def corpus_rows(path, tok, tc: TrainConfig, subset: set[str] | None = None) -> tuple[Packed, Packed | None]:
    """A JSON-lines corpus file ({"domain", "text"}) tokenized once and packed with its answer
    weights; with `subset` (domain names), those domains' texts packed on their own too."""
    records = [json.loads(line) for line in open(path)]
    texts = [r["text"] for r in records]
    enc = tok.encode_batch(texts)
    ids = [e.ids for e in enc]
    weights = [answer_weights(t, e.offsets, tc.prompt_weight) for t, e in zip(texts, enc)]
    sep = tok.token_to_id("<|endoftext|>")
    packed = pack_examples(ids, tc.seq_len, sep, weights)
    if subset is None:
        return packed, None
    keep = [i for i, r in enumerate(records) if r["domain"] in subset]
    return packed, pack_examples([ids[i] for i in keep], tc.seq_len, sep, [weights[i] for i in keep])


def lm_loss(model: Qwen3, batch: Packed, sep: int = 0, weighted: bool = True) -> torch.Tensor:
    """Next-token cross-entropy: weighted mean over targets, or (`weighted=False`) the plain mean
    over real (non-PAD) targets."""
    x, y = batch.tokens[:, :-1].clone(), batch.tokens[:, 1:].clone()
    x[x == PAD] = sep
    w = batch.weights[:, 1:] if weighted else (y != PAD).float()
    y[y == PAD] = 0  # any id: its weight is 0
    B, S = x.shape
    pos = torch.arange(S, device=x.device).expand(B, S)
    mask = torch.ones(S, S, dtype=torch.bool, device=x.device).tril()[None, None]
    logits = model(x, pos, mask)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
    return (ce * w.reshape(-1)).sum() / w.sum()


@torch.no_grad()
def evaluate(model: Qwen3, rows: Packed, batch_size: int = 32) -> float:
    """Mean next-token cross-entropy (nats per real token, unweighted) over packed rows."""
    model.eval()
    total, count = 0.0, 0
    device = next(model.parameters()).device
    for i in range(0, len(rows), batch_size):
        b = rows[i : i + batch_size].to(device)
        n = int((b.tokens[:, 1:] != PAD).sum())
        total += float(lm_loss(model, b, weighted=False)) * n
        count += n
    model.train()
    return total / count


def train(model: Qwen3, train_rows: Packed, eval_rows: Packed, tc: TrainConfig, progress=None,
          copy_rows: Packed | None = None) -> list[dict]:
    """AdamW with warmup + cosine decay. Returns the loss log: one dict per logged step.

    With ``tc.copy_steps`` > 0, the first steps draw their batches from ``copy_rows`` only (the
    copy drills, which stay in ``train_rows`` too). Why: on the full mix the model had formed no
    copy circuit after 640 steps (repeated drill lists were predicted no better than the first
    list, 3.2 vs 3.3 nats/token); a drill phase first was meant to form it. Measured: it did not
    either at the default budget (160 drill steps: repeat 2.81 vs first list 3.00 after the mix;
    300 steps of drills alone at constant lr: 2.95 vs 3.16), so the curriculum is kept as a
    configurable option, not as a fix. ``tc.copy_fraction`` keeps that share of every later batch
    on the drills. The GPU sweeps (BENCHMARKS.md) measured what these buy: with triple-repeated
    drills they build the circuit within 900 steps, but the tasks only use it from about 2,000.

    With ``tc.autocast == "bf16"`` the forward and loss of each training step run under
    ``torch.autocast(<device type>, torch.bfloat16)``; the backward pass follows the forward's
    dtypes, the optimizer and the latent weights stay fp32, and the evaluations run without
    autocast, so the logged eval loss compares across settings. Under autocast the QAT forward's
    binarized weights, ±fp16(mean |w|), are rounded to bf16 in each matmul, as the activations
    are: a rounding on the activation path only; the exported file keeps the fp16 scales, which
    the fp32 forward reproduces exactly. On CPUs without AVX512-BF16 or AMX the bf16 matmuls are
    emulated and the steps get slower, not faster.

    With ``tc.checkpoint_dir``, the state needed to continue (see :mod:`neagari.embedded.checkpoint`)
    is saved there every ``tc.checkpoint_every_s`` wall seconds and after the last step, and a run
    that finds its own checkpoint there resumes from it: the same final weights and loss log, bit
    for bit, as a run that never stopped (``elapsed_s`` continues from the saved time). A finished
    checkpoint is kept: a rerun loads its weights and returns its log without training. The
    checkpoint of another run (other settings, rows or initial weights) raises ValueError.
    """
    if (tc.copy_steps or tc.copy_fraction) and (copy_rows is None or len(copy_rows) == 0):
        raise ValueError("copy_steps or copy_fraction > 0 needs copy-drill rows; the corpus has none "
                         "(rebuild it: corpora written before the copy drills existed lack them)")
    if tc.autocast not in ("none", "bf16"):
        raise ValueError(f"autocast must be 'none' or 'bf16', not {tc.autocast!r}")
    fp = (checkpoint.fingerprint(tc, model, {"train": train_rows, "eval": eval_rows, "copy": copy_rows})
          if tc.checkpoint_dir is not None else None)
    torch.manual_seed(tc.seed)
    torch.set_num_threads(tc.threads)
    if tc.eval_rows:
        eval_rows = eval_rows[: tc.eval_rows]
    model.to(tc.device)
    train_rows = train_rows.to(tc.device)
    copy_rows = copy_rows.to(tc.device) if copy_rows is not None else None
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    other = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                             {"params": other, "weight_decay": 0.0}], lr=tc.lr, betas=(0.9, 0.95))
    g = torch.Generator().manual_seed(tc.seed)
    device_type = torch.device(tc.device).type
    history, start, elapsed0 = [], 1, 0.0
    saved = checkpoint.load(tc.checkpoint_dir, fp) if fp is not None else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        history = saved["history"]
        if saved["step"] >= tc.steps:
            log.info("training already finished in %s (%d steps)", tc.checkpoint_dir, saved["step"])
            return history
        opt.load_state_dict(saved["optimizer"])
        g.set_state(saved["batch_rng"])
        torch.set_rng_state(saved["torch_rng"])
        if device_type == "cuda" and saved["cuda_rng"] is not None:
            torch.cuda.set_rng_state(saved["cuda_rng"], tc.device)
        start, elapsed0 = saved["step"] + 1, saved["elapsed_s"]
        log.info("resuming from step %d", saved["step"])

    def save(step: int) -> None:
        checkpoint.save(tc.checkpoint_dir, {
            "fingerprint": fp, "step": step, "elapsed_s": time.time() - t0, "history": history,
            "model": model.state_dict(), "optimizer": opt.state_dict(), "batch_rng": g.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(tc.device) if device_type == "cuda" else None})

    def autocast():
        if tc.autocast == "bf16":
            return torch.autocast(device_type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    t0 = time.time() - elapsed0
    last_save = time.time()
    model.train()
    for step in range(start, tc.steps + 1):
        frac = (step - tc.warmup) / max(1, tc.steps - tc.warmup)
        lr = tc.lr * (step / tc.warmup if step <= tc.warmup else
                      tc.min_lr_ratio + (1 - tc.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))
        for group in opt.param_groups:
            group["lr"] = lr
        phase = "copy" if step <= tc.copy_steps else "mix"
        n_copy = tc.batch_size if phase == "copy" else round(tc.copy_fraction * tc.batch_size)
        parts = []
        for rows, n in ((copy_rows, n_copy), (train_rows, tc.batch_size - n_copy)):
            if n:
                idx = torch.randint(len(rows), (n,), generator=g).to(tc.device)
                parts.append(rows[idx])
        batch = parts[0] if len(parts) == 1 else Packed(torch.cat([b.tokens for b in parts]),
                                                         torch.cat([b.weights for b in parts]))
        with autocast():
            loss = lm_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        rec = {"step": step, "phase": phase, "lr": lr, "train_loss": loss.item(), "eval_loss": None,
               "elapsed_s": time.time() - t0}
        if step % tc.eval_every == 0 or step == tc.steps:
            rec["eval_loss"] = evaluate(model, eval_rows)
            log.info("step %d/%d  train %.3f  eval %.3f  %.0fs", step, tc.steps, rec["train_loss"],
                     rec["eval_loss"], rec["elapsed_s"])
        history.append(rec)
        if tc.checkpoint_dir is not None and (step == tc.steps or time.time() - last_save >= tc.checkpoint_every_s):
            save(step)
            last_save = time.time()
        if progress is not None:
            progress(step, rec)
    return history
