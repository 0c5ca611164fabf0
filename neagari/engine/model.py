"""Qwen3 forward pass over packed Q1_0 weights: one readable file.

Shapes: B batch, S query length, T key slots (KV cache), H hidden, D head_dim, V vocab.
Sequences are left-padded; ``key_valid`` (B, T) marks real tokens, positions count real tokens
only, so padding never changes a real token's result.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from neagari.engine import q1
from neagari.engine.config import ModelConfig


class RMSNorm(nn.Module):
    def __init__(self, weight: torch.Tensor, eps: float):
        super().__init__()
        self.weight = nn.Parameter(weight.float(), requires_grad=False)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight).to(x.dtype)


class Q1Linear(nn.Module):
    """A linear layer holding Q1_0 blocks; the search's moves act on the packed bytes.

    ``raw``: uint8 (out, in / 128 * 18), the live state. ``weight``: optional dense cache, kept
    in step with ``raw`` one 128-weight group at a time. ``base``: untouched bytes for reset.
    """

    def __init__(self, raw: torch.Tensor, in_features: int, cache_dtype: torch.dtype | None = torch.float32,
                 compute_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.in_features, self.out_features = in_features, raw.shape[0]
        self.register_buffer("raw", raw.contiguous(), persistent=False)
        self.register_buffer("base", raw.clone(), persistent=False)
        self.compute_dtype = compute_dtype
        cache = q1.dequantize_torch(self.raw, cache_dtype) if cache_dtype is not None else None
        self.register_buffer("weight", cache, persistent=False)
        self.touched: set[int] = set()

    @property
    def n_groups(self) -> int:
        return self.out_features * self.in_features // q1.QK

    def dense(self) -> torch.Tensor:
        return self.weight if self.weight is not None else q1.dequantize_torch(self.raw, self.compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.dense()
        return F.linear(x.to(w.dtype), w).to(x.dtype)

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Embedding lookup: dequantize only the rows asked for. ids (...,) → (..., in)."""
        if self.weight is not None:
            return F.embedding(ids, self.weight)
        return q1.dequantize_torch(self.raw[ids.reshape(-1)], self.compute_dtype).reshape(*ids.shape, -1)

    # ------------------------------------------------------------------ moves, O(128) each
    def _block(self, group: int) -> tuple[torch.Tensor, int, int]:
        if not 0 <= group < self.n_groups:
            raise IndexError(f"group {group} out of range 0..{self.n_groups - 1}")
        row, col = q1.group_location(group, self.in_features)
        b0 = (col // q1.QK) * q1.BLOCK_BYTES
        return self.raw[row, b0 : b0 + q1.BLOCK_BYTES], row, col

    def _refresh(self, group: int) -> None:
        if self.weight is not None:
            block, row, col = self._block(group)
            self.weight[row, col : col + q1.QK] = q1.group_weights_torch(block, self.weight.dtype)

    def xor_group(self, group: int) -> None:
        """Invert the 128 sign bits of one group (self-inverse)."""
        block, row, col = self._block(group)
        block[2:] ^= 0xFF
        if self.weight is not None:
            self.weight[row, col : col + q1.QK].neg_()
        self.touched.add(group)

    def xor_scale_bit(self, group: int, bit: int) -> None:
        """Flip bit ``bit`` of the group's FP16 scale (self-inverse)."""
        if not 0 <= bit < 16:
            raise ValueError(f"scale bit {bit} outside 0..15")
        block, _, _ = self._block(group)
        block[bit // 8] ^= 1 << (bit % 8)
        self._refresh(group)
        self.touched.add(group)

    def reset(self) -> None:
        """Restore base bytes for every touched group only."""
        for g in self.touched:
            block, row, col = self._block(g)
            b0 = (col // q1.QK) * q1.BLOCK_BYTES
            block.copy_(self.base[row, b0 : b0 + q1.BLOCK_BYTES])
            self._refresh(g)
        self.touched.clear()


class DenseLinear(nn.Module):
    """F32/F16/BF16 weights (e.g. a non-1-bit LM head); no moves."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.register_buffer("weight", weight, persistent=False)

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

    def forward(self, x):
        return self.ffn_down(F.silu(self.ffn_gate(x)) * self.ffn_up(x))


class Block(nn.Module):
    def __init__(self, attn: Attention, mlp: FeedForward, attn_norm: RMSNorm, ffn_norm: RMSNorm):
        super().__init__()
        self.attn, self.mlp, self.attn_norm, self.ffn_norm = attn, mlp, attn_norm, ffn_norm

    def forward(self, x, cos, sin, mask, cache=None, slots=None):
        h = x + self.attn(self.attn_norm(x), cos, sin, mask, cache, slots)
        return h + self.mlp(self.ffn_norm(h))


class Qwen3(nn.Module):
    def __init__(self, cfg: ModelConfig, embed, blocks: list[Block], norm: RMSNorm, head, max_pos: int | None = None):
        super().__init__()
        self.cfg = cfg
        self.token_embd, self.blocks, self.output_norm, self.output = embed, nn.ModuleList(blocks), norm, head
        cos, sin = rope_tables(cfg.head_dim, max_pos or cfg.context_length, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

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

    def forward(self, tokens, positions, mask, caches=None, slots=None, last_only=False, hidden_out=None):
        """tokens, positions (B, S); mask (B, 1, S, T). Returns logits (B, S, V) or (B, V)."""
        x = self.token_embd.rows(tokens).float()
        cos, sin = self.rope_cos[positions], self.rope_sin[positions]
        for i, blk in enumerate(self.blocks):
            if hidden_out is not None:
                hidden_out.append(x)
            x = blk(x, cos, sin, mask, caches[i] if caches is not None else None, slots)
        if last_only:
            x = x[:, -1]
        return self.output(self.output_norm(x)).float()
