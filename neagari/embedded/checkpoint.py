"""Checkpoints of a training run (:func:`neagari.embedded.train.train`), so a stopped run resumes
to the same bits as one that never stopped.

One file, ``<checkpoint_dir>/checkpoint.pt``, replaced atomically at each save. What it holds and
why each piece is needed for a bit-identical continuation:

- ``model``: the latent weights (and norm weights) reached, the state every later step updates.
- ``optimizer``: AdamW's moment estimates and step counts; without them the next updates differ.
- ``batch_rng``: the state of the CPU generator that draws each step's batch rows, so the resumed
  steps see the rows the uninterrupted run would have seen.
- ``torch_rng`` (and ``cuda_rng`` on a GPU): the global generators, seeded once at the start of
  training; nothing in a step draws from them today, but anything that would (dropout, a random
  init of optimizer state) continues from the same point.
- ``step`` and ``history``: where to continue, and the loss log so far (the returned log is the
  whole run's); ``elapsed_s``: training seconds so far, so the logged time continues.
- ``fingerprint``: sha256 of everything that decides the result (the training settings, the
  rows' tensors, the initial weights, and how each layer quantizes its weights in the forward
  pass: the variants start from the same weights); a checkpoint whose fingerprint differs belongs to another
  run and is refused, never resumed or overwritten.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import torch

from neagari.files import atomic_write

CHECKPOINT_NAME = "checkpoint.pt"
# TrainConfig fields that only say where and how often to save: they do not change the result.
NOT_FINGERPRINTED = ("checkpoint_dir", "checkpoint_every_s")


def _hash_tensor(h, name: str, t: torch.Tensor | None) -> None:
    if t is None:
        h.update(f"{name}:none;".encode())
        return
    t = t.detach().cpu().contiguous()
    h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def fingerprint(tc, model: torch.nn.Module, rows: dict) -> str:
    """sha256 over the result-deciding settings of `tc` (a TrainConfig; threads included, as CPU
    reductions depend on the thread count), the shapes and bytes of each packed row set in `rows`
    (name → Packed or None), the model's initial parameters and each layer's forward quantization
    (its ``qat``/``ternary`` flags: the 1-bit, ternary and full-precision variants of one recipe
    start from the same parameters)."""
    h = hashlib.sha256()
    # a float setting written as an integer in a config (weight_decay: 0) is the same setting
    settings = {f.name: float(getattr(tc, f.name)) if f.type in (float, "float") else getattr(tc, f.name)
                for f in dataclasses.fields(tc) if f.name not in NOT_FINGERPRINTED}
    h.update(json.dumps(settings, sort_keys=True).encode())
    for name in sorted(rows):
        packed = rows[name]
        _hash_tensor(h, f"{name}.tokens", None if packed is None else packed.tokens)
        _hash_tensor(h, f"{name}.weights", None if packed is None else packed.weights)
    for name, t in model.state_dict().items():
        _hash_tensor(h, f"model.{name}", t)
    forward = {name: [bool(getattr(m, "qat", False)), bool(getattr(m, "ternary", False))]
               for name, m in model.named_modules() if hasattr(m, "qat")}
    h.update(json.dumps(forward, sort_keys=True).encode())
    return h.hexdigest()


def save(ckpt_dir: str | os.PathLike, state: dict) -> Path:
    """Write `state` to ``ckpt_dir/checkpoint.pt`` through a temporary file in the same directory
    and ``os.replace``: a reader (or a resumed run) sees the old checkpoint or the new one, never a
    partial file."""
    d = Path(ckpt_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / CHECKPOINT_NAME
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    return path


def load(ckpt_dir: str | os.PathLike, fp: str) -> dict | None:
    """The checkpoint in `ckpt_dir` if there is one (None if not); ValueError if it belongs to
    another run (its fingerprint is not `fp`)."""
    path = Path(ckpt_dir) / CHECKPOINT_NAME
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("fingerprint") != fp:
        raise ValueError(f"the checkpoint in {ckpt_dir} belongs to another training run (other settings, data "
                         "or initial weights); remove it or set another checkpoint_dir")
    return state
