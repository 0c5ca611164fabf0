"""Patches whose move list repeats a group or a scale bit: the recorded patched sha256 against a
brute-force reference (each move XOR-ed into a copy of the file's bytes, one byte at a time, in
plain Python), and ``neagari apply-patch`` (the command line's entry point, in process) accepting the patch.

A move applied twice cancels, three times is one move: the hash must reflect that exactly, or a
search that happens to accept the same move twice writes a patch its own apply-patch refuses.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import gguf
import numpy as np
import pytest

from neagari.cli import main
from neagari.search.patch import Move, Patch, read_patch, sha256_after_moves, write_patch
from neagari.engine.gguf_io import GGUFFile

REPO = Path(__file__).resolve().parents[1]
PROBES = REPO / "resources/probes/smoke.json"


def tensor_offsets(path: Path) -> dict[str, int]:
    """Absolute byte offset of every tensor, read with gguf-py directly."""
    return {t.name: int(t.data_offset) for t in gguf.GGUFReader(path).tensors}


def with_scales(path: Path, tensor: str, scales: np.ndarray, out: Path) -> Path:
    """A copy of ``path`` at ``out`` whose ``tensor`` has its group scales (fp16 bytes 0-1 of each
    18-byte block) replaced by ``scales``, one per group from the first."""
    data = bytearray(Path(path).read_bytes())
    start = tensor_offsets(path)[tensor]
    for g, raw in enumerate(np.asarray(scales, dtype=np.float16).view(np.uint8).reshape(-1, 2)):
        data[start + 18 * g : start + 18 * g + 2] = raw.tobytes()
    out.write_bytes(bytes(data))
    return out


def brute_force_bytes(path: Path, moves) -> bytes:
    """The file with ``moves`` applied one by one, from the block layout written out here:
    18-byte blocks, bytes 0-1 the little-endian fp16 scale, bytes 2-17 the 128 sign bits."""
    data = bytearray(Path(path).read_bytes())
    offsets = tensor_offsets(path)
    for m in moves:
        start = offsets[f"blk.{m.layer}.{m.proj}"] + 18 * m.group
        if m.type == "group":
            for i in range(start + 2, start + 18):
                data[i] ^= 0xFF
        else:
            data[start + m.bit // 8] ^= 1 << (m.bit % 8)
    return bytes(data)


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


G = Move(0, "ffn_up.weight", 3, "group")
G2 = Move(1, "ffn_down.weight", 0, "group")
S = Move(0, "ffn_gate.weight", 7, "scale", 5)
S_SAME_BYTE = Move(0, "ffn_gate.weight", 7, "scale", 6)  # another bit of the same scale byte
S_HIGH = Move(1, "ffn_up.weight", 2, "scale", 9)  # the scale's high byte

REPEATS = {
    "group twice": [G, G2, G],
    "group three times": [G, G, G2, G],
    "scale bit twice": [S, G, S],
    "scale bit three times": [S, S, S_HIGH, S],
    "two bits of one byte, one repeated": [S, S_SAME_BYTE, S, G, G],
    "everything repeated": [G, S, S_HIGH, G2, G, S, S_HIGH, G2, G, S_HIGH],
}


@pytest.mark.parametrize("moves", list(REPEATS.values()), ids=list(REPEATS))
def test_recorded_sha256_of_repeated_moves_matches_brute_force(fixture_models, tmp_path, moves):
    model = fixture_models["tied_gqa"]
    expected = brute_force_bytes(model, moves)
    assert _sha(expected) != _sha(model.read_bytes())  # every case leaves some move standing
    recorded = sha256_after_moves(model, GGUFFile(model), moves)
    assert recorded == _sha(expected)
    # small chunks: repeated positions that straddle, and fall within, chunk boundaries
    assert sha256_after_moves(model, GGUFFile(model), moves, chunk=7) == _sha(expected)

    patch = write_patch(tmp_path / "p.json", Patch(moves=moves, base_sha256=_sha(model.read_bytes()),
                                                   patched_sha256=recorded))
    out = tmp_path / "patched.gguf"
    assert main(["apply-patch", "--base", str(model), "--out", str(out), str(patch)]) == 0
    assert out.read_bytes() == expected


def test_move_repeated_an_even_number_of_times_cancels(fixture_models):
    model = fixture_models["tied_gqa"]
    assert sha256_after_moves(model, GGUFFile(model), [G, S, G, S]) == _sha(model.read_bytes())


def test_search_accepting_a_move_twice_records_its_patched_file(fixture_models, tmp_path):
    """The search's own patch (accept_all, a proposer forced to repeat moves) applies with
    ``neagari apply-patch`` and gives the brute-force bytes."""
    from neagari.engine.engine import Engine
    from neagari.search import split_probes
    from neagari.search.proposal import ProposalConfig
    from neagari.search.runner import Search, SearchConfig

    model = fixture_models["tied_gqa"]
    script = [G, S, G2, G, S, G, S_HIGH, S]  # G three times, S three times
    targets, controls = split_probes(PROBES)
    cfg = SearchConfig(iterations=len(script), accept_all=True, min_rate=0.0,
                       proposal=ProposalConfig(layers=(0, 1), scale_prob=0.5))
    s = Search(Engine.load(model), model, targets, controls, cfg, tmp_path / "run")
    s.proposer.propose = lambda t: script[t]
    r = s.run(progress=False)
    s.finish(r, tmp_path / "patch.json", tmp_path / "it.parquet", tmp_path / "summary.json")
    patch = read_patch(tmp_path / "patch.json")
    assert patch.moves == script
    expected = brute_force_bytes(model, script)
    assert patch.patched_sha256 == _sha(expected)
    assert json.loads((tmp_path / "summary.json").read_text())["patched_sha256"] == _sha(expected)
    out = tmp_path / "patched.gguf"
    assert main(["apply-patch", "--base", str(model), "--out", str(out), str(tmp_path / "patch.json")]) == 0
    assert out.read_bytes() == expected
