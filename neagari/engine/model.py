"""Qwen3 forward pass over packed Q1_0 / Q2_0 weights: one readable file.

Shapes: B batch, S query length, T key slots (KV cache), H hidden, D head_dim, V vocab.
Sequences are left-padded; ``key_valid`` (B, T) marks real tokens, positions count real tokens
only, so padding never changes a real token's result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from neagari.engine import q1, q2
from neagari.engine.config import ModelConfig, layer_tensor, layer_tensor_shapes, tensor_shapes


class RMSNorm(nn.Module):
    def __init__(self, weight: torch.Tensor, eps: float):
        super().__init__()
        self.weight = nn.Parameter(weight.float(), requires_grad=False)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight).to(x.dtype)


class PackedLinear(nn.Module):
    """A linear layer holding GGUF blocks of one format (``fmt``: q1 or q2); the search's moves act
    on the packed bytes.

    ``raw``: uint8 (out, nbytes), the live state. ``weight``: optional dense cache, kept in step
    with ``raw`` one group (block) at a time. ``base``: untouched bytes for reset.
    """

    fmt = None  # the block format's module, set by each subclass

    def __init__(self, raw: torch.Tensor, in_features: int, cache_dtype: torch.dtype | None = torch.float32,
                 compute_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.in_features, self.out_features = in_features, raw.shape[0]
        self.register_buffer("raw", raw.contiguous(), persistent=False)
        self.register_buffer("base", raw.clone(), persistent=False)
        self.compute_dtype = compute_dtype
        cache = self.fmt.dequantize_torch(self.raw, cache_dtype) if cache_dtype is not None else None
        self.register_buffer("weight", cache, persistent=False)
        self.touched: set[int] = set()

    @property
    def n_groups(self) -> int:
        return self.out_features * self.in_features // self.fmt.QK

    def dense(self) -> torch.Tensor:
        return self.weight if self.weight is not None else self.fmt.dequantize_torch(self.raw, self.compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.dense()
        return F.linear(x.to(w.dtype), w).to(x.dtype)

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Embedding lookup: dequantize only the rows asked for. ids (...,) → (..., in)."""
        if self.weight is not None:
            return F.embedding(ids, self.weight)
        return self.fmt.dequantize_torch(self.raw[ids.reshape(-1)], self.compute_dtype).reshape(*ids.shape, -1)

    # ------------------------------------------------------------------ moves, O(block) each
    def block(self, group: int) -> tuple[torch.Tensor, int, int]:
        """(the group's live bytes as a writable view, its row, its first column)."""
        if not 0 <= group < self.n_groups:
            raise IndexError(f"group {group} out of range 0..{self.n_groups - 1}")
        row, col = self.fmt.group_location(group, self.in_features)
        return self.raw.view(-1)[self.fmt.block_bytes(group)], row, col

    def _refresh(self, group: int) -> None:
        if self.weight is not None:
            block, row, col = self.block(group)
            self.weight[row, col : col + self.fmt.QK] = self.fmt.group_weights_torch(block, self.weight.dtype)

    def move(self, group: int, kind: str, bit: int | None = None) -> None:
        """One move of the format's kinds (``fmt.MOVES``), each self-inverse; ``bit`` for ``scale``."""
        if kind == "scale":
            self.xor_scale_bit(group, bit)
        elif kind in self.fmt.MOVES:
            self.group_move(group, kind)
        else:
            raise ValueError(f"{kind!r} is not a {self.fmt.NAME} move ({', '.join(self.fmt.MOVES)})")

    def group_move(self, group: int, kind: str) -> None:
        """A move of every weight of one group: rewrite its bytes, then its cached weights."""
        block, _, _ = self.block(group)
        self.fmt.apply_move(block, kind)
        self._refresh(group)
        self.touched.add(group)

    def xor_scale_bit(self, group: int, bit: int) -> None:
        """Flip bit ``bit`` of the group's FP16 scale (self-inverse)."""
        self.fmt.scale_bit_byte(bit)  # a bad bit is reported as such, whatever the group
        block, _, _ = self.block(group)
        self.fmt.apply_move(block, "scale", bit)
        self._refresh(group)
        self.touched.add(group)

    def reset(self) -> None:
        """Restore base bytes for every touched group only."""
        for g in self.touched:
            block, _, _ = self.block(g)
            block.copy_(self.base.view(-1)[self.fmt.block_bytes(g)])
            self._refresh(g)
        self.touched.clear()


class Q1Linear(PackedLinear):
    """Q1_0 blocks: 128 weights ±d each; the group move inverts the 128 sign bits."""

    fmt = q1

    def group_move(self, group: int, kind: str = "group") -> None:
        if kind != "group":
            raise ValueError(f"{kind!r} is not a Q1_0 group move (group)")
        self.xor_group(group)

    def xor_group(self, group: int) -> None:
        """Invert the 128 sign bits of one group (self-inverse)."""
        block, row, col = self.block(group)
        q1.xor_block(block)
        if self.weight is not None:
            self.weight[row, col : col + q1.QK].neg_()  # exact: the group's weights are ±d
        self.touched.add(group)


class Q2Linear(PackedLinear):
    """Q2_0 blocks: 64 ternary weights in {-d, 0, +d} each; the group moves transpose two of
    the three code values (q2.GROUP_MOVES: negate, zero_plus, zero_minus)."""

    fmt = q2


class DenseLinear(nn.Module):
    """F32/F16/BF16 weights (e.g. a non-1-bit LM head); no moves."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.register_buffer("weight", weight, persistent=False)

    def dense(self) -> torch.Tensor:
        return self.weight

    def forward(self, x):
        return F.linear(x.to(self.weight.dtype), self.weight).to(x.dtype)

    def rows(self, ids):
        return F.embedding(ids, self.weight)


class KVCache(nn.Module):
    """Static cache: (B, n_kv, T, D) buffers written at slot positions."""

    def __init__(self, batch: int, n_kv: int, max_slots: int, head_dim: int, dtype, device):
        super().__init__()
        shape = (batch, n_kv, max_slots, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        self.k[:, :, slots] = k  # k: (B, n_kv, S, D)
        self.v[:, :, slots] = v
        return self.k, self.v


def rope_tables(head_dim: int, max_pos: int, theta: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (max_pos, D/2), NeoX layout (rotate halves), fp32."""
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64, device=device) / head_dim)
    ang = torch.arange(max_pos, dtype=torch.float64, device=device)[:, None] * inv[None]
    return ang.cos().float(), ang.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, S, h, D); cos/sin (B, S, D/2)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half].float(), x[..., half:].float()
    c, s = cos.unsqueeze(2), sin.unsqueeze(2)
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, wq, wk, wv, wo, q_norm: RMSNorm, k_norm: RMSNorm):
        super().__init__()
        self.cfg = cfg
        self.attn_q, self.attn_k, self.attn_v, self.attn_output = wq, wk, wv, wo
        self.q_norm, self.k_norm = q_norm, k_norm

    def forward(self, x, cos, sin, mask, cache: KVCache | None = None, slots=None, q_last: bool = False):
        """q_last: only the last position queries (keys and values still cover every position);
        the search's top layer needs no more."""
        B, S, _ = x.shape
        c = self.cfg
        xq, cq, sq = (x[:, -1:], cos[:, -1:], sin[:, -1:]) if q_last else (x, cos, sin)
        Sq = xq.shape[1]
        q = self.q_norm(self.attn_q(xq).view(B, Sq, c.n_head, c.head_dim))  # QK-norm per head, before RoPE
        k = self.k_norm(self.attn_k(x).view(B, S, c.n_kv_head, c.head_dim))
        v = self.attn_v(x).view(B, S, c.n_kv_head, c.head_dim)
        q, k = apply_rope(q, cq, sq), apply_rope(k, cos, sin)
        if q_last:
            mask = mask[:, :, -1:]
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, h, S, D)
        if cache is not None:
            k, v = cache.update(slots, k, v)  # (B, n_kv, T, D)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=c.n_head != c.n_kv_head)
        return self.attn_output(y.transpose(1, 2).reshape(B, Sq, c.q_dim))


class FeedForward(nn.Module):
    def __init__(self, gate, up, down):
        super().__init__()
        self.ffn_gate, self.ffn_up, self.ffn_down = gate, up, down

    def activations(self, x):
        """x (..., H) → (gate, up, silu(gate) * up), each (..., F)."""
        gate = self.ffn_gate(x)
        silu = F.silu(gate)
        up = self.ffn_up(x)
        return gate, up, silu * up

    def forward(self, x):
        return self.ffn_down(self.activations(x)[2])


@dataclass
class BlockTrace:
    """A block's MLP activations, kept by the search to update its output under a move of one
    MLP group without rerunning the block. S_q is S, or 1 when only the last position queries."""

    n: torch.Tensor  # (B, S_q, H) ffn_norm(h), the MLP's input
    gate: torch.Tensor  # (B, S_q, F)
    up: torch.Tensor  # (B, S_q, F)
    act: torch.Tensor  # (B, S_q, F) silu(gate) * up
    out: torch.Tensor  # (B, S_q, H) the block's output, h + ffn_down(act)


class Block(nn.Module):
    def __init__(self, attn: Attention, mlp: FeedForward, attn_norm: RMSNorm, ffn_norm: RMSNorm):
        super().__init__()
        self.attn, self.mlp, self.attn_norm, self.ffn_norm = attn, mlp, attn_norm, ffn_norm

    def forward(self, x, cos, sin, mask, cache=None, slots=None, q_last: bool = False) -> torch.Tensor:
        """x (B, S, H) → (B, S, H); with q_last only the last position's output (B, 1, H)."""
        return self.trace(x, cos, sin, mask, cache, slots, q_last).out

    def trace(self, x, cos, sin, mask, cache=None, slots=None, q_last: bool = False) -> BlockTrace:
        """The forward pass, keeping the MLP's activations."""
        h = (x[:, -1:] if q_last else x) + self.attn(self.attn_norm(x), cos, sin, mask, cache, slots, q_last)
        n = self.ffn_norm(h)
        gate, up, act = self.mlp.activations(n)
        return BlockTrace(n, gate, up, act, h + self.mlp.ffn_down(act))


# Where each of a block's tensors (config.layer_tensor_shapes) lives in a Block.
BLOCK_MODULES = {
    "attn_norm": "attn_norm", "ffn_norm": "ffn_norm", "attn_q_norm": "attn.q_norm", "attn_k_norm": "attn.k_norm",
    "attn_q": "attn.attn_q", "attn_k": "attn.attn_k", "attn_v": "attn.attn_v", "attn_output": "attn.attn_output",
    "ffn_gate": "mlp.ffn_gate", "ffn_up": "mlp.ffn_up", "ffn_down": "mlp.ffn_down",
}


class Qwen3(nn.Module):
    def __init__(self, cfg: ModelConfig, embed, blocks: list[Block], norm: RMSNorm, head, max_pos: int | None = None):
        super().__init__()
        self.cfg = cfg
        self.token_embd, self.blocks, self.output_norm, self.output = embed, nn.ModuleList(blocks), norm, head
        cos, sin = rope_tables(cfg.head_dim, max_pos or cfg.context_length, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def tensor_modules(self) -> dict[str, nn.Module]:
        """llama.cpp tensor name → the module holding that weight (a linear layer or an RMSNorm),
        in file order; ``output.weight`` only when the LM head is untied."""
        mods = {"token_embd.weight": self.token_embd, "output_norm.weight": self.output_norm}
        if not self.cfg.tied_embeddings:
            mods["output.weight"] = self.output
        for i, blk in enumerate(self.blocks):
            mods.update({layer_tensor(i, n): blk.get_submodule(path) for n, path in BLOCK_MODULES.items()})
        return mods

    @staticmethod
    def attention_mask(key_valid: torch.Tensor, q_slots: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, T) bool: causal over slots, padding keys hidden; each query sees itself so
        padded query rows stay finite (their outputs are never read)."""
        T = key_valid.shape[1]
        k_slots = torch.arange(T, device=key_valid.device)
        causal = k_slots[None, :] <= q_slots[:, None]  # (S, T)
        mask = causal[None] & key_valid[:, None, :]
        mask |= k_slots[None, None, :] == q_slots[None, :, None]
        return mask.unsqueeze(1)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, S) → the residual stream's start (B, S, H), fp32."""
        return self.token_embd.rows(tokens).float()

    def rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (B, S) → cos, sin (B, S, D/2)."""
        return self.rope_cos[positions], self.rope_sin[positions]

    def residual_stream(self, tokens, positions, mask, caches=None, slots=None) -> Iterator[torch.Tensor]:
        """Yields the n_layer + 1 states of the residual stream, each (B, S, H) fp32: the
        embeddings (block 0's input), then each block's output (the last one before the final
        norm). A generator, so a caller that keeps only the last holds one state at a time."""
        x = self.embed(tokens)
        yield x
        cos, sin = self.rope(positions)
        for i, blk in enumerate(self.blocks):
            x = blk(x, cos, sin, mask, caches[i] if caches is not None else None, slots)
            yield x

    def forward(self, tokens, positions, mask, caches=None, slots=None, last_only=False):
        """tokens, positions (B, S); mask (B, 1, S, T). Returns logits (B, S, V) or (B, V)."""
        for x in self.residual_stream(tokens, positions, mask, caches, slots):
            pass  # run to the top block's output
        if last_only:
            x = x[:, -1]
        return self.output(self.output_norm(x)).float()


def build_qwen3(cfg: ModelConfig, linear: Callable[[str, tuple[int, int]], nn.Module],
                norm: Callable[[str, int], RMSNorm], max_pos: int | None = None) -> Qwen3:
    """The Qwen3 network of ``cfg``, its weights made by two factories.

    ``linear(name, (out, in))`` returns a linear layer with ``forward`` and ``rows`` (embedding
    lookup); ``norm(name, dim)`` an RMSNorm; names are llama.cpp's (config.tensor_shapes). A tied
    LM head is the embedding itself. The factories are called block by block in the table's
    order, then for the embedding, the LM head and the final norm, so one drawing random weights
    from a generator always draws them in the same order.
    """
    blocks = []
    for i in range(cfg.n_layer):
        t = {n: norm(layer_tensor(i, n), shape[0]) if len(shape) == 1 else linear(layer_tensor(i, n), shape)
             for n, shape in layer_tensor_shapes(cfg).items()}
        attn = Attention(cfg, t["attn_q"], t["attn_k"], t["attn_v"], t["attn_output"], t["attn_q_norm"], t["attn_k_norm"])
        mlp = FeedForward(t["ffn_gate"], t["ffn_up"], t["ffn_down"])
        blocks.append(Block(attn, mlp, t["attn_norm"], t["ffn_norm"]))
    shapes = tensor_shapes(cfg)
    embed = linear("token_embd.weight", shapes["token_embd.weight"])
    head = embed if cfg.tied_embeddings else linear("output.weight", shapes["output.weight"])
    return Qwen3(cfg, embed, blocks, norm("output_norm.weight", cfg.hidden), head, max_pos)
