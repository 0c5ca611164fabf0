"""Qwen3 model configuration, read from (and written to) GGUF metadata in one place."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from neagari.engine.gguf_io import GGUFFile, GGUFFormatError

ARCH = "qwen3"
MLP_PROJECTIONS = ("ffn_gate", "ffn_up", "ffn_down")
ATTN_PROJECTIONS = ("attn_q", "attn_k", "attn_v", "attn_output")


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
        arch = f.architecture
        if arch != ARCH:
            raise GGUFFormatError(f"{f.path}: architecture {arch!r} is not supported (only {ARCH!r})")

        def key(name, default=None):
            full = f"{arch}.{name}"
            if full in f.metadata:
                return f.metadata[full]
            if default is None:
                f.require_key(full)
            return default

        n_head = int(key("attention.head_count"))
        hidden = int(key("embedding_length"))
        emb = f.require_tensor("token_embd.weight")
        return cls(
            n_layer=int(key("block_count")),
            hidden=hidden,
            ffn=int(key("feed_forward_length")),
            n_head=n_head,
            n_kv_head=int(key("attention.head_count_kv", n_head)),
            head_dim=int(key("attention.key_length", hidden // n_head)),
            vocab_size=int(emb.shape[0]),
            context_length=int(key("context_length", 4096)),
            rope_theta=float(key("rope.freq_base", 1_000_000.0)),
            rms_eps=float(key("attention.layer_norm_rms_epsilon", 1e-6)),
            tied_embeddings="output.weight" not in f.tensors,
        )

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
