"""Qwen3 model configuration, read from (and written to) GGUF metadata in one place."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from neagari.engine.gguf_io import FLOAT_TENSOR_TYPES, GGUFFile, GGUFFormatError

ARCH = "qwen3"
MLP_PROJECTIONS = ("ffn_gate", "ffn_up", "ffn_down")
ATTN_PROJECTIONS = ("attn_q", "attn_k", "attn_v", "attn_output")
# Sanity bounds on metadata read from a file. A context length sizes the RoPE tables (context x
# head_dim/2, float64 while built): 2^18 = 262,144 positions is Qwen3's longest native context.
# Dimensions and head counts are bounded again by the tensors' shapes, which the file must hold.
MAX_CONTEXT = 1 << 18
MAX_DIM = 1 << 20
MAX_HEADS = 1 << 12
_BLOCK_NAME = re.compile(r"blk\.(\d+)\.")


@dataclass(frozen=True)
class ModelConfig:
    n_layer: int
    hidden: int
    ffn: int
    n_head: int
    n_kv_head: int
    head_dim: int  # may differ from hidden / n_head (Qwen3-0.6B: 1024 / 16 = 64, head_dim 128)
    vocab_size: int
    context_length: int = 4096
    rope_theta: float = 1_000_000.0
    rms_eps: float = 1e-6
    tied_embeddings: bool = True

    @property
    def q_dim(self) -> int:
        return self.n_head * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_head * self.head_dim

    def __post_init__(self):
        if self.n_head % self.n_kv_head:
            raise ValueError(f"n_head {self.n_head} not a multiple of n_kv_head {self.n_kv_head}")
        if self.head_dim % 2:
            raise ValueError("head_dim must be even for RoPE")

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_gguf(cls, f: GGUFFile) -> "ModelConfig":
        """The configuration of a Qwen3 GGUF, checked against the file's tensors.

        Every key is type- and range-checked; the block count must equal the blocks the file
        holds, the head counts must divide and every tensor must have the shape and type the
        configuration implies, the vocabulary must be the embedding's rows. Any failure is one
        :class:`GGUFFormatError` naming the file and the key or tensor.
        """
        arch = f.architecture
        if arch != ARCH:
            raise GGUFFormatError(f"{f.path}: architecture {arch!r} is not supported (only {ARCH!r})")
        k = f"{arch}."
        n_head = f.int_key(k + "attention.head_count", lo=1, hi=MAX_HEADS)
        n_kv_head = f.int_key(k + "attention.head_count_kv", n_head, lo=1, hi=n_head)
        if n_head % n_kv_head:
            raise GGUFFormatError(f"{f.path}: {k}attention.head_count {n_head} is not a multiple of "
                                  f"{k}attention.head_count_kv {n_kv_head}")
        hidden = f.int_key(k + "embedding_length", lo=1, hi=MAX_DIM)
        head_dim = f.int_key(k + "attention.key_length", hidden // n_head, lo=2, hi=MAX_DIM)
        if head_dim % 2:
            raise GGUFFormatError(f"{f.path}: {k}attention.key_length {head_dim} is odd (RoPE needs an even head size)")
        f.int_key(k + "attention.value_length", head_dim, lo=head_dim, hi=head_dim)
        emb = f.require_tensor("token_embd.weight")
        if len(emb.shape) != 2 or emb.shape[0] < 1:
            raise GGUFFormatError(f"{f.path}: tensor 'token_embd.weight' has shape {emb.shape}, expected (vocab, hidden)")
        cfg = cls(
            n_layer=_block_count(f, f.int_key(k + "block_count", lo=1)),
            hidden=hidden,
            ffn=f.int_key(k + "feed_forward_length", lo=1, hi=MAX_DIM),
            n_head=n_head,
            n_kv_head=n_kv_head,
            head_dim=head_dim,
            vocab_size=int(emb.shape[0]),
            context_length=f.int_key(k + "context_length", 4096, lo=1, hi=MAX_CONTEXT),
            rope_theta=f.float_key(k + "rope.freq_base", 1_000_000.0),
            rms_eps=f.float_key(k + "attention.layer_norm_rms_epsilon", 1e-6, hi=1.0),
            tied_embeddings="output.weight" not in f.tensors,
        )
        check_tensors(f, cfg)
        return cfg

    def add_to_gguf(self, writer) -> None:
        """Typed architecture keys on a gguf.GGUFWriter (as llama.cpp's converter writes them)."""
        writer.add_context_length(self.context_length)
        writer.add_embedding_length(self.hidden)
        writer.add_block_count(self.n_layer)
        writer.add_feed_forward_length(self.ffn)
        writer.add_head_count(self.n_head)
        writer.add_head_count_kv(self.n_kv_head)
        writer.add_key_length(self.head_dim)
        writer.add_value_length(self.head_dim)
        writer.add_rope_freq_base(self.rope_theta)
        writer.add_layer_norm_rms_eps(self.rms_eps)


def layer_tensor_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The tensors of one block: short name (``blk.{i}.{name}.weight`` in the file) → PyTorch
    shape, (dim,) for a norm and (out, in) for a projection, in the order files hold them."""
    return {
        "attn_norm": (cfg.hidden,), "ffn_norm": (cfg.hidden,),
        "attn_q_norm": (cfg.head_dim,), "attn_k_norm": (cfg.head_dim,),  # QK-norm, per head
        "attn_q": (cfg.q_dim, cfg.hidden), "attn_k": (cfg.kv_dim, cfg.hidden),
        "attn_v": (cfg.kv_dim, cfg.hidden), "attn_output": (cfg.hidden, cfg.q_dim),
        "ffn_gate": (cfg.ffn, cfg.hidden), "ffn_up": (cfg.ffn, cfg.hidden), "ffn_down": (cfg.hidden, cfg.ffn),
    }


def layer_tensor(layer: int, name: str) -> str:
    """llama.cpp's name of a block's tensor, e.g. (3, "ffn_down") → "blk.3.ffn_down.weight"."""
    return f"blk.{layer}.{name}.weight"


def tensor_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor a Qwen3 GGUF must hold: llama.cpp's name → PyTorch shape, in file order (the
    LM head only when untied)."""
    shapes = {"token_embd.weight": (cfg.vocab_size, cfg.hidden), "output_norm.weight": (cfg.hidden,)}
    if not cfg.tied_embeddings:
        shapes["output.weight"] = (cfg.vocab_size, cfg.hidden)
    for i in range(cfg.n_layer):
        shapes.update({layer_tensor(i, n): shape for n, shape in layer_tensor_shapes(cfg).items()})
    return shapes


def tensor_names(cfg: ModelConfig) -> list[str]:
    """Every tensor a Qwen3 GGUF must hold, in llama.cpp's naming and file order."""
    return list(tensor_shapes(cfg))


def _block_count(f: GGUFFile, n_layer: int) -> int:
    """``n_layer`` if the file holds exactly blocks 0..n_layer-1, else a GGUFFormatError."""
    present = {int(m.group(1)) for name in f.tensors if (m := _BLOCK_NAME.match(name))}
    if len(present) != n_layer or max(present, default=-1) != n_layer - 1:  # no set(range(n)): n may be 2^64
        held = f"blocks {min(present)}..{max(present)} ({len(present)} distinct)" if present else "no blocks"
        raise GGUFFormatError(f"{f.path}: {ARCH}.block_count is {n_layer} but the file holds {held}")
    return n_layer


def check_tensors(f: GGUFFile, cfg: ModelConfig) -> None:
    """Every tensor the configuration needs is in the file with the shape it implies, norms in a
    float type; the tokenizer's vocabulary (when the file has one) is the embedding's rows."""
    for name, shape in tensor_shapes(cfg).items():
        rec = f.require_tensor(name)
        if rec.shape != shape:
            raise GGUFFormatError(f"{f.path}: tensor {name!r} has shape {rec.shape}, the metadata implies {shape}")
        if len(shape) == 1 and rec.ggml_type not in FLOAT_TENSOR_TYPES:
            raise GGUFFormatError(f"{f.path}: norm tensor {name!r} is {rec.type_name}, expected F32, F16 or BF16")
    tokens = f.metadata.get("tokenizer.ggml.tokens")
    if isinstance(tokens, list) and len(tokens) != cfg.vocab_size:
        raise GGUFFormatError(f"{f.path}: tokenizer.ggml.tokens has {len(tokens)} tokens, token_embd.weight "
                              f"{cfg.vocab_size} rows")
