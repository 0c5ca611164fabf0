"""Load a Qwen3 GGUF (Q1_0, Q2_0 or float linear weights, mixed as the file has them) into the
model and serve it: batched scoring, greedy generation, moves."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from neagari.engine import q1, q2
from neagari.engine.config import ModelConfig, tensor_names
from neagari.engine.gguf_io import GGUFFile, GGUFFormatError, TYPE_BF16, TYPE_F16, TYPE_F32
from neagari.engine.model import DenseLinear, KVCache, PackedLinear, Q1Linear, Q2Linear, Qwen3, RMSNorm, build_qwen3

# the layer class of each block format the engine loads packed
PACKED_LINEARS = {q1.GGML_TYPE: Q1Linear, q2.GGML_TYPE: Q2Linear}


def _device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def weights_dtype(name: str) -> torch.dtype:
    """Dequantized-weight type by name. Q1_0 and Q2_0 weights are ±scale or 0 with an fp16 scale,
    so fp16 holds them exactly (Q2_0's unused code +2d aside) and bf16 rounds only the scale
    (8-bit mantissa); activations stay fp32 between layers, and matmuls accumulate in fp32 on
    CUDA."""
    if name not in DTYPES:
        raise ValueError(f"weights dtype {name!r}: expected one of {', '.join(DTYPES)}")
    return DTYPES[name]


@dataclass
class LoadOptions:
    device: str | None = "cpu"
    cache_weights: bool = True
    cache_dtype: torch.dtype = torch.float32  # fp32 on CPU; bf16/fp16 are options on CUDA
    max_positions: int | None = None


class Engine:
    """A model, its tokenizer and the GGUF it came from."""

    def __init__(self, gguf: GGUFFile, opts: LoadOptions | None = None):
        from neagari.engine.tokenizer import GGUFTokenizer

        self.opts = opts = opts or LoadOptions()
        self.gguf = gguf
        self.cfg = ModelConfig.from_gguf(gguf)  # keys, block count, tensor shapes and types checked
        for name in tensor_names(self.cfg):  # before anything is built: no inf/NaN scale or weight
            gguf.check_finite(name)
        self.device = _device(opts.device)
        try:
            self.tokenizer = GGUFTokenizer.from_metadata(dict(gguf.metadata))
        except ValueError as e:
            raise GGUFFormatError(f"{gguf.path}: {e}") from None
        self.model = self._build().to(self.device).eval()
        # every linear layer by tensor name: Q1Linear, Q2Linear, or DenseLinear for a float matrix
        self._linears = {name: m for name, m in self.model.tensor_modules().items() if not isinstance(m, RMSNorm)}

    @classmethod
    def load(cls, path: str | os.PathLike, dtype: str | None = None, **kw) -> "Engine":
        """``dtype``: name of the dequantized weight cache's type (fp32, bf16, fp16), see DTYPES."""
        if dtype is not None:
            kw["cache_dtype"] = weights_dtype(dtype)
        return cls(GGUFFile(path), LoadOptions(**kw))

    # ------------------------------------------------------------------ construction
    def _linear(self, name: str, shape: tuple[int, int]):
        rec = self.gguf.require_tensor(name)
        if rec.shape != shape:
            raise ValueError(f"{name}: expected shape {shape}, file has shape {rec.shape}")
        packed = PACKED_LINEARS.get(rec.ggml_type)
        if packed is not None:
            raw = torch.from_numpy(np.array(self.gguf.raw(name)))  # copy: live state must not alias the file
            cache = self.opts.cache_dtype if self.opts.cache_weights else None
            return packed(raw, shape[1], cache, self.opts.cache_dtype)
        return DenseLinear(torch.from_numpy(self.gguf.dequantize(name)).to(self.opts.cache_dtype))

    def _norm(self, name: str, dim: int) -> RMSNorm:
        rec = self.gguf.require_tensor(name)
        if rec.ggml_type not in (TYPE_F32, TYPE_F16, TYPE_BF16) or rec.shape != (dim,):
            raise ValueError(f"{name}: expected a float vector of {dim}, got {rec.type_name} {rec.shape}")
        return RMSNorm(torch.from_numpy(self.gguf.dequantize(name).copy()), self.cfg.rms_eps)

    def _build(self) -> Qwen3:
        return build_qwen3(self.cfg, self._linear, self._norm, self.opts.max_positions or self.cfg.context_length)

    # ------------------------------------------------------------------ weights and moves
    def linear(self, tensor: str) -> PackedLinear:
        """The packed layer (Q1Linear or Q2Linear) of a tensor name, e.g. 'blk.3.ffn_down.weight'."""
        m = self._linears.get(tensor)
        if not isinstance(m, PackedLinear):
            raise KeyError(f"{tensor!r} is not a Q1_0 or Q2_0 tensor of this model")
        return m

    def weight(self, tensor: str) -> torch.Tensor:
        """The live dense (out, in) matrix of a linear tensor, Q1_0 or float, on the engine's device
        in the cache's dtype (dequantized on the fly when the engine keeps no cache). Read it, do
        not write it: for a packed tensor it may be the cache the moves keep in step."""
        m = self._linears.get(tensor)
        if m is None:
            raise KeyError(f"{tensor!r} is not a linear tensor of this model")
        return m.dense()

    def flip_group(self, tensor: str, group: int) -> None:
        """The format's default group move: Q1_0's sign inversion, Q2_0's negate."""
        lin = self.linear(tensor)
        lin.group_move(group, lin.fmt.GROUP_MOVE)

    def flip_scale_bit(self, tensor: str, group: int, bit: int) -> None:
        self.linear(tensor).xor_scale_bit(group, bit)

    def move(self, tensor: str, group: int, kind: str, bit: int | None = None) -> None:
        """Any move of the tensor's format (q1.MOVES, q2.MOVES); ``bit`` for a scale move."""
        self.linear(tensor).move(group, kind, bit)

    def reset(self) -> None:
        for m in self._linears.values():
            if isinstance(m, PackedLinear):
                m.reset()

    # ------------------------------------------------------------------ batching
    def pad_batch(self, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Left-pad token sequences into one batch on the engine's device.

        Returns (tokens long (B, S), valid bool (B, S), positions long (B, S)), S the longest
        length: sequence b fills the last len(seqs[b]) slots, so every last token sits in slot
        S - 1; ``valid`` marks real tokens and positions count real tokens only (0 on padding),
        which keeps a sequence's results independent of what it is batched with.
        """
        if not seqs or any(len(s) == 0 for s in seqs):
            raise ValueError("every prompt must have at least one token")
        S = max(len(s) for s in seqs)
        if S > self.model.rope_cos.shape[0]:
            raise ValueError(f"{self.gguf.path}: a prompt of {S} tokens exceeds the model's context of "
                             f"{self.model.rope_cos.shape[0]} positions")
        tokens = torch.zeros(len(seqs), S, dtype=torch.long)
        valid = torch.zeros(len(seqs), S, dtype=torch.bool)
        for b, s in enumerate(seqs):
            tokens[b, S - len(s):] = torch.as_tensor(list(s), dtype=torch.long)
            valid[b, S - len(s):] = True
        positions = (valid.cumsum(1) - 1).clamp(min=0)
        return tokens.to(self.device), valid.to(self.device), positions.to(self.device)

    def _batches(self, seqs: Sequence[Sequence[int]], batch_size: int):
        """(chunk, tokens, positions, mask) for successive chunks of ``seqs``, padded and masked
        for one full forward pass each."""
        for i in range(0, len(seqs), batch_size):
            chunk = seqs[i : i + batch_size]
            tokens, valid, positions = self.pad_batch(chunk)
            mask = Qwen3.attention_mask(valid, torch.arange(tokens.shape[1], device=self.device))
            yield chunk, tokens, positions, mask

    @torch.inference_mode()
    def logits(self, seqs: Sequence[Sequence[int]], last_only: bool = True, batch_size: int = 64) -> list[torch.Tensor]:
        """Logits for many token sequences of different lengths.

        Returns a list: per sequence (V,) last-token logits, or (len, V) all positions. fp32, CPU.
        """
        out: list[torch.Tensor] = []
        for chunk, tokens, positions, mask in self._batches(seqs, batch_size):
            S = tokens.shape[1]
            lg = self.model(tokens, positions, mask, last_only=last_only).cpu()
            if not bool(torch.isfinite(lg).all()):  # finite weights can still overflow float32
                raise ValueError(f"{self.gguf.path}: the model's logits overflow to inf/NaN (its weights are "
                                 "finite but too large for float32 arithmetic)")
            for b, s in enumerate(chunk):
                out.append(lg[b] if last_only else lg[b, S - len(s):])
        return out

    @torch.inference_mode()
    def hidden_states(self, seqs: Sequence[Sequence[int]], batch_size: int = 32,
                      last_token: bool = False) -> list[list[torch.Tensor]] | torch.Tensor:
        """The residual stream of token sequences, fp32 on CPU: state 0 is the embeddings (block 0's
        input), state l the output of block l - 1, state n_layer the top block's output before the
        final norm.

        Returns states[l][b] of shape (len(seqs[b]), H), padding removed; or with ``last_token``
        one tensor (n_layer + 1, N, H) of each sequence's last token only.
        """
        per_state: list[list[torch.Tensor]] = [[] for _ in range(self.cfg.n_layer + 1)]
        for chunk, tokens, positions, mask in self._batches(seqs, batch_size):
            S = tokens.shape[1]
            for state, x in zip(per_state, self.model.residual_stream(tokens, positions, mask)):
                if last_token:
                    state.append(x[:, -1].cpu())  # left-padded: slot S - 1 holds every last token
                else:
                    x = x.cpu()
                    state += [x[b, S - len(s):] for b, s in enumerate(chunk)]
        return torch.stack([torch.cat(s) for s in per_state]) if last_token else per_state

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    @torch.inference_mode()
    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int = 64,
                 stop_ids: set[int] | None = None) -> list[list[int]]:
        """Greedy continuations with a static KV cache: one prefill, then one token per step.
        Stops a sequence at an end-of-turn token (not included in the output)."""
        stop = self.tokenizer.end_of_turn_ids if stop_ids is None else stop_ids
        c = self.cfg
        tokens, valid, positions = self.pad_batch(prompts)
        B, S = tokens.shape
        T = S + max_new_tokens
        if int(positions.max()) + max_new_tokens >= self.model.rope_cos.shape[0]:
            raise ValueError(f"prompt + {max_new_tokens} new tokens exceed the context of {self.model.rope_cos.shape[0]}")
        caches = [KVCache(B, c.n_kv_head, T, c.head_dim, torch.float32, self.device) for _ in range(c.n_layer)]
        key_valid = torch.zeros(B, T, dtype=torch.bool, device=self.device)
        key_valid[:, :S] = valid
        slots = torch.arange(S, device=self.device)
        logits = self.model(tokens, positions, Qwen3.attention_mask(key_valid, slots), caches, slots, last_only=True)
        out = [[] for _ in range(B)]
        done = torch.zeros(B, dtype=torch.bool)
        pos = positions[:, -1:]
        for step in range(max_new_tokens):
            nxt = logits.argmax(-1)  # (B,)
            for b in range(B):
                if not done[b]:
                    t = int(nxt[b])
                    if t in stop:
                        done[b] = True
                    else:
                        out[b].append(t)
            if bool(done.all()) or step == max_new_tokens - 1:
                break
            slot = torch.tensor([S + step], device=self.device)
            key_valid[:, S + step] = True
            pos = pos + 1
            logits = self.model(nxt[:, None].to(self.device), pos, Qwen3.attention_mask(key_valid, slot),
                                caches, slot, last_only=True)
        return out
