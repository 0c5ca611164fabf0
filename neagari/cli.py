"""The ``neagari`` command line: the engine outside Snakemake.

Every expected failure (bad file, bad patch, bad probe set) ends with one line on stderr and
exit status 2; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

from neagari import __version__


class CliError(Exception):
    """An expected failure found by the command line itself; its message is one line."""


# ---------------------------------------------------------------------------- argument types
# argparse ``type=`` helpers: a bad value is an argparse error (usage + one line, exit 2).

def _int_at_least(lo: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be an integer >= {lo}, got {text}")
        return value

    parse.__name__ = f"int >= {lo}"
    return parse


positive_int = _int_at_least(1)
nonnegative_int = _int_at_least(0)


def _float_in(lo: float = -math.inf, hi: float = math.inf):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if not lo <= value <= hi:
            where = f">= {lo:g}" if hi == math.inf else f"within [{lo:g}, {hi:g}]"
            raise argparse.ArgumentTypeError(f"must be {where}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


finite_float = _float_in()
nonnegative_float = _float_in(0.0)
probability = _float_in(0.0, 1.0)
_DEVICE_RE = re.compile(r"cpu|auto|cuda(:\d+)?")


def device_name(text: str) -> str:
    if not _DEVICE_RE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda, cuda:N or auto, got {text!r}")
    return text


def _check_device(a) -> None:
    """A CUDA device that this machine has (checked before the model is loaded)."""
    if not a.device.startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        a.parser.error(f"argument --device: {a.device} requested, but CUDA is not available on this machine")
    index = int(a.device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        a.parser.error(f"argument --device: {a.device} requested, but this machine has "
                       f"{torch.cuda.device_count()} CUDA device(s)")


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

    _check_device(a)
    return Engine.load(a.model, device=a.device, dtype=a.dtype, cache_weights=not a.no_cache)


_TABLE_SUFFIXES = (".parquet", ".csv", ".tsv")


def _cmd_score(a) -> int:
    from neagari.search.probes import load_probes, score_probes
    from neagari.search.schemas import ProbeScores
    from neagari.tables import write_table

    if Path(a.out).suffix.lower() not in _TABLE_SUFFIXES:
        a.parser.error(f"argument --out: {a.out} has no table extension (use .parquet, .csv or .tsv)")
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


def _cmd_quantize(a) -> int:
    import os

    from neagari.engine.quants import format_named
    from neagari.engine.requantize import quantize_gguf
    from neagari.hashing import sha256_file

    fmt = format_named(a.type)
    src, out = Path(a.model), Path(a.out)
    if os.path.abspath(src) == os.path.abspath(out) or (src.exists() and out.exists() and os.path.samefile(src, out)):
        raise CliError(f"--out {out} is the input file {src}; write the {fmt.NAME} model to another path")
    if out.is_dir():
        raise CliError(f"--out {out} is a directory; give the path of the file to write")
    quantize_gguf(src, out, fmt.GGML_TYPE)
    print(f"{out}  sha256 {sha256_file(out)}", file=sys.stderr)
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


def _cmd_export(a) -> int:
    from neagari.workflow.crate import export_crate

    s = export_crate(a.root, a.out)
    print(f"provenance: {s.records} record(s) of {s.actions} rule execution(s), {s.files} file(s) "
          f"({s.bytes:,} bytes) -> {s.out}", file=sys.stderr)
    return 0


def _cmd_import(a) -> int:
    from neagari.workflow.crate import import_crate

    s = import_crate(a.crate, a.into, force=a.force)
    for w in s.warnings:
        print(f"neagari: warning: {w}", file=sys.stderr)
    print(f"provenance: {s.files - s.records} result file(s) and {s.records} record(s) restored into {s.into}"
          f" ({s.snakemake_records} Snakemake job record(s))", file=sys.stderr)
    return 0


def _finished_run_differs(out: Path, cfg, targets, controls, model_sha: str | None) -> str | None:
    """Why the finished run in ``out`` (its summary.json) is not this configuration, or None.

    Compared: the search configuration as a resumed checkpoint compares it (speculation and the
    checkpoint cadence do not change the result), the probe names by role, and, when
    ``model_sha`` is given, the base model's sha256."""
    summary = out / "summary.json"
    if not summary.is_file() or (out / ".checkpoint").exists():  # nothing finished, or a run to resume
        return None
    try:
        stored = json.loads(summary.read_text())
        config = dict(stored["config"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"{summary} cannot be read"
    ours = cfg.identity()
    for key in ("speculate", "checkpoint_every"):
        config.pop(key, None)
    if config != ours:
        keys = sorted(k for k in set(config) | set(ours) if config.get(k) != ours.get(k))
        if "proposal" in keys:
            theirs = config.get("proposal") if isinstance(config.get("proposal"), dict) else {}
            keys.remove("proposal")
            keys += sorted(k for k in set(theirs) | set(ours["proposal"])
                           if theirs.get(k) != ours["proposal"].get(k))
        return f"it was made with other settings ({', '.join(keys)})"
    probes = [{"name": p.name, "role": "target"} for p in targets] + \
             [{"name": p.name, "role": "control"} for p in controls]
    if stored.get("probes") != probes:
        return "it was made with other probes"
    if model_sha is not None and stored.get("base_sha256") != model_sha:
        return "it was made on another model file"
    return None


def _check_search_out(a, *args) -> None:
    if a.force:
        return
    why = _finished_run_differs(Path(a.out), *args)
    if why:
        raise CliError(f"--out {a.out} holds a finished search, but {why}; pick another --out, "
                       f"or pass --force to overwrite it")


def _cmd_search(a) -> int:
    import logging

    from neagari.engine.config import ModelConfig
    from neagari.engine.gguf_io import GGUFFile
    from neagari.search import split_probes
    from neagari.search.runner import Search, search_config

    _check_device(a)
    n_layer = ModelConfig.from_gguf(GGUFFile(a.model)).n_layer
    if a.layers is None:
        a.layers = list(range(n_layer))
    bad = sorted({l for l in a.layers if l >= n_layer})
    if bad:
        a.parser.error(f"argument --layers: {a.model} has layers 0..{n_layer - 1}, not {', '.join(map(str, bad))}")
    cfg = search_config(vars(a))
    targets, controls = split_probes(a.probes, a.controls or ())
    out = Path(a.out)
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out} is a file, not a directory")
    _check_search_out(a, cfg, targets, controls, None)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    eng = _engine(a)
    _check_search_out(a, cfg, targets, controls, eng.gguf.sha256())
    out.mkdir(parents=True, exist_ok=True)
    search = Search(eng, a.model, targets, controls, cfg, out, label=a.label or out.name)
    result = search.run(progress=not a.quiet)
    search.finish(result, out / "patch.json", out / "iterations.parquet", out / "summary.json",
                  out / "patch.upstream.json" if a.upstream else None)
    print(f"{result.accepted}/{result.iterations_run} accepted ({result.stop_reason}) -> {out}", file=sys.stderr)
    return 0


def _check_fixture(a) -> None:
    """The shapes the fixture writer can build, checked before anything is trained or written."""
    from neagari.engine.quants import format_named
    from neagari.engine.tokenizer import SPECIAL_TOKENS

    if a.heads % a.kv_heads:
        a.parser.error(f"argument --heads: {a.heads} heads are not a multiple of --kv-heads {a.kv_heads}")
    if a.head_dim % 2:
        a.parser.error(f"argument --head-dim: must be even (RoPE rotates pairs), got {a.head_dim}")
    fmt = format_named(a.type)
    for flag, n in (("--hidden", a.hidden), ("--ffn", a.ffn), ("--heads x --head-dim", a.heads * a.head_dim)):
        if n % fmt.QK:  # the row lengths of the quantized matrices
            a.parser.error(f"argument {flag}: {n} is not a multiple of {fmt.QK} (a {fmt.NAME} block)")
    # byte-level BPE: 256 byte tokens, the special tokens, and at least one merge
    least = 256 + len(SPECIAL_TOKENS) + 1
    if a.vocab < least:
        a.parser.error(f"argument --vocab: the fixture tokenizer needs at least {least} tokens, got {a.vocab}")


def _cmd_fixture(a) -> int:
    from neagari.engine.fixtures import FixtureSpec, write_fixture_model
    from neagari.engine.quants import format_named

    _check_fixture(a)

    spec = FixtureSpec(n_layer=a.layers, hidden=a.hidden, ffn=a.ffn, n_head=a.heads, n_kv_head=a.kv_heads,
                       head_dim=a.head_dim, vocab_size=a.vocab, tied_embeddings=not a.untied, seed=a.seed,
                       block_type=format_named(a.type).GGML_TYPE)
    print(write_fixture_model(a.out, spec))
    return 0


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default after its help, unless there is none to show."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS \
                or action.help is None:
            return action.help
        return super()._get_help_string(action)


def build_parser(search_args: bool = True) -> argparse.ArgumentParser:
    """The parser. ``search_args=False`` leaves the ``search`` command's options out: they take
    their defaults and choices from the search modules, whose import (torch) other commands skip."""
    p = argparse.ArgumentParser(prog="neagari", description=__doc__.splitlines()[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def command(name, func, **kw):
        s = sub.add_parser(name, formatter_class=HelpFormatter, **kw)
        s.set_defaults(func=func, parser=s)
        return s

    s = command("inspect", _cmd_inspect, help="architecture, tensors, types, sizes, sha256 of a GGUF")
    s.add_argument("model", help="a GGUF file")
    s.add_argument("--tensors", action="store_true", help="list every tensor")
    s.add_argument("--json", action="store_true", help="print JSON instead of a text summary")

    def engine_args(s):
        s.add_argument("model", help="a Qwen3 GGUF (Q1_0, Q2_0, F16, BF16 or F32 tensors)")
        s.add_argument("--device", default="cpu", type=device_name, help="cpu, cuda, cuda:N or auto")
        s.add_argument("--no-cache", action="store_true", help="dequantize weights at each call")
        s.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"],
                       help="dequantized weight cache type (bf16/fp16 halve GPU memory; fp32 default)")

    s = command("score", _cmd_score, help="logit gap of every probe of a probe file")
    engine_args(s)
    s.add_argument("--probes", required=True, help="probe file (upstream JSON schema)")
    s.add_argument("--out", required=True, help="table path (.parquet, .csv or .tsv)")
    s.add_argument("--batch-size", type=positive_int, default=64, help="prompts per forward pass")

    s = command("generate", _cmd_generate, help="greedy continuation with a KV cache")
    engine_args(s)
    s.add_argument("--prompt", required=True, help="the text to continue (the user turn with --chat)")
    s.add_argument("--chat", action="store_true", help="render through the file's chat template")
    s.add_argument("--system", default=None, help="system turn (with --chat)")
    s.add_argument("--thinking", action="store_true", help="leave Qwen3 thinking on (off by default)")
    s.add_argument("--max-new-tokens", type=positive_int, default=64, help="stop after this many tokens")

    s = command("apply-patch", _cmd_apply_patch, help="write BASE with the patches' bytes XOR-ed in")
    s.add_argument("--base", required=True, help="the GGUF the patches were searched on")
    s.add_argument("--out", required=True, help="the file to write (never the base: it is not modified)")
    s.add_argument("--force", action="store_true", help="accept patches that record no base sha256")
    s.add_argument("patches", nargs="+", help="patch files (ours or upstream's), applied in order")

    s = command("quantize", _cmd_quantize,
                help="round a float GGUF's linear weights to Q1_0 or Q2_0 (llama.cpp's rule)")
    s.add_argument("model", help="a GGUF with F32, F16 or BF16 linear weights")
    s.add_argument("--out", required=True, help="the file to write (never the input)")
    s.add_argument("--type", default="q1_0", choices=["q1_0", "q2_0"],
                   help="target format: 1-bit Q1_0 or ternary Q2_0")

    s = command("provenance", None, help="provenance records of result files")
    psub = s.add_subparsers(dest="action", required=True)
    v = psub.add_parser("verify", formatter_class=HelpFormatter, help="re-hash results; list every file that no longer matches its record")
    v.add_argument("root", nargs="?", default="results", help="directory of result files and their .prov.json records")
    v.add_argument("--deep", action="store_true", help="re-hash large files too (default: size + mtime)")
    v.set_defaults(func=_cmd_verify, parser=v)
    e = psub.add_parser("export", formatter_class=HelpFormatter,
                        help="pack results and their records into a Workflow Run RO-Crate (zip)")
    e.add_argument("root", nargs="?", default="results", help="directory of result files and their .prov.json records")
    e.add_argument("--out", required=True, help="the crate to write (.zip)")
    e.set_defaults(func=_cmd_export, parser=e)
    i = psub.add_parser("import", formatter_class=HelpFormatter,
                        help="unpack a crate: every result file and record, checked against the crate's sha256")
    i.add_argument("crate", help="a crate written by `neagari provenance export`")
    i.add_argument("--into", default=".", help="working directory to unpack into (its results/ receives the files)")
    i.add_argument("--force", action="store_true", help="overwrite result files that exist")
    i.set_defaults(func=_cmd_import, parser=i)

    s = command("search", _cmd_search, help="XOR search over MLP groups; rerun on the same --out to resume")
    if search_args:
        _search_arguments(s, engine_args)

    s = command("fixture", _cmd_fixture, help="write a small random Qwen3 Q1_0 (or Q2_0) GGUF")
    s.add_argument("out", help="the GGUF to write")
    for flag, default, kind in (("layers", 2, positive_int), ("hidden", 128, positive_int),
                                ("ffn", 256, positive_int), ("heads", 4, positive_int),
                                ("kv-heads", 2, positive_int), ("head-dim", 32, positive_int),
                                ("vocab", 512, positive_int), ("seed", 0, nonnegative_int)):
        s.add_argument(f"--{flag}", type=kind, default=default, help=FIXTURE_HELP[flag])
    s.add_argument("--untied", action="store_true", help="a separate LM head (default: tied to the embedding)")
    s.add_argument("--type", default="q1_0", choices=["q1_0", "q2_0"], help="format of the linear weights")
    return p


FIXTURE_HELP = {"layers": "transformer blocks", "hidden": "hidden size (a multiple of 128; of 64 for Q2_0)",
                "ffn": "MLP width (a multiple of 128; of 64 for Q2_0)", "heads": "attention heads",
                "kv-heads": "key/value heads", "head-dim": "dimension per head", "vocab": "vocabulary size",
                "seed": "weight seed"}


def _search_arguments(s, engine_args) -> None:
    from neagari.engine import q2
    from neagari.engine.config import MLP_PROJECTIONS
    from neagari.search.fitness import FITNESS_NAMES, FOCUS_ORDERS
    from neagari.search.proposal import GROUP_SAMPLING
    from neagari.search.runner import search_defaults

    engine_args(s)
    s.add_argument("--probes", required=True, help="target probes (calibrated upstream JSON)")
    s.add_argument("--controls", nargs="*", help="control probe files")
    s.add_argument("--out", required=True, help="directory for patch.json, iterations.parquet, summary.json")
    s.add_argument("--iterations", type=positive_int, required=True, help="proposals to evaluate")
    d = search_defaults()  # the search's defaults are its config dataclasses'
    s.add_argument("--fitness", default=d["fitness"], choices=FITNESS_NAMES, help="fitness function (PAPER.md §5)")
    s.add_argument("--lambda", dest="lam", type=nonnegative_float, default=d["lam"], help="control penalty weight")
    s.add_argument("--epsilon", type=nonnegative_float, default=d["epsilon"], help="focused: fixed control slack")
    s.add_argument("--slack-ratio", type=nonnegative_float, default=d["slack_ratio"],
                   help="focused_proportional: slack / |baseline|")
    s.add_argument("--barrier-mu", type=nonnegative_float, default=d["barrier_mu"],
                   help="focused_barrier: weight μ of the controls' log-barrier")
    s.add_argument("--focus-order", default=d["focus_order"], choices=FOCUS_ORDERS,
                   help="focused: the order of the targets, fixed at baseline by |gap| or re-ranked every "
                        "iteration (dynamic)")
    s.add_argument("--stop-when-done", action="store_true",
                   help="focused: stop once every target has crossed (default: run out --iterations, "
                        "refusing every proposal)")
    s.add_argument("--layers", type=nonnegative_int, nargs="+", default=None, help="search layers (default: all)")
    s.add_argument("--projections", nargs="+", default=list(d["projections"]), choices=MLP_PROJECTIONS,
                   help="MLP projections whose groups may be flipped")
    s.add_argument("--group-sampling", default=d["group_sampling"], choices=GROUP_SAMPLING,
                   help="uniform over groups, or proportional to |scale| as accepted so far (scale) or as "
                        "in the starting model (scale_base)")
    s.add_argument("--scale-prob", type=probability, default=d["scale_prob"],
                   help="probability of a scale-mantissa move")
    s.add_argument("--scale-bits", type=int, nargs="+", default=list(d["scale_bits"]), choices=range(10),
                   metavar="BIT", help="FP16 mantissa bits a scale move may flip (0..9)")
    s.add_argument("--ternary-moves", nargs="+", default=list(d["ternary_moves"]),
                   choices=q2.GROUP_MOVES,
                   help="group moves proposed on Q2_0 tensors: negate (w -> -w), and the zero-pattern "
                        "moves zero_plus (0 <-> +d) and zero_minus (0 <-> -d)")
    s.add_argument("--seed", type=nonnegative_int, default=d["seed"], help="proposal stream seed")
    s.add_argument("--window", type=positive_int, default=d["window"],
                   help="auto-termination window (iterations)")
    s.add_argument("--min-rate", type=probability, default=d["min_rate"],
                   help="stop when the acceptance rate over the window falls below this")
    s.add_argument("--speculate", type=positive_int, default=d["speculate"], help="proposals evaluated per batch")
    s.add_argument("--checkpoint-every", type=positive_int, default=d["checkpoint_every"],
                   help="iterations between checkpoints in --out")
    s.add_argument("--accept-all", action="store_true", help="random-flip null: keep every proposal")
    s.add_argument("--upstream", action="store_true", help="also write patch.upstream.json")
    s.add_argument("--threads", type=nonnegative_int, default=0, help="torch threads (0: torch's default)")
    s.add_argument("--label", default=None, help="run name written into the patch and summary")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--force", action="store_true",
                   help="overwrite a finished search of another configuration in --out")


# Expected failures: one line on stderr, exit 2. The module-level exception classes are looked up
# in sys.modules rather than imported: one that was never imported cannot have been raised, and
# importing them (neagari.search pulls in torch) would slow every command down.
_OS_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, FileExistsError, PermissionError)
_MODULE_ERRORS = (("neagari.engine.gguf_io", "GGUFFormatError"), ("neagari.search.patch", "PatchError"),
                  ("neagari.search.probes", "ProbeError"))


def _expected_errors() -> tuple[type[BaseException], ...]:
    found = [getattr(sys.modules[m], name) for m, name in _MODULE_ERRORS if m in sys.modules]
    return (CliError, *_OS_ERRORS, *found)


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        text = f"{e.filename}: {e.strerror}" if e.filename is not None else e.strerror
    else:
        text = str(e) or type(e).__name__
    # a message quoting a file's content must not break the one-line contract
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _command(argv: list[str]) -> str | None:
    """The subcommand named on a command line (top-level options take no values)."""
    return next((x for x in argv if not x.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(search_args=_command(argv) == "search").parse_args(argv)
    try:
        return args.func(args)
    except _expected_errors() as e:
        print(f"neagari: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except ValueError as e:  # engine shape / tokenizer / config problems
        print(f"neagari: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
