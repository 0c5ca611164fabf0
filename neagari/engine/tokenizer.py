"""Tokenizer and chat template taken from a GGUF file's own metadata.

Also trains small byte-level BPE tokenizers (for fixture/toy models) and turns
them into the GGUF tokenizer keys llama.cpp reads.
"""
from __future__ import annotations

import json
import warnings
from datetime import datetime
from typing import Iterable, Sequence

import jinja2
import jinja2.sandbox
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

# llama.cpp's LLAMA_VOCAB_PRE_TYPE_QWEN2 split regex (src/llama-vocab.cpp): Qwen2's
# tokenizer.json regex with the (?i:...) contraction group spelled out case by case.
QWEN2_PRE_REGEX = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# llama.cpp's QWEN35 variant: letter runs also take combining marks (\p{M}).
QWEN35_PRE_REGEX = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
    r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# tokenizer.ggml.pre values llama.cpp maps to the QWEN2 regex.
_QWEN2_PRES = {"qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2", "hunyuan", "grok-2", "solar-open"}

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]

# ChatML in the Qwen3 style: reasoning is kept only for assistant turns after the last
# user query, and enable_thinking=False pre-fills an empty think block.
CHATML_TEMPLATE = """\
{%- if messages and messages[0].role == 'system' %}
{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
{%- endif %}
{%- set ns = namespace(searching=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
{%- if ns.searching and message.role == 'user' %}
{%- set ns.searching = false %}
{%- set ns.last_query_index = messages|length - 1 - loop.index0 %}
{%- endif %}
{%- endfor %}
{%- for message in messages %}
{%- if message.role == 'system' and loop.first %}
{%- elif message.role == 'assistant' %}
{%- set content = message.content or '' %}
{%- set reasoning = '' %}
{%- if '</think>' in content %}
{%- set reasoning = content.split('</think>')[0].split('<think>')[-1].strip('\\n') %}
{%- set content = content.split('</think>')[-1].lstrip('\\n') %}
{%- endif %}
{%- if loop.index0 > ns.last_query_index and reasoning %}
{{- '<|im_start|>assistant\\n<think>\\n' + reasoning + '\\n</think>\\n\\n' + content + '<|im_end|>\\n' }}
{%- else %}
{{- '<|im_start|>assistant\\n' + content + '<|im_end|>\\n' }}
{%- endif %}
{%- else %}
{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
{{- '<|im_start|>assistant\\n' }}
{%- if enable_thinking is defined and enable_thinking is false %}
{{- '<think>\\n\\n</think>\\n\\n' }}
{%- endif %}
{%- endif %}
"""

# GGUF token types (llama.cpp LLAMA_TOKEN_TYPE_*).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def _byte_to_char() -> dict[int, str]:
    """GPT-2 byte-level alphabet: printable bytes stand for themselves, the rest map past 255."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


_CHAR_TO_BYTE = {c: b for b, c in _byte_to_char().items()}


def _pre_tokenizer(regex: str) -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])


def train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train a Qwen2-style byte-level BPE; SPECIAL_TOKENS get the highest ids."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = _pre_tokenizer(QWEN2_PRE_REGEX)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIAL_TOKENS), min_frequency=1, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train_from_iterator(list(texts), trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    return tok


def gguf_tokenizer_metadata(tok: Tokenizer, chat_template: str = CHATML_TEMPLATE) -> dict[str, object]:
    """GGUF tokenizer key/values (llama.cpp 'gpt2' model, 'qwen2' pre) for a trained tokenizer."""
    vocab = tok.get_vocab(with_added_tokens=True)
    by_id = sorted(vocab.items(), key=lambda kv: kv[1])
    if [i for _, i in by_id] != list(range(len(by_id))):
        raise ValueError("tokenizer ids are not contiguous from 0")
    added = tok.get_added_tokens_decoder()
    tokens = [t for t, _ in by_id]
    types = [(CONTROL if added[i].special else USER_DEFINED) if i in added else NORMAL for i in range(len(tokens))]
    merges = json.loads(tok.to_str())["model"]["merges"]
    # tokenizers >= 0.20 stores merges as [a, b] pairs, older versions as "a b" strings.
    merges = [m if isinstance(m, str) else f"{m[0]} {m[1]}" for m in merges]
    return {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "qwen2",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.eos_token_id": vocab["<|im_end|>"],
        "tokenizer.ggml.padding_token_id": vocab["<|endoftext|>"],
        "tokenizer.ggml.bos_token_id": vocab["<|endoftext|>"],
        "tokenizer.ggml.add_bos_token": False,
        "tokenizer.chat_template": chat_template,
    }


def write_tokenizer_metadata(writer, meta: dict) -> None:
    """Add tokenizer key/values to a gguf.GGUFWriter with llama.cpp's value types."""
    from gguf import GGUFValueType

    for key, val in meta.items():
        if isinstance(val, bool):  # before int: bool is an int subclass
            writer.add_bool(key, val)
        elif isinstance(val, str):
            writer.add_string(key, val)
        elif isinstance(val, int):
            writer.add_uint32(key, val)  # token ids are uint32 in llama.cpp
        elif isinstance(val, float):
            writer.add_float32(key, val)
        elif isinstance(val, (list, tuple)) and val and all(isinstance(v, str) for v in val):
            writer.add_key_value(key, list(val), GGUFValueType.ARRAY, sub_type=GGUFValueType.STRING)
        elif isinstance(val, (list, tuple)) and val:
            writer.add_key_value(key, [int(v) for v in val], GGUFValueType.ARRAY, sub_type=GGUFValueType.INT32)
        else:
            raise TypeError(f"cannot write GGUF key {key!r} with value of type {type(val).__name__}")


def _str(v) -> str:
    return v.decode("utf-8") if isinstance(v, (bytes, bytearray)) else str(v)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # Like HF transformers: no HTML escaping, keep non-ASCII text as is.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


_TOKEN_TYPES = range(0, BYTE + 1)  # LLAMA_TOKEN_TYPE_UNDEFINED .. BYTE


def _checked_vocab(metadata: dict[str, object]) -> tuple[list[str], list[int], list[str]]:
    """tokens, token types and merges of GGUF tokenizer metadata, each checked as llama.cpp and
    tokenizers need them: tokens a non-empty list of strings, one integer type in 0..6 per token,
    every merge two tokens of the vocabulary whose concatenation is one too, every
    ``tokenizer.ggml.*_token_id`` an id of the vocabulary. Raises ValueError naming the key."""
    if "tokenizer.ggml.tokens" not in metadata:
        raise ValueError("missing required metadata key 'tokenizer.ggml.tokens'")
    tokens = metadata["tokenizer.ggml.tokens"]
    if not isinstance(tokens, (list, tuple)) or not tokens or not all(isinstance(t, (str, bytes)) for t in tokens):
        raise ValueError("tokenizer.ggml.tokens must be a non-empty array of strings")
    tokens = [_str(t) for t in tokens]
    n = len(tokens)
    types = metadata.get("tokenizer.ggml.token_type", [NORMAL] * n)
    if not isinstance(types, (list, tuple)) or len(types) != n:
        raise ValueError(f"tokenizer.ggml.token_type must be an array of {n} integers, one per token")
    if not all(isinstance(t, int) and not isinstance(t, bool) and t in _TOKEN_TYPES for t in types):
        bad = next(i for i, t in enumerate(types) if not (isinstance(t, int) and t in _TOKEN_TYPES))
        raise ValueError(f"tokenizer.ggml.token_type[{bad}] is {types[bad]!r}, not a token type 0..{BYTE}")
    types = [int(t) for t in types]
    merges = metadata.get("tokenizer.ggml.merges", [])
    if not isinstance(merges, (list, tuple)) or not all(isinstance(m, (str, bytes)) for m in merges):
        raise ValueError("tokenizer.ggml.merges must be an array of strings")
    merges = [_str(m) for m in merges]
    vocab = set(tokens)
    for i, m in enumerate(merges):
        a, sep, b = m.partition(" ")
        if not (sep and a and b):
            raise ValueError(f"tokenizer.ggml.merges[{i}] {m[:40]!r} is not two tokens separated by a space")
        for part in (a, b, a + b):
            if part not in vocab:
                raise ValueError(f"tokenizer.ggml.merges[{i}] {m[:40]!r} names {part[:40]!r}, "
                                 "which is not in tokenizer.ggml.tokens")
    for key, v in metadata.items():
        if key.startswith("tokenizer.ggml.") and key.endswith("_token_id"):
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < n:
                raise ValueError(f"metadata key {key!r} is {v!r}, not a token id of the vocabulary (0..{n - 1})")
    return tokens, types, merges


class GGUFTokenizer:
    """Byte-level BPE tokenizer that encodes exactly as llama.cpp does for the same GGUF."""

    def __init__(self, tokens: list[str], token_types: list[int], merges: list[str], regex: str,
                 eos_token_id: int, bos_token_id: int | None = None, pad_token_id: int | None = None,
                 eot_token_id: int | None = None, add_bos: bool = False, chat_template: str | None = None):
        self.tokens, self.token_types = tokens, token_types
        self.vocab_size = len(tokens)
        self.eos_token_id, self.bos_token_id, self.pad_token_id = eos_token_id, bos_token_id, pad_token_id
        self.add_bos, self.chat_template = add_bos, chat_template
        # Later duplicates win, as in llama.cpp's token_to_id map.
        vocab = {t: i for i, t in enumerate(tokens)}
        pairs = [tuple(m.split(" ", 1)) for m in merges]
        try:
            tok = Tokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False))
        except Exception as e:  # tokenizers' own errors (a Rust exception type)
            lines = str(e).strip().splitlines() or [type(e).__name__]
            raise ValueError(f"tokenizer could not be built from the file's vocabulary: {lines[0]}") from None
        tok.pre_tokenizer = _pre_tokenizer(regex)
        tok.decoder = decoders.ByteLevel()
        # llama.cpp splits out control/unknown tokens only when parse_special is set, but
        # user-defined ones always: that is tokenizers' special / non-special added token split.
        added = [AddedToken(t, special=ty != USER_DEFINED, normalized=False)
                 for t, ty in zip(tokens, token_types) if ty in (UNKNOWN, CONTROL, USER_DEFINED)]
        tok.add_tokens(added)
        self._tok = tok
        self.end_of_turn_ids = {eos_token_id} | {vocab[t] for t in ("<|im_end|>", "<|endoftext|>") if t in vocab}
        if eot_token_id is not None:
            self.end_of_turn_ids.add(eot_token_id)
        self._template = None

    @classmethod
    def from_metadata(cls, metadata: dict[str, object]) -> "GGUFTokenizer":
        """Build from a dict of GGUF key -> value (arrays as lists)."""
        model = _str(metadata.get("tokenizer.ggml.model", ""))
        if model != "gpt2":
            raise ValueError(f"unsupported tokenizer.ggml.model {model!r}: only byte-level BPE ('gpt2', as in "
                             "Qwen2/Qwen3 GGUFs) is supported")
        pre = _str(metadata.get("tokenizer.ggml.pre", "default"))
        if pre == "qwen35":
            regex = QWEN35_PRE_REGEX
        else:
            if pre not in _QWEN2_PRES:
                warnings.warn(f"tokenizer.ggml.pre {pre!r} is not Qwen2's; using the Qwen2 split regex, "
                              "which may tokenize differently from llama.cpp", stacklevel=2)
            regex = QWEN2_PRE_REGEX
        tokens, types, merges = _checked_vocab(metadata)
        index = {t: i for i, t in enumerate(tokens)}

        def tid(key):
            v = metadata.get(key)
            return None if v is None else int(v)

        eos = tid("tokenizer.ggml.eos_token_id")
        if eos is None:
            eos = index.get("<|im_end|>", index.get("<|endoftext|>"))
        if eos is None:
            raise ValueError("GGUF tokenizer has no tokenizer.ggml.eos_token_id and no <|im_end|>/<|endoftext|> token")
        template = metadata.get("tokenizer.chat_template")
        if template is not None and not isinstance(template, (str, bytes)):
            raise ValueError(f"tokenizer.chat_template is a {type(template).__name__}, expected a string")
        return cls(tokens, types, merges, regex, eos_token_id=eos, bos_token_id=tid("tokenizer.ggml.bos_token_id"),
                   pad_token_id=tid("tokenizer.ggml.padding_token_id"), eot_token_id=tid("tokenizer.ggml.eot_token_id"),
                   add_bos=bool(metadata.get("tokenizer.ggml.add_bos_token", False)),
                   chat_template=None if template is None else _str(template))

    def encode(self, text: str, parse_special: bool = True) -> list[int]:
        """Token ids for text; control tokens written in the text count as such if parse_special."""
        # Not thread-safe: the flag lives on the shared tokenizers object.
        self._tok.encode_special_tokens = not parse_special
        try:
            ids = self._tok.encode(text, add_special_tokens=False).ids if text else []
        finally:
            self._tok.encode_special_tokens = False
        if self.add_bos and self.bos_token_id is not None:
            ids = [self.bos_token_id, *ids]
        return ids

    def token_bytes(self, i: int, special: bool = True) -> bytes:
        """Raw bytes of one token, as llama.cpp's token_to_piece gives them."""
        text, ty = self.tokens[i], self.token_types[i]
        if ty in (CONTROL, UNKNOWN):
            return text.encode("utf-8") if special else b""
        if ty == USER_DEFINED:
            return text.encode("utf-8")
        if ty == UNUSED:
            return b""
        return b"".join(bytes([_CHAR_TO_BYTE[c]]) if c in _CHAR_TO_BYTE else c.encode("utf-8") for c in text)

    def token_to_piece(self, i: int) -> str:
        return self.token_bytes(i).decode("utf-8", errors="replace")

    def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
        # Join bytes first: one character may be split across several tokens.
        return b"".join(self.token_bytes(int(i), special=not skip_special) for i in ids).decode("utf-8", errors="replace")

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True,
                            enable_thinking: bool = False, **kwargs) -> str:
        """Render the file's chat template the way HF transformers does."""
        if self.chat_template is None:
            raise ValueError("this GGUF has no tokenizer.chat_template")
        if self._template is None:
            env = jinja2.sandbox.ImmutableSandboxedEnvironment(
                trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
            env.filters["tojson"] = _tojson
            env.globals["raise_exception"] = _raise_exception
            env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
            self._template = env.from_string(self.chat_template)
        special = {"bos_token": self.bos_token_id, "eos_token": self.eos_token_id}
        names = {k: self.tokens[v] if v is not None else "" for k, v in special.items()}
        return self._template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                     enable_thinking=enable_thinking, **names, **kwargs)
