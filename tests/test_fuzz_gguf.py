"""Fuzzing the GGUF boundary: mutated headers, metadata, tensor infos and data of a small fixture
model, each run through the command line (``inspect`` and ``score``).

Every case must end in exit 0 with a sound result, or exit 2 with exactly one line on stderr that
names the file; never a traceback (an exception escaping ``main``), never a hang (a per-case
alarm), never a large allocation (peak RSS checked after each case; the nested-array case runs in
a subprocess under RLIMIT_AS), and the input file is never changed.

Profiles: the default keeps this module to about half a minute. ``NEAGARI_FUZZ_EXAMPLES=5000``
runs that many Hypothesis examples per property (by hand: minutes to hours).
"""

from __future__ import annotations

import hashlib
import math
import os
import resource
import struct
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import polars as pl
import polars.testing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fuzzing
from neagari.engine import q1
from neagari.engine.fixtures import FixtureSpec, write_fixture_model
from neagari.engine.gguf_io import (ARRAY, BOOL, FLOAT32, FLOAT64, INT8, INT16, INT32, INT64, STRING, UINT8, UINT16,
                                    UINT32, UINT64, parse_header)

REPO = Path(__file__).resolve().parents[1]
PROBES = REPO / "resources" / "probes" / "smoke.json"
LONG = int(os.environ.get("NEAGARI_FUZZ_EXAMPLES", "0"))
CASE_TIMEOUT_S = 20
RSS_GROWTH_LIMIT_KB = 1_500_000  # peak RSS may not grow by more than ~1.5 GB over the whole run
_found: dict[str, int] = {}  # case kind and exit statuses → count
_errors: dict[str, int] = {}  # the first words of each error message → count
SPEC = FixtureSpec(n_layer=2, hidden=128, ffn=128, n_head=2, n_kv_head=1, head_dim=64, vocab_size=320,
                   context_length=64, seed=11)


def examples(default: int) -> settings:
    return settings(max_examples=LONG or default, deadline=None, derandomize=not LONG, database=None,
                    suppress_health_check=list(HealthCheck))


# ---------------------------------------------------------------------------- a GGUF writer we control

_INT_FMT = {UINT8: "B", INT8: "B", UINT16: "H", INT16: "H", UINT32: "I", INT32: "I", UINT64: "Q", INT64: "Q"}


def enc_str(s: str | bytes) -> bytes:
    b = s.encode("utf-8") if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def enc_value(vtype: int, etype: int | None, value) -> bytes:
    if vtype == STRING:
        return enc_str(value)
    if vtype == ARRAY:
        if isinstance(value, bytes):  # raw payload after the element type (nested arrays, garbage)
            return struct.pack("<I", etype) + value
        return struct.pack("<IQ", etype, len(value)) + b"".join(enc_value(etype, None, v) for v in value)
    if vtype in _INT_FMT:
        fmt = _INT_FMT[vtype]
        return struct.pack("<" + fmt, int(value) % (1 << (8 * struct.calcsize(fmt))))
    if vtype == FLOAT32:
        return np.array([value], dtype="<f8").astype("<f4").tobytes()
    if vtype == FLOAT64:
        return struct.pack("<d", float(value))
    if vtype == BOOL:
        return struct.pack("<B", int(value) & 0xFF)
    return b""  # an unknown type: no payload


@dataclass
class Layout:
    """A GGUF file as fields: what the mutations act on; ``bytes()`` writes it as gguf-py would."""

    version: int
    kvs: list[list]  # [key, value type, element type or None, value]
    tensors: list[list]  # [name, dims (GGUF order), ggml type, offset within the data section]
    data: bytes
    n_kv: int | None = None  # None: the true count
    n_tensors: int | None = None
    header_tail: bytes = field(default=b"")  # bytes spliced in after the tensor infos
    note: str = ""  # what a mutation did, for the report of a failing case

    def __repr__(self) -> str:  # Hypothesis prints failing examples: keep it short
        return f"Layout(version={self.version}, {len(self.kvs)} kvs, {len(self.tensors)} tensors, n_kv={self.n_kv}, " \
               f"n_tensors={self.n_tensors}, note={self.note!r})"

    def alignment(self) -> int:
        for k, vt, _, v in self.kvs:
            if k == "general.alignment" and vt == UINT32 and isinstance(v, int) and v > 0 and not v & (v - 1):
                return v
        return 32

    def __bytes__(self) -> bytes:
        out = [b"GGUF", struct.pack("<I", self.version),
               struct.pack("<QQ", (len(self.tensors) if self.n_tensors is None else self.n_tensors) % (1 << 64),
                           (len(self.kvs) if self.n_kv is None else self.n_kv) % (1 << 64))]
        out += [enc_str(k) + struct.pack("<I", vt) + enc_value(vt, et, v) for k, vt, et, v in self.kvs]
        for name, dims, ty, off in self.tensors:
            out.append(enc_str(name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, ty, off % (1 << 64)))
        out.append(self.header_tail)
        head = b"".join(out)
        pad = -len(head) % self.alignment()
        return head + b"\0" * pad + self.data

    def kv(self, key: str) -> list:
        return next(e for e in self.kvs if e[0] == key)

    def tensor(self, name: str) -> list:
        return next(t for t in self.tensors if t[0] == name)

    def copy(self) -> "Layout":
        return replace(self, kvs=[[k, vt, et, list(v) if isinstance(v, list) else v] for k, vt, et, v in self.kvs],
                       tensors=[[n, list(d), t, o] for n, d, t, o in self.tensors])


def layout_of(path: Path) -> Layout:
    data = path.read_bytes()
    h = parse_header(memoryview(data), len(data), path)
    kvs = [[k, *h.types[k], v] for k, v in h.metadata.items()]
    tensors = [[t.name, list(t.dims), t.ggml_type, t.offset - h.data_offset] for t in h.tensors]
    return Layout(h.version, kvs, tensors, data[h.data_offset:])


# ---------------------------------------------------------------------------- running the CLI


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """main(argv) in-process: (exit status, stdout, stderr) (tests/fuzzing.py)."""
    return fuzzing.run_cli(argv, CASE_TIMEOUT_S)


@dataclass
class Base:
    path: Path
    layout: Layout
    scores: pl.DataFrame
    work: Path
    rss0: int


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Base:
    work = tmp_path_factory.mktemp("fuzz")
    path = write_fixture_model(work / "base.gguf", SPEC)
    rc, _, err = run_cli(["score", str(path), "--probes", str(PROBES), "--out", str(work / "base.parquet")])
    assert rc == 0, err
    return Base(path, layout_of(path), pl.read_parquet(work / "base.parquet"), work,
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def check_case(base: Base, data: bytes, name: str = "case.gguf", neutral: bool = False,
               commands=("inspect", "score")) -> dict[str, int]:
    """Run the commands on ``data``; assert the contract. Returns command → exit status.

    neutral: the mutation touches nothing the engine reads, so scores must equal the base's."""
    path = base.work / name
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    out_table = base.work / "case.parquet"
    status = {}
    for cmd in commands:
        out_table.unlink(missing_ok=True)
        argv = ["inspect", str(path)] if cmd == "inspect" else \
            ["score", str(path), "--probes", str(PROBES), "--out", str(out_table)]
        rc, out, err = run_cli(argv)
        status[cmd] = rc
        if rc == 0:
            if cmd == "inspect":
                assert "sha256" in out and digest in out, out
            else:
                df = pl.read_parquet(out_table)
                assert len(df) == len(base.scores) and list(df["name"]) == list(base.scores["name"])
                if neutral:
                    polars.testing.assert_frame_equal(df, base.scores)
        else:
            lines = err.strip().splitlines()
            assert rc == 2 and len(lines) == 1, (cmd, rc, err)
            # the file at fault is named: the model, or the probe file a prompt no longer fits
            assert lines[0].startswith("neagari: error: "), (cmd, err)
            assert str(path) in lines[0] or lines[0].startswith(f"neagari: error: {PROBES.name}:"), (cmd, err)
            kind = lines[0].split(f"{path}: ", 1)[-1]
            kind = " ".join(w for w in kind.split()[:4] if not any(c.isdigit() or c in "'\"" for c in w))
            _errors[kind] = _errors.get(kind, 0) + 1
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, "the input file was changed"
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base.rss0
    assert grown < RSS_GROWTH_LIMIT_KB, f"peak RSS grew by {grown} kB"
    return status


def error_of(base: Base, layout_or_bytes, cmd: str = "score") -> str:
    """The one-line error of a case that must fail (exit 2)."""
    data = layout_or_bytes if isinstance(layout_or_bytes, bytes) else bytes(layout_or_bytes)
    status = check_case(base, data, commands=(cmd,))
    assert status[cmd] == 2, f"{cmd} accepted the file"
    return run_cli(_argv(base, cmd))[2].strip()


def _argv(base: Base, cmd: str) -> list[str]:
    path = str(base.work / "case.gguf")
    return ["inspect", path] if cmd == "inspect" else \
        ["score", path, "--probes", str(PROBES), "--out", str(base.work / "case.parquet")]


# ---------------------------------------------------------------------------- the writer itself


def test_layout_round_trips_the_fixture(base):
    assert bytes(base.layout) == base.path.read_bytes()
    assert check_case(base, bytes(base.layout), neutral=True) == {"inspect": 0, "score": 0}


# ---------------------------------------------------------------------------- reproducers

def nested_array_layout(base: Base, length: int = 2) -> Layout:
    """An array of ``length`` arrays, the first of which claims 2^62 uint8 elements it does not hold:
    gguf-py's reader walked such arrays element by element past the end of the file (reading
    nothing, never failing), growing memory without bound."""
    lay = base.layout.copy()
    payload = struct.pack("<Q", length) + (struct.pack("<IQ", UINT8, 1 << 62) if length else b"")
    lay.kvs.insert(3, ["evil.nested", ARRAY, ARRAY, payload])
    return lay


def test_nested_array_refused(base):
    err = error_of(base, nested_array_layout(base), "inspect")
    assert "'evil.nested' is an array of arrays" in err
    lay = nested_array_layout(base, length=0)  # even an empty one, as llama.cpp does
    assert "array of arrays" in error_of(base, lay, "inspect")


@pytest.mark.parametrize("what", ["n_kv", "n_tensors", "string", "array", "u8_array"])
def test_absurd_counts_refused_before_reading(base, what):
    lay = base.layout.copy()
    huge = (1 << 64) - 1
    if what == "n_kv":
        lay.n_kv = huge
    elif what == "n_tensors":
        lay.n_tensors = huge
    elif what == "string":
        lay.kv("general.name")[3] = b""  # replaced below by a raw length
        data = bytes(lay)
        i = data.index(enc_str("general.name")) + len(enc_str("general.name")) + 4
        data = data[:i] + struct.pack("<Q", huge) + data[i + 8:]
        assert "general.name" in error_of(base, data, "inspect")
        return
    elif what == "array":
        tokens = lay.kv("tokenizer.ggml.tokens")
        tokens[3] = struct.pack("<Q", huge)  # element count only, no elements
    else:  # gguf-py walked this one past the end of the file, element by element
        lay.kvs.insert(2, ["evil.bytes", ARRAY, UINT8, struct.pack("<Q", 1 << 62)])
    err = error_of(base, lay, "inspect")
    assert "impossible" in err or "claims" in err, err


@pytest.mark.parametrize("key", ["attention.head_count", "attention.head_count_kv"])
def test_zero_head_count(base, key):
    lay = base.layout.copy()
    lay.kv(f"qwen3.{key}")[3] = 0
    assert f"'qwen3.{key}' is 0" in error_of(base, lay)


@pytest.mark.parametrize("value,message", [(0, "is 0, must be in 1..262144"),
                                           ((1 << 32) - 1, "is 4294967295, must be in 1..262144")])
def test_context_length_out_of_range(base, value, message):
    lay = base.layout.copy()
    lay.kv("qwen3.context_length")[3] = value
    assert message in error_of(base, lay)


def test_context_length_shorter_than_a_prompt(base):
    lay = base.layout.copy()
    lay.kv("qwen3.context_length")[3] = 2
    # the probe check runs before any forward pass and names the probe that does not fit
    assert "with the scored next token it needs 9 positions, the model's context length is 2" in error_of(base, lay)


def _q1_scale_offset(base: Base, name: str, block: int = 3) -> int:
    return base.layout.tensor(name)[3] + block * q1.BLOCK_BYTES


@pytest.mark.parametrize("bits", [0x7C00, 0xFC00, 0x7E00, 0x7C01])  # +inf, -inf, NaN, NaN
def test_nonfinite_q1_scale(base, bits):
    lay = base.layout.copy()
    i = _q1_scale_offset(base, "blk.1.ffn_up.weight")
    lay.data = lay.data[:i] + struct.pack("<H", bits) + lay.data[i + 2:]
    assert "tensor 'blk.1.ffn_up.weight' has 1 non-finite (inf/NaN) block scale" in error_of(base, lay)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nonfinite_norm_weight(base, value):
    lay = base.layout.copy()
    i = base.layout.tensor("blk.0.attn_k_norm.weight")[3] + 4 * 5
    lay.data = lay.data[:i] + np.float32(value).tobytes() + lay.data[i + 4:]
    assert "tensor 'blk.0.attn_k_norm.weight' has 1 non-finite (inf/NaN) value" in error_of(base, lay)


@pytest.mark.parametrize("key", ["rope.freq_base", "attention.layer_norm_rms_epsilon"])
@pytest.mark.parametrize("value", [math.nan, 0.0, -1.0, math.inf])
def test_bad_rope_base_and_rms_eps(base, key, value):
    lay = base.layout.copy()
    lay.kv(f"qwen3.{key}")[3] = value
    assert f"'qwen3.{key}' is {float(np.float32(value))}, must be finite" in error_of(base, lay)


@pytest.mark.parametrize("value", [math.inf, 3e38])
def test_weights_that_overflow_float32(base, value):
    """Finite weights whose products overflow: inf/NaN logits are one line, not a table error."""
    lay = base.layout.copy()
    for name in ("output_norm.weight", "blk.1.ffn_norm.weight"):
        i = base.layout.tensor(name)[3]
        n = base.layout.tensor(name)[1][0]
        lay.data = lay.data[:i] + np.full(n, 3e38 if value == 3e38 else 1e30, np.float32).tobytes() + lay.data[i + 4 * n:]
    err = error_of(base, lay)
    assert "logits overflow to inf/NaN" in err or "non-finite" in err, err


@pytest.mark.parametrize("what", ["norm", "scale"])
def test_huge_finite_weights(base, what):
    """Logits far beyond float32's exact range still give a valid score table (its gap check is
    relative to the logits' magnitude)."""
    lay = base.layout.copy()
    if what == "norm":
        i = base.layout.tensor("output_norm.weight")[3]
        lay.data = lay.data[:i] + np.float32(1e30).tobytes() + lay.data[i + 4:]
    else:  # the largest finite fp16 scale on every block of the (tied) LM head
        data = bytearray(lay.data)
        t = base.layout.tensor("token_embd.weight")
        start, nbytes = t[3], t[1][0] * t[1][1] // q1.QK * q1.BLOCK_BYTES
        for b in range(start, start + nbytes, q1.BLOCK_BYTES):
            data[b:b + 2] = struct.pack("<H", 0x7BFF)
        lay.data = bytes(data)
    check_case(base, bytes(lay), commands=("score",))


def test_missing_tokens(base):
    lay = base.layout.copy()
    lay.kvs = [e for e in lay.kvs if e[0] != "tokenizer.ggml.tokens"]
    assert "missing required metadata key 'tokenizer.ggml.tokens'" in error_of(base, lay)


def test_merges_naming_unknown_tokens(base):
    lay = base.layout.copy()
    merges = lay.kv("tokenizer.ggml.merges")[3]
    merges[10] = "nosuchtoken Ġt"
    assert "tokenizer.ggml.merges[10] 'nosuchtoken Ġt' names 'nosuchtoken'" in error_of(base, lay)


@pytest.mark.parametrize("value", [0, 1, 3])
def test_block_count_must_match_the_layers(base, value):
    lay = base.layout.copy()
    lay.kv("qwen3.block_count")[3] = value
    err = error_of(base, lay)
    assert "qwen3.block_count" in err and (f"is {value} but the file holds blocks 0..1" in err or "is 0," in err)


def test_offset_onto_another_tensor(base):
    lay = base.layout.copy()
    lay.tensor("blk.1.ffn_down.weight")[3] = lay.tensor("blk.1.ffn_up.weight")[3]
    assert "overlaps tensor" in error_of(base, lay, "inspect")


@pytest.mark.parametrize("delta", [-32, -(1 << 40)])
def test_offset_wrapped(base, delta):
    lay = base.layout.copy()
    t = lay.tensor("token_embd.weight")
    t[3] = (t[3] + delta) % (1 << 64)  # before the data section: wraps around 2^64
    err = error_of(base, lay, "inspect")
    assert "'token_embd.weight' data offset" in err and "outside the file" in err


def test_offset_unaligned(base):
    lay = base.layout.copy()
    lay.tensor("output_norm.weight")[3] += 4
    assert "is not a multiple of general.alignment 32" in error_of(base, lay, "inspect")


def test_tensor_count_one_too_high(base):
    lay = base.layout.copy()
    lay.n_tensors = len(lay.tensors) + 1
    err = error_of(base, lay, "inspect")
    assert "tensor" in err, err


@pytest.mark.parametrize("key", ["tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"])
def test_special_token_outside_the_vocabulary(base, key):
    lay = base.layout.copy()
    n = len(lay.kv("tokenizer.ggml.tokens")[3])
    lay.kv(key)[3] = n
    assert f"metadata key {key!r} is {n}, not a token id of the vocabulary (0..{n - 1})" in error_of(base, lay)


def test_vocabulary_must_match_the_embedding(base):
    lay = base.layout.copy()
    lay.kv("tokenizer.ggml.tokens")[3].append("extra")
    lay.kv("tokenizer.ggml.token_type")[3].append(1)
    assert "tokens, token_embd.weight" in error_of(base, lay)


def test_wrong_value_type(base):
    lay = base.layout.copy()
    e = lay.kv("qwen3.embedding_length")
    e[1], e[3] = STRING, "128"
    assert "'qwen3.embedding_length' is a string, expected an integer" in error_of(base, lay)


AS_LIMIT = 4 << 30  # the CLI imports torch: about 2 GiB of address space for score, 1.3 GiB for inspect


def _cap_memory():
    resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))


def test_a_handful_through_real_subprocesses(base, tmp_path):
    """The real command line (exit status, stderr), each process under RLIMIT_AS and a timeout, run
    side by side: a valid file, the nested-array reproducer and zero heads."""
    lay = base.layout.copy()
    lay.kv("qwen3.attention.head_count")[3] = 0
    cases = {"valid": ("score", bytes(base.layout)), "nested": ("score", bytes(nested_array_layout(base))),
             "heads0": ("score", bytes(lay))}
    procs = {}
    for name, (cmd, data) in cases.items():
        path = tmp_path / f"{name}.gguf"
        path.write_bytes(data)
        argv = [str(path)] + (["--probes", str(PROBES), "--out", str(tmp_path / f"{name}.parquet")]
                              if cmd == "score" else [])
        procs[name] = subprocess.Popen([sys.executable, "-m", "neagari.cli", cmd, *argv], stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True, preexec_fn=_cap_memory, cwd=REPO,
                                       env={**os.environ, "PYTHONPATH": str(REPO)})
    for name, p in procs.items():
        try:
            _, err = p.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            p.kill()
            pytest.fail(f"{name}: hang")
        path = tmp_path / f"{name}.gguf"
        if name == "valid":
            assert p.returncode == 0, err
            polars.testing.assert_frame_equal(pl.read_parquet(tmp_path / f"{name}.parquet"), base.scores)
        else:
            assert p.returncode == 2 and err.count("\n") == 1 and str(path) in err, (name, p.returncode, err)
            assert "Traceback" not in err
            if name.startswith("nested"):
                assert "array of arrays" in err
        assert path.read_bytes() == cases[name][1]


# ---------------------------------------------------------------------------- properties

SPECIAL_INTS = [0, 1, 2, 3, 7, 31, 32, 33, 63, 64, 127, 128, 255, 256, 511, 512, 4096, (1 << 31) - 1, 1 << 31,
                (1 << 32) - 1, 1 << 32, (1 << 63) - 1, 1 << 63, (1 << 64) - 1]
SPECIAL_FLOATS = [0.0, -0.0, 1.0, -1.0, 1e-45, 1e-38, 1e-6, 0.5, 1.0 - 1e-7, 2.0, 1e38, 3.4e38, 1e300,
                  math.inf, -math.inf, math.nan]
VALUE_TYPES = [UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64]

ints = st.one_of(st.sampled_from(SPECIAL_INTS), st.integers(0, (1 << 64) - 1), st.integers(0, 600))
floats = st.one_of(st.sampled_from(SPECIAL_FLOATS), st.floats(allow_nan=True, allow_infinity=True))


@st.composite
def kv_mutation(draw, lay: Layout) -> Layout:
    lay = lay.copy()
    i = draw(st.integers(0, len(lay.kvs) - 1))
    e = lay.kvs[i]
    how = draw(st.sampled_from(["value", "value", "value", "type", "delete", "duplicate", "insert",
                                "element", "resize", "key"]))
    if how == "value":
        if e[1] == STRING:
            e[3] = draw(st.one_of(st.text(max_size=40), st.sampled_from(["", "qwen3", "llama", "gpt2"])))
        elif e[1] in (FLOAT32, FLOAT64):
            e[3] = draw(floats)
        elif e[1] == ARRAY:
            e[3] = []
        else:
            e[3] = draw(ints)
    elif how == "type":
        vt = draw(st.sampled_from(VALUE_TYPES + [13, 255, (1 << 32) - 1]))
        e[1] = vt
        if vt == ARRAY:
            e[2], e[3] = draw(st.sampled_from(VALUE_TYPES)), []
        elif vt == STRING:
            e[3] = str(e[3])[:50]
        elif vt in (FLOAT32, FLOAT64):
            e[3] = draw(floats)
        else:
            e[3] = draw(ints)
    elif how == "delete":
        del lay.kvs[i]
    elif how == "duplicate":
        lay.kvs.insert(draw(st.integers(0, len(lay.kvs))), list(e))
    elif how == "insert":
        vt = draw(st.sampled_from(VALUE_TYPES))
        et = draw(st.sampled_from(VALUE_TYPES)) if vt == ARRAY else None
        value = (draw(st.binary(max_size=64)) if et == ARRAY else []) if vt == ARRAY else \
            draw(st.text(max_size=20)) if vt == STRING else draw(floats) if vt in (FLOAT32, FLOAT64) else draw(ints)
        lay.kvs.insert(draw(st.integers(0, len(lay.kvs))), [draw(st.text(max_size=30)), vt, et, value])
    elif how in ("element", "resize") and e[1] == ARRAY and isinstance(e[3], list) and e[3]:
        j = draw(st.integers(0, len(e[3]) - 1))
        if how == "resize":
            e[3] = e[3][:j] if draw(st.booleans()) else e[3] + e[3][:j + 1]
        elif e[2] == STRING:
            e[3][j] = draw(st.one_of(st.text(max_size=12), st.sampled_from(["", " ", "a b", "Ġ Ġ", e[3][0]])))
        else:
            e[3][j] = draw(ints)
    elif how == "key":
        e[0] = draw(st.one_of(st.text(max_size=30), st.sampled_from([lay.kvs[0][0], "general.alignment", ""])))
    if draw(st.integers(0, 9)) == 0:
        lay.n_kv = len(lay.kvs) + draw(st.sampled_from([-2, -1, 1, 2, 1 << 20, (1 << 64) - 1]))
    lay.note = f"{how} of {e[0]!r}: {e[1:3]} {str(e[3])[:60]}"
    return lay


@st.composite
def tensor_mutation(draw, lay: Layout) -> Layout:
    lay = lay.copy()
    i = draw(st.integers(0, len(lay.tensors) - 1))
    t = lay.tensors[i]
    how = draw(st.sampled_from(["name", "dims", "ndims", "type", "offset", "offset", "count", "swap"]))
    if how == "name":
        t[0] = draw(st.one_of(st.text(max_size=70), st.sampled_from(["", lay.tensors[0][0], "x" * 64,
                                                                      "blk.2.attn_q.weight", "blk.9.ffn_up.weight"])))
    elif how == "dims":
        j = draw(st.integers(0, len(t[1]) - 1))
        t[1][j] = draw(st.one_of(st.sampled_from([0, 1, t[1][j] - 1, t[1][j] + 1, 2 * t[1][j], t[1][j] // 2]),
                                 st.sampled_from(SPECIAL_INTS)))
    elif how == "ndims":
        t[1] = t[1] + [1] * draw(st.integers(1, 4)) if draw(st.booleans()) else t[1][:-1]
    elif how == "type":
        t[2] = draw(st.one_of(st.sampled_from([0, 1, 2, 8, 30, 41, 4, 5, 40, 42, 255, (1 << 32) - 1]),
                              st.integers(0, 60)))
    elif how == "offset":
        other = draw(st.sampled_from(lay.tensors))[3]
        t[3] = draw(st.sampled_from([t[3] + 32, t[3] - 32, t[3] + 1, other, other + 32, 0, len(lay.data),
                                     (1 << 64) - 32, (1 << 63), t[3] + (1 << 40)]))
    elif how == "count":
        lay.n_tensors = len(lay.tensors) + draw(st.sampled_from([-1, 1, 2, 1000, (1 << 64) - 1]))
    else:
        j = draw(st.integers(0, len(lay.tensors) - 1))
        lay.tensors[i][0], lay.tensors[j][0] = lay.tensors[j][0], lay.tensors[i][0]
    lay.note = f"{how} of tensor {i}: {t}"
    return lay


@st.composite
def data_mutation(draw, lay: Layout) -> tuple[Layout, bool]:
    lay = lay.copy()
    data = bytearray(lay.data)
    t = draw(st.sampled_from(lay.tensors))
    start = t[3]
    end = min([o for _, _, _, o in lay.tensors if o > start] or [len(data)])
    how = draw(st.sampled_from(["scale", "float", "bytes"]))
    if how == "scale" and t[2] == q1.GGML_TYPE_Q1_0:
        block = draw(st.integers(0, (end - start) // q1.BLOCK_BYTES - 1))
        # |d| < 16 or inf/NaN: larger finite scales score with a traceback (test_huge_finite_weights)
        bits = draw(st.one_of(st.integers(0, 0x4BFF), st.integers(0x8000, 0xCBFF),
                              st.integers(0x7C00, 0x7FFF), st.sampled_from([0xFC00, 0xFE00, 0xFFFF, 0, 0x8000])))
        data[start + block * q1.BLOCK_BYTES: start + block * q1.BLOCK_BYTES + 2] = struct.pack("<H", bits)
    elif how == "float" and t[2] == 0:
        j = draw(st.integers(0, (end - start) // 4 - 1))
        value = draw(st.one_of(st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, 1e-45]),
                               st.floats(-100, 100)))  # see test_huge_finite_weights
        data[start + 4 * j: start + 4 * j + 4] = np.float32(value).tobytes()
    else:  # sign bits of a Q1_0 block, or the low mantissa bytes of an F32 (large values: test_huge_finite_weights)
        j = draw(st.integers(start, end - 1))
        if t[2] == q1.GGML_TYPE_Q1_0 and (j - start) % q1.BLOCK_BYTES < 2:
            j += 2
        elif t[2] == 0:
            j -= (j - start) % 4 - draw(st.integers(0, 1))
        data[j] ^= draw(st.integers(1, 255))
    lay.data = bytes(data)
    lay.note = f"{how} in {t[0]}"
    return lay


@st.composite
def byte_mutation(draw, raw: bytes, header_end: int) -> bytes:
    """Raw edits mostly inside the header: truncate, flip, splice, insert, delete."""
    how = draw(st.sampled_from(["truncate", "flip", "flip", "splice", "insert", "delete", "u64"]))
    at = draw(st.one_of(st.integers(0, header_end), st.integers(0, len(raw) - 1)))
    if how == "truncate":
        return raw[:at]
    if how == "flip":
        b = bytearray(raw)
        for _ in range(draw(st.integers(1, 4))):
            k = draw(st.integers(0, header_end))
            b[k] ^= 1 << draw(st.integers(0, 7))
        return bytes(b)
    if how == "splice":
        src = draw(st.integers(0, len(raw) - 1))
        n = draw(st.integers(1, 64))
        return raw[:at] + raw[src:src + n] + raw[at + n:]
    if how == "insert":
        return raw[:at] + draw(st.binary(min_size=1, max_size=16)) + raw[at:]
    if how == "delete":
        return raw[:at] + raw[at + draw(st.integers(1, 16)):]
    value = draw(st.sampled_from(SPECIAL_INTS))
    return raw[:at] + struct.pack("<Q", value) + raw[at + 8:]




def _tally(kind: str, status: dict[str, int]) -> None:
    key = f"{kind} " + " ".join(f"{c}={s}" for c, s in status.items())
    _found[key] = _found.get(key, 0) + 1


@given(data=st.data())
@examples(50)
def test_fuzz_metadata(base, data):
    lay = data.draw(kv_mutation(base.layout))
    _tally("metadata", check_case(base, bytes(lay)))


@given(data=st.data())
@examples(40)
def test_fuzz_tensor_infos(base, data):
    lay = data.draw(tensor_mutation(base.layout))
    _tally("tensor-info", check_case(base, bytes(lay)))


@given(data=st.data())
@examples(25)
def test_fuzz_tensor_data(base, data):
    lay = data.draw(data_mutation(base.layout))
    _tally("tensor-data", check_case(base, bytes(lay)))


@given(data=st.data())
@examples(60)
def test_fuzz_bytes(base, data):
    raw = base.path.read_bytes()
    header_end = len(raw) - len(base.layout.data)
    _tally("bytes", check_case(base, data.draw(byte_mutation(raw, header_end))))


@given(name=st.text(max_size=60), extra=st.text(max_size=30))
@examples(10)
def test_fuzz_neutral_edits_score_as_before(base, name, extra):
    """Edits that touch nothing the engine reads: the same scores, bit for bit."""
    lay = base.layout.copy()
    lay.kv("general.name")[3] = name
    if extra and not extra.startswith(("qwen3.", "tokenizer.", "general.")):
        lay.kvs.append([extra, STRING, None, "x"])
    assert check_case(base, bytes(lay), neutral=True) == {"inspect": 0, "score": 0}


def test_fuzz_report():
    """Prints what the properties saw (run with -s): case kind and exit statuses → count."""
    for k, v in sorted(_found.items()):
        print(f"{v:6d}  {k}")
    for k, v in sorted(_errors.items(), key=lambda kv: -kv[1]):
        print(f"{v:6d}  error: {k}")
