"""Argument checks of every subcommand: refused before any work, with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from neagari.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
PROBES = REPO / "resources/probes/smoke.json"


def _refused(capsys, argv, message) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    return err


SEARCH = ["search", "MODEL", "--probes", str(PROBES), "--out", "OUT"]


@pytest.mark.parametrize("extra, message", [
    (["--iterations", "-3"], "--iterations: must be an integer >= 1, got -3"),
    (["--iterations", "0"], "--iterations: must be an integer >= 1"),
    (["--iterations", "2", "--checkpoint-every", "0"], "--checkpoint-every: must be an integer >= 1, got 0"),
    (["--iterations", "2", "--speculate", "0"], "--speculate: must be an integer >= 1, got 0"),
    (["--iterations", "2", "--projections", "foo"], "--projections: invalid choice: 'foo'"),
    (["--iterations", "2", "--lambda", "nan"], "--lambda: must be a finite number, got nan"),
    (["--iterations", "2", "--lambda", "inf"], "--lambda: must be a finite number, got inf"),
    (["--iterations", "2", "--lambda", "-1"], "--lambda: must be >= 0"),
    (["--iterations", "2", "--epsilon=-inf"], "--epsilon: must be a finite number"),
    (["--iterations", "2", "--scale-prob", "1.5"], "--scale-prob: must be within [0, 1]"),
    (["--iterations", "2", "--min-rate", "nan"], "--min-rate: must be a finite number"),
    (["--iterations", "2", "--scale-bits", "12"], "--scale-bits: invalid choice: 12"),
    (["--iterations", "2", "--window", "0"], "--window: must be an integer >= 1"),
    (["--iterations", "2", "--seed", "-1"], "--seed: must be an integer >= 0"),
    (["--iterations", "2", "--threads", "-2"], "--threads: must be an integer >= 0"),
    (["--iterations", "2", "--layers", "-1"], "--layers: must be an integer >= 0"),
    (["--iterations", "2", "--device", "gpu"], "--device: expected cpu, cuda, cuda:N or auto, got 'gpu'"),
    (["--iterations", "x"], "--iterations: expected an integer, got 'x'"),
])
def test_search_arguments(capsys, extra, message):
    _refused(capsys, SEARCH + extra, message)


@pytest.mark.parametrize("argv, message", [
    (["score", "M", "--probes", "P", "--out", "s.tsv", "--batch-size", "-1"], "--batch-size: must be an integer >= 1"),
    (["score", "M", "--probes", "P", "--out", "s.tsv", "--batch-size", "0"], "--batch-size: must be an integer >= 1"),
    (["generate", "M", "--prompt", "x", "--max-new-tokens", "-1"], "--max-new-tokens: must be an integer >= 1"),
    (["fixture", "F", "--kv-heads", "0"], "--kv-heads: must be an integer >= 1, got 0"),
    (["fixture", "F", "--layers", "-1"], "--layers: must be an integer >= 1, got -1"),
    (["fixture", "F", "--heads", "0"], "--heads: must be an integer >= 1"),
    (["fixture", "F", "--hidden", "0"], "--hidden: must be an integer >= 1"),
    (["fixture", "F", "--seed", "-1"], "--seed: must be an integer >= 0"),
])
def test_ranges_of_other_commands(capsys, argv, message):
    _refused(capsys, argv, message)


@pytest.mark.parametrize("extra, message", [
    (["--vocab", "10"], "--vocab: the fixture tokenizer needs at least 262 tokens, got 10"),
    (["--vocab", "261"], "needs at least 262 tokens"),
    (["--heads", "3"], "--heads: 3 heads are not a multiple of --kv-heads 2"),
    (["--heads", "4", "--kv-heads", "3"], "not a multiple of --kv-heads 3"),
    (["--hidden", "100"], "--hidden: 100 is not a multiple of 128"),
    (["--ffn", "200"], "--ffn: 200 is not a multiple of 128"),
    (["--head-dim", "16"], "--heads x --head-dim: 64 is not a multiple of 128"),
    (["--head-dim", "33"], "--head-dim: must be even"),
])
def test_fixture_shapes_the_writer_cannot_build(capsys, tmp_path, extra, message):
    _refused(capsys, ["fixture", str(tmp_path / "f.gguf"), *extra], message)
    assert not list(tmp_path.iterdir())


def test_smallest_fixture_vocabulary_is_written(tmp_path):
    assert main(["fixture", str(tmp_path / "f.gguf"), "--vocab", "262", "--layers", "1"]) == 0


def test_cuda_without_cuda(capsys, monkeypatch, fixture_models, tmp_path):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model = str(fixture_models["tied_gqa"])
    for argv in (["score", model, "--probes", str(PROBES), "--out", str(tmp_path / "s.tsv"), "--device", "cuda"],
                 ["generate", model, "--prompt", "x", "--device", "cuda:0"],
                 SEARCH[:1] + [model] + SEARCH[2:-1] + [str(tmp_path / "o"), "--iterations", "2", "--device", "cuda"]):
        _refused(capsys, argv, "CUDA is not available on this machine")
    assert not list(tmp_path.iterdir())


def test_cuda_index_beyond_the_devices(capsys, monkeypatch, fixture_models):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    _refused(capsys, ["generate", str(fixture_models["tied_gqa"]), "--prompt", "x", "--device", "cuda:3"],
             "this machine has 1 CUDA device(s)")


def test_search_layers_beyond_the_model(capsys, fixture_models, tmp_path):
    model = str(fixture_models["tied_gqa"])
    _refused(capsys, ["search", model, "--probes", str(PROBES), "--out", str(tmp_path / "o"), "--iterations", "2",
                      "--layers", "0", "2", "7"], "has layers 0..1, not 2, 7")
    assert not (tmp_path / "o").exists()


def test_score_table_extension(capsys, fixture_models, tmp_path):
    _refused(capsys, ["score", str(fixture_models["tied_gqa"]), "--probes", str(PROBES), "--out",
                      str(tmp_path / "s.txt")], "no table extension")


def _search(model, out, *extra) -> list[str]:
    return ["search", str(model), "--probes", str(PROBES), "--out", str(out), "--iterations", "3", "--quiet",
            "--layers", "0", *extra]


def test_search_refuses_a_finished_run_of_another_configuration(fixture_models, tmp_path, capsys):
    model, out = fixture_models["tied_gqa"], tmp_path / "run"
    assert main(_search(model, out)) == 0
    patch = (out / "patch.json").read_bytes()
    flips = json.loads(patch)["flips"]
    capsys.readouterr()
    for extra, why in ((["--seed", "1"], "other settings (seed)"), (["--projections", "ffn_up"], "(projections)"),
                       (["--fitness", "focused"], "(fitness)")):
        assert main(_search(model, out, *extra)) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and why in err and "--force" in err, err
        assert (out / "patch.json").read_bytes() == patch
    other = fixture_models["mha_untied"]  # same settings, another model file
    assert main(_search(other, out)) == 2
    assert "another model file" in capsys.readouterr().err
    # the same configuration (speculation and checkpoint cadence do not count) reruns as before
    assert main(_search(model, out, "--speculate", "2", "--checkpoint-every", "7")) == 0
    assert json.loads((out / "patch.json").read_text())["flips"] == flips
    assert main(_search(model, out, "--seed", "1", "--force")) == 0
    assert json.loads((out / "summary.json").read_text())["config"]["seed"] == 1


def test_search_out_with_an_unreadable_summary(fixture_models, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "summary.json").write_text("{broken")
    assert main(_search(fixture_models["tied_gqa"], out)) == 2
    assert "cannot be read" in capsys.readouterr().err


def test_expected_errors_still_exit_2(tmp_path, capsys):
    from neagari.engine.gguf_io import GGUFFormatError
    from neagari.search.patch import PatchError
    from neagari.search.probes import ProbeError

    import neagari.cli as cli

    assert {GGUFFormatError, PatchError, ProbeError, FileNotFoundError, IsADirectoryError} <= set(cli._expected_errors())
    (tmp_path / "bad.gguf").write_bytes(b"not a gguf")
    assert main(["inspect", str(tmp_path / "bad.gguf")]) == 2
    assert main(["inspect", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 2


def test_light_commands_do_not_import_torch(tmp_path):
    code = ("import sys; from neagari.cli import main; rc = main(['provenance', 'verify', sys.argv[1]]); "
            "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)")
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr


def test_parser_without_search_options_has_the_same_commands():
    full, light = build_parser(), build_parser(search_args=False)
    assert full._subparsers._group_actions[0].choices.keys() == light._subparsers._group_actions[0].choices.keys()


def test_version_and_module_entry_point():
    """`python -m neagari --version` runs the same command line and reports the installed
    distribution's version (from pyproject.toml), not a second copy of it."""
    from importlib.metadata import version

    out = subprocess.run([sys.executable, "-m", "neagari", "--version"], capture_output=True, text=True,
                         check=True, cwd=REPO)
    assert out.stdout.strip() == f"neagari {version('neagari')}"


def _actions(parser, path=()):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _actions(sub, path + (name,))
        elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            yield path, action


def test_every_option_has_help_and_shows_its_default():
    actions = list(_actions(build_parser()))
    assert len(actions) > 40
    missing = [(" ".join(p), a.dest) for p, a in actions if not a.help]
    assert not missing, missing
    search_help = build_parser()._subparsers._group_actions[0].choices["search"].format_help()
    assert "(default: 200)" in search_help  # the auto-termination window's default, from the search config
