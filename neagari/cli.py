"""The ``neagari`` command line: the engine outside Snakemake.

Every expected failure (bad file, bad patch, bad probe set) ends with one line on stderr and
exit status 2; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _cmd_inspect(a) -> int:
    from neagari.engine.config import ModelConfig
    from neagari.engine.gguf_io import GGUFFile

    f = GGUFFile(a.model)
    info = f.summary()
    try:
        info["config"] = ModelConfig.from_gguf(f).as_dict()
    except ValueError as e:  # still show what the file holds
        info["config_error"] = str(e)
    if a.json:
        info["tensors"] = [{"name": r.name, "type": r.type_name, "shape": list(r.shape), "bytes": r.nbytes}
                           for r in f.tensors.values()]
        print(json.dumps(info, indent=2))
        return 0
    for k in ("path", "architecture", "bytes", "sha256", "n_tensors", "types"):
        print(f"{k:>13}: {info[k]}")
    for k, v in info.get("config", {}).items():
        print(f"{k:>13}: {v}")
    if "config_error" in info:
        print(f"{'config':>13}: {info['config_error']}")
    if a.tensors:
        for r in f.tensors.values():
            print(f"  {r.name:<32} {r.type_name:<5} {str(list(r.shape)):<16} {r.nbytes:>12,} B")
    return 0


def _engine(a):
    from neagari.engine.engine import Engine

    return Engine.load(a.model, device=a.device, dtype=a.dtype, cache_weights=not a.no_cache)


def _cmd_score(a) -> int:
    from neagari.search.probes import load_probes, score_probes
    from neagari.search.schemas import ProbeScores
    from neagari.tables import write_table

    probes = load_probes(a.probes)
    df = score_probes(_engine(a), probes, batch_size=a.batch_size)
    write_table(df, a.out, ProbeScores)
    wrong = int((df["gap"] <= 0).sum())
    print(f"scored {len(df)} probes ({wrong} with gap <= 0) -> {a.out}", file=sys.stderr)
    return 0


def _cmd_generate(a) -> int:
    eng = _engine(a)
    tok = eng.tokenizer
    text = a.prompt
    if a.chat:
        messages = ([{"role": "system", "content": a.system}] if a.system else []) + [{"role": "user", "content": text}]
        text = tok.apply_chat_template(messages, add_generation_prompt=True, enable_thinking=a.thinking)
    out = eng.generate([tok.encode(text)], max_new_tokens=a.max_new_tokens)[0]
    print(tok.decode(out))
    return 0


def _cmd_apply_patch(a) -> int:
    from neagari.search.patch import apply_patch_files

    sha = apply_patch_files(Path(a.base), Path(a.out), [Path(p) for p in a.patches], force=a.force)
    print(f"{a.out}  sha256 {sha}", file=sys.stderr)
    return 0


def _cmd_verify(a) -> int:
    from neagari.workflow.provenance import verify

    problems = verify(a.root, deep=a.deep)
    for p in problems:
        print(f"{p.kind:>14}  {p.path}  {p.detail}")
    if problems:
        print(f"provenance: {len(problems)} problem(s) under {a.root}", file=sys.stderr)
        return 1
    print(f"provenance: every file under {a.root} matches its record", file=sys.stderr)
    return 0


def _cmd_search(a) -> int:
    import logging

    from neagari.search import split_probes
    from neagari.search.runner import Search, search_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    eng = _engine(a)
    if a.layers is None:
        a.layers = list(range(eng.cfg.n_layer))
    cfg = search_config(vars(a))
    targets, controls = split_probes(a.probes, a.controls or ())
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    search = Search(eng, a.model, targets, controls, cfg, out, label=a.label or out.name)
    result = search.run(progress=not a.quiet)
    search.finish(result, out / "patch.json", out / "iterations.parquet", out / "summary.json",
                  out / "patch.upstream.json" if a.upstream else None)
    print(f"{result.accepted}/{result.iterations_run} accepted ({result.stop_reason}) -> {out}", file=sys.stderr)
    return 0


def _cmd_fixture(a) -> int:
    from neagari.engine.fixtures import FixtureSpec, write_fixture_model

    spec = FixtureSpec(n_layer=a.layers, hidden=a.hidden, ffn=a.ffn, n_head=a.heads, n_kv_head=a.kv_heads,
                       head_dim=a.head_dim, vocab_size=a.vocab, tied_embeddings=not a.untied, seed=a.seed)
    print(write_fixture_model(a.out, spec))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="neagari", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("inspect", help="architecture, tensors, types, sizes, sha256 of a GGUF")
    s.add_argument("model")
    s.add_argument("--tensors", action="store_true", help="list every tensor")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_cmd_inspect)

    def engine_args(s):
        s.add_argument("model")
        s.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
        s.add_argument("--no-cache", action="store_true", help="dequantize weights at each call")
        s.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"],
                       help="dequantized weight cache type (bf16/fp16 halve GPU memory; fp32 default)")

    s = sub.add_parser("score", help="logit gap of every probe of a probe file")
    engine_args(s)
    s.add_argument("--probes", required=True)
    s.add_argument("--out", required=True, help="table path (.parquet, .csv or .tsv)")
    s.add_argument("--batch-size", type=int, default=64)
    s.set_defaults(func=_cmd_score)

    s = sub.add_parser("generate", help="greedy continuation with a KV cache")
    engine_args(s)
    s.add_argument("--prompt", required=True)
    s.add_argument("--chat", action="store_true", help="render through the file's chat template")
    s.add_argument("--system", default=None)
    s.add_argument("--thinking", action="store_true", help="leave Qwen3 thinking on (off by default)")
    s.add_argument("--max-new-tokens", type=int, default=64)
    s.set_defaults(func=_cmd_generate)

    s = sub.add_parser("apply-patch", help="write BASE with the patches' bytes XOR-ed in")
    s.add_argument("--base", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--force", action="store_true", help="accept patches that record no base sha256")
    s.add_argument("patches", nargs="+")
    s.set_defaults(func=_cmd_apply_patch)

    s = sub.add_parser("provenance", help="provenance records of result files")
    psub = s.add_subparsers(dest="action", required=True)
    v = psub.add_parser("verify", help="re-hash results; list every file that no longer matches its record")
    v.add_argument("root", nargs="?", default="results")
    v.add_argument("--deep", action="store_true", help="re-hash large files too (default: size + mtime)")
    v.set_defaults(func=_cmd_verify)

    s = sub.add_parser("search", help="XOR search over MLP groups; rerun on the same --out to resume")
    engine_args(s)
    s.add_argument("--probes", required=True, help="target probes (calibrated upstream JSON)")
    s.add_argument("--controls", nargs="*", help="control probe files")
    s.add_argument("--out", required=True, help="directory for patch.json, iterations.parquet, summary.json")
    s.add_argument("--iterations", type=int, required=True)
    from neagari.search.fitness import FITNESS_NAMES
    from neagari.search.proposal import GROUP_SAMPLING
    from neagari.search.runner import search_defaults

    d = search_defaults()  # the search's defaults are its config dataclasses'
    s.add_argument("--fitness", default=d["fitness"], choices=FITNESS_NAMES)
    s.add_argument("--lambda", dest="lam", type=float, default=d["lam"], help="control penalty weight")
    s.add_argument("--epsilon", type=float, default=d["epsilon"], help="focused: fixed control slack")
    s.add_argument("--slack-ratio", type=float, default=d["slack_ratio"],
                   help="focused_proportional: slack / |baseline|")
    s.add_argument("--layers", type=int, nargs="+", default=None, help="search layers (default: all)")
    s.add_argument("--projections", nargs="+", default=list(d["projections"]))
    s.add_argument("--group-sampling", default=d["group_sampling"], choices=GROUP_SAMPLING)
    s.add_argument("--scale-prob", type=float, default=d["scale_prob"], help="probability of a scale-mantissa move")
    s.add_argument("--scale-bits", type=int, nargs="+", default=list(d["scale_bits"]))
    s.add_argument("--seed", type=int, default=d["seed"])
    s.add_argument("--window", type=int, default=d["window"])
    s.add_argument("--min-rate", type=float, default=d["min_rate"])
    s.add_argument("--speculate", type=int, default=d["speculate"], help="proposals evaluated per batch")
    s.add_argument("--checkpoint-every", type=int, default=d["checkpoint_every"])
    s.add_argument("--accept-all", action="store_true", help="random-flip null: keep every proposal")
    s.add_argument("--upstream", action="store_true", help="also write patch.upstream.json")
    s.add_argument("--threads", type=int, default=0)
    s.add_argument("--label", default=None)
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_search)

    s = sub.add_parser("fixture", help="write a small random Qwen3 Q1_0 GGUF")
    s.add_argument("out")
    for flag, default in (("layers", 2), ("hidden", 128), ("ffn", 256), ("heads", 4), ("kv-heads", 2),
                          ("head-dim", 32), ("vocab", 512), ("seed", 0)):
        s.add_argument(f"--{flag}", type=int, default=default)
    s.add_argument("--untied", action="store_true")
    s.set_defaults(func=_cmd_fixture)
    return p


def main(argv: list[str] | None = None) -> int:
    from neagari.engine.gguf_io import GGUFFormatError

    args = build_parser().parse_args(argv)
    expected: tuple[type[BaseException], ...] = (GGUFFormatError, FileNotFoundError, IsADirectoryError)
    try:
        from neagari.search.patch import PatchError
        from neagari.search.probes import ProbeError
        expected += (PatchError, ProbeError)
    except ImportError:
        pass
    try:
        return args.func(args)
    except expected as e:
        print(f"neagari: error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # engine shape / tokenizer / config problems
        print(f"neagari: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
