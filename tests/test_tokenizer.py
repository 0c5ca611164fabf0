"""Tests for neagari.engine.tokenizer: BPE training, GGUF export, llama.cpp parity, chat templates."""
import json
import pathlib
import random
import subprocess
import sys

import gguf
import jinja2
import numpy as np
import pytest
from tokenizers import pre_tokenizers

from neagari.engine.tokenizer import (CHATML_TEMPLATE, QWEN2_PRE_REGEX, SPECIAL_TOKENS, GGUFTokenizer,
                               gguf_tokenizer_metadata, train_bpe, write_tokenizer_metadata)

TRAIN_TEXT = """\
The quick brown fox jumps over the lazy dog. I don't think it's there; we'll see, they'd said.
Numbers: 0 1 2 3 4 5 6 7 8 9, 12345678, 3.14159, 2024-06-01, $1,000.50 and 42%.
def main(argv):
    for i in range(10):
        if i % 2 == 0:
            print(f"even {i}")  # comment
    return {"key": [1, 2, 3]}
Grüße aus München! Ça va très bien, merci. Straße, naïve café, señor, smörgåsbord.
日本語の文章です。東京は大きな都市です。中文也可以。한국어 문장입니다.
Emoji: 🤖 🚀 😀 👍🏽 — dashes – and “quotes” ‘single’ … ellipsis.
Tabs\tand  double  spaces   and\r\nwindows lines
Once upon a time, in a small village by the sea, there lived an old fisherman and his wife.
Every morning he went out in his boat, and every evening he returned with whatever the waves gave him.
"What did you catch today?" she would ask. "Nothing but seaweed and stories," he would reply.
SELECT name, COUNT(*) FROM users WHERE age >= 18 GROUP BY name ORDER BY 2 DESC;
<html><body class="main"><p>Paragraph &amp; link</p></body></html>
"""

# Every case is compared with llama.cpp token for token.
CASES = [
    "Hello world", "The quick brown fox jumps over the lazy dog.", "",
    " leading space", "   three leading", "trailing space ", "trailing spaces   ",
    "12345678", "3.14159", "-42 +7 1e10 0x1F 1,000,000",
    "a  b   c    d", "\t\ttabs\tinside\t", "line\nbreak", "\n\n\n", "x\n\n\ny", " \n \n ", "\r\n\r\nwin",
    "don't", "I'LL", "we've they're she'd It'S 'm 're", "rock'n'roll",
    "café naïve Straße ß é", "日本語のテキスト", "emoji 🤖🚀 and 👍🏽",
    "e\u0301 combining a\u0308 and n\u0303", "\u00a0nbsp\u2003em\u3000ideographic",
    "def f(x):\n    return x ** 2  # square\n", "if (a && b) { c(); }\n\t}",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "<think>\nreasoning\n</think>\n\nanswer<|endoftext|>",
    "<|im_start|><|im_start|>", "<|im_end", "|>text<|",
    "!!! ??? ... ---", "@user #tag $5 %d ^_^ ~/path/to/file.txt",
]


def read_gguf_metadata(path) -> dict:
    """GGUF key/values as plain Python values (strings as str, arrays as lists)."""
    reader = gguf.GGUFReader(path)
    out = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        if hasattr(field, "contents"):
            out[name] = field.contents()
            continue
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.STRING:
            out[name] = bytes(field.parts[field.data[0]]).decode("utf-8")
        elif vtype == gguf.GGUFValueType.ARRAY:
            if field.types[-1] == gguf.GGUFValueType.STRING:
                out[name] = [bytes(field.parts[i]).decode("utf-8") for i in field.data]
            else:
                out[name] = [field.parts[i].tolist()[0] for i in field.data]
        else:
            out[name] = field.parts[field.data[0]].tolist()[0]
    return out


def write_vocab_gguf(path, meta: dict, with_tensors: bool = False) -> None:
    w = gguf.GGUFWriter(str(path), "qwen3")
    w.add_uint32("qwen3.block_count", 1)
    w.add_uint32("qwen3.context_length", 256)
    w.add_uint32("qwen3.embedding_length", 64)
    w.add_uint32("qwen3.feed_forward_length", 128)
    w.add_uint32("qwen3.attention.head_count", 2)
    w.add_uint32("qwen3.attention.head_count_kv", 1)
    w.add_uint32("qwen3.attention.key_length", 32)
    w.add_uint32("qwen3.attention.value_length", 32)
    w.add_float32("qwen3.rope.freq_base", 10000.0)
    w.add_float32("qwen3.attention.layer_norm_rms_epsilon", 1e-6)
    write_tokenizer_metadata(w, meta)
    if with_tensors:
        w.add_tensor("token_embd.weight", np.zeros((len(meta["tokenizer.ggml.tokens"]), 64), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module")
def trained():
    return train_bpe(TRAIN_TEXT.splitlines(keepends=True) * 4 + [TRAIN_TEXT] * 4, 600)


@pytest.fixture(scope="module")
def gguf_path(trained, tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "vocab.gguf"
    write_vocab_gguf(path, gguf_tokenizer_metadata(trained))
    return path


@pytest.fixture(scope="module")
def gtok(gguf_path):
    return GGUFTokenizer.from_metadata(read_gguf_metadata(gguf_path))


@pytest.fixture(scope="module")
def llama(gguf_path):
    llama_cpp = pytest.importorskip("llama_cpp")
    # Metadata and tokenizer keys only, no tensors: enough for llama.cpp's vocab_only load.
    llm = llama_cpp.Llama(model_path=str(gguf_path), vocab_only=True, verbose=False)
    yield llm
    llm.close()


def fuzz_strings(n=400, seed=0):
    rng = random.Random(seed)
    pool = (list("abcXYZ019 '\t\n\r.,!?-_()\"") + ["don't", "'LL", "  ", "\n\n", " \n", "é", "ß", "日本", "🤖",
            "\u0301", "\u00a0", "\u2003", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<|endoftext|>",
            "<|", "|>", "12345", "3.14", "the", " fox", "    ", "\x0b", "\x0c", "\x1c", "\x85", "\u2028",
            "\u00bd", "\u0663", "\u2167", "\ue000", "\u200b", "\ufeff", "\U0001d400", "\x00"])
    return ["".join(rng.choice(pool) for _ in range(rng.randint(1, 25))) for _ in range(n)]


def test_trained_layout(trained):
    meta = gguf_tokenizer_metadata(trained)
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    assert len(tokens) == 600 == len(types)
    assert tokens[-len(SPECIAL_TOKENS):] == SPECIAL_TOKENS
    assert types[-len(SPECIAL_TOKENS):] == [3] * len(SPECIAL_TOKENS) and set(types[:-len(SPECIAL_TOKENS)]) == {1}
    assert set(pre_tokenizers.ByteLevel.alphabet()) <= set(tokens)
    assert meta["tokenizer.ggml.eos_token_id"] == tokens.index("<|im_end|>")
    assert meta["tokenizer.ggml.bos_token_id"] == meta["tokenizer.ggml.padding_token_id"] == tokens.index("<|endoftext|>")
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "qwen2"
    assert meta["tokenizer.ggml.add_bos_token"] is False
    assert all(len(m.split(" ")) == 2 for m in meta["tokenizer.ggml.merges"])
    assert len(meta["tokenizer.ggml.merges"]) == 600 - 256 - len(SPECIAL_TOKENS)


def test_training_deterministic_across_processes(trained):
    code = ("import json, sys; from neagari.engine.tokenizer import train_bpe, gguf_tokenizer_metadata; "
            "from tests.test_tokenizer import TRAIN_TEXT; "
            "t = train_bpe(TRAIN_TEXT.splitlines(keepends=True) * 4 + [TRAIN_TEXT] * 4, 600); "
            "print(json.dumps(gguf_tokenizer_metadata(t)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(pathlib.Path(__file__).resolve().parents[1]))
    assert json.loads(out.stdout) == gguf_tokenizer_metadata(trained)


def test_metadata_roundtrip_types(gguf_path, trained):
    meta = read_gguf_metadata(gguf_path)
    assert {k: meta[k] for k in gguf_tokenizer_metadata(trained)} == gguf_tokenizer_metadata(trained)
    fields = gguf.GGUFReader(gguf_path).fields
    T = gguf.GGUFValueType
    assert fields["tokenizer.ggml.tokens"].types == [T.ARRAY, T.STRING]
    assert fields["tokenizer.ggml.token_type"].types == [T.ARRAY, T.INT32]
    assert fields["tokenizer.ggml.eos_token_id"].types == [T.UINT32]
    assert fields["tokenizer.ggml.add_bos_token"].types == [T.BOOL]
    assert fields["tokenizer.chat_template"].types == [T.STRING]


def test_matches_trained_tokenizer_and_roundtrips(gtok, trained):
    for text in CASES + fuzz_strings(200, seed=1):
        ids = gtok.encode(text)
        assert ids == trained.encode(text, add_special_tokens=False).ids, repr(text)
        assert gtok.decode(ids) == text, repr(text)


def test_special_tokens(gtok):
    start, end = gtok.encode("<|im_start|>"), gtok.encode("<|im_end|>")
    assert len(start) == 1 and len(end) == 1 and end[0] == gtok.eos_token_id
    assert len(gtok.encode("<|im_start|>", parse_special=False)) > 1
    assert gtok.end_of_turn_ids == {gtok.eos_token_id, gtok.encode("<|endoftext|>")[0]}
    ids = gtok.encode("<|im_start|>user\nhi<|im_end|>")
    assert gtok.decode(ids, skip_special=True) == "user\nhi"
    assert gtok.token_to_piece(end[0]) == "<|im_end|>"
    assert gtok.vocab_size == 600 and gtok.bos_token_id == gtok.pad_token_id == gtok.encode("<|endoftext|>")[0]
    assert "".join(gtok.token_to_piece(i) for i in gtok.encode("hello there")) == "hello there"


@pytest.mark.llama
def test_llama_cpp_vocab_only_loads(llama, gtok):
    assert llama.n_vocab() == gtok.vocab_size
    assert llama.token_eos() == gtok.eos_token_id


@pytest.mark.llama
@pytest.mark.parametrize("text", CASES)
def test_encode_matches_llama_cpp(llama, gtok, text):
    assert gtok.encode(text) == llama.tokenize(text.encode(), add_bos=False, special=True)
    assert gtok.encode(text, parse_special=False) == llama.tokenize(text.encode(), add_bos=False, special=False)


@pytest.mark.llama
def test_encode_matches_llama_cpp_fuzz(llama, gtok):
    for text in fuzz_strings():
        assert gtok.encode(text) == llama.tokenize(text.encode(), add_bos=False, special=True), repr(text)
        assert gtok.encode(text, parse_special=False) == \
            llama.tokenize(text.encode(), add_bos=False, special=False), repr(text)
        ids = gtok.encode(text)
        assert gtok.decode(ids).encode() == llama.detokenize(ids, special=True), repr(text)


def test_non_bpe_model_rejected():
    with pytest.raises(ValueError, match="tokenizer.ggml.model 'llama'"):
        GGUFTokenizer.from_metadata({"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ["a"]})


def test_unknown_pre_warns(trained):
    meta = dict(gguf_tokenizer_metadata(trained), **{"tokenizer.ggml.pre": "something-else"})
    with pytest.warns(UserWarning, match="Qwen2 split regex"):
        GGUFTokenizer.from_metadata(meta)
    assert "\\p{N}|" in QWEN2_PRE_REGEX  # single digits, unlike llama3's \p{N}{1,3}


def test_add_bos_from_metadata(trained):
    meta = dict(gguf_tokenizer_metadata(trained), **{"tokenizer.ggml.add_bos_token": True})
    tok = GGUFTokenizer.from_metadata(meta)
    assert tok.encode("hi")[0] == tok.bos_token_id


SYS_USER = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi there"}]


def test_chatml_template(gtok):
    base = "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n"
    assert gtok.apply_chat_template(SYS_USER, enable_thinking=False) == \
        base + "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    assert gtok.apply_chat_template(SYS_USER, enable_thinking=True) == base + "<|im_start|>assistant\n"
    assert gtok.apply_chat_template(SYS_USER, add_generation_prompt=False) == base
    history = [*SYS_USER, {"role": "assistant", "content": "<think>\nhmm\n</think>\n\nHello."},
               {"role": "user", "content": "Bye"}]
    assert gtok.apply_chat_template(history, enable_thinking=True) == (
        base + "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n")
    # Reasoning after the last user turn is kept (as Qwen3 does for tool-call loops).
    after = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "<think>\nr\n</think>\n\nA"}]
    assert gtok.apply_chat_template(after, add_generation_prompt=False) == (
        "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n<think>\nr\n</think>\n\nA<|im_end|>\n")


# Written for this test in the style of Qwen3's template: it uses the same Jinja features
# (namespace, loop.index0, messages[::-1], tojson, `is string`, str methods, raise_exception).
QWEN3_STYLE_TEMPLATE = r"""
{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\n\n' }}
    {%- endif %}
    {{- '# Tools\n<tools>' }}
    {%- for tool in tools %}
        {{- '\n' }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- '\n</tools><|im_end|>\n' }}
{%- elif messages[0].role == 'system' %}
    {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == 'user' and message.content is string
          and not (message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>\n' }}
    {%- elif message.role == 'assistant' %}
        {%- set reasoning_content = '' %}
        {%- if '</think>' in content %}
            {%- set reasoning_content = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
            {%- set content = content.split('</think>')[-1].lstrip('\n') %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index and reasoning_content %}
            {{- '<|im_start|>assistant\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content }}
        {%- else %}
            {{- '<|im_start|>assistant\n' + content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls or [] %}
            {{- '\n<tool_call>\n{"name": "' + tool_call.name + '", "arguments": ' + tool_call.arguments | tojson + '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == 'tool' %}
        {%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' + content + '\n</tool_response>' }}
        {%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- elif message.role != 'system' %}
        {{- raise_exception('Unknown role: ' + message.role) }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}
"""


def test_qwen3_style_template(trained):
    meta = dict(gguf_tokenizer_metadata(trained, chat_template=QWEN3_STYLE_TEMPLATE))
    tok = GGUFTokenizer.from_metadata(meta)
    tools = [{"name": "weather", "parameters": {"city": "string"}}]
    messages = [
        {"role": "system", "content": "Sys"},
        {"role": "user", "content": "Weather in Tokyo?"},
        {"role": "assistant", "content": "<think>\nneed tool\n</think>\n\n",
         "tool_calls": [{"name": "weather", "arguments": {"city": "東京"}}]},
        {"role": "tool", "content": "sunny"},
        {"role": "tool", "content": "25°C"},
    ]
    expected = (
        "<|im_start|>system\nSys\n\n# Tools\n<tools>\n"
        '{"name": "weather", "parameters": {"city": "string"}}\n</tools><|im_end|>\n'
        "<|im_start|>user\nWeather in Tokyo?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\nneed tool\n</think>\n\n"
        '\n<tool_call>\n{"name": "weather", "arguments": {"city": "東京"}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\nsunny\n</tool_response>\n<tool_response>\n25°C\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert tok.apply_chat_template(messages, enable_thinking=False, tools=tools) == expected
    assert tok.apply_chat_template(messages, enable_thinking=True, tools=tools) == \
        expected[:-len("<think>\n\n</think>\n\n")]
    with pytest.raises(jinja2.TemplateError, match="Unknown role: robot"):
        tok.apply_chat_template([{"role": "user", "content": "x"}, {"role": "robot", "content": "y"}])


def test_template_is_sandboxed(trained):
    tok = GGUFTokenizer.from_metadata(gguf_tokenizer_metadata(trained, chat_template="{{ ''.__class__.__mro__ }}"))
    with pytest.raises(jinja2.exceptions.SecurityError):
        tok.apply_chat_template([])
    assert "assistant" in CHATML_TEMPLATE
