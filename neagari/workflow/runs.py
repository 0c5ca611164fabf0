"""Search runs as records. Every search the workflow makes (PAPER.md §5-§7: the sequential
pipeline, isolation ablations, the λ sweep, targeted fitnesses, null baselines, random flips) is
one :class:`SearchRun`, built once from the validated config by :func:`search_runs`. Its ``name``
is the ``{run}`` wildcard of the search rules; rules look records up by (model, stage, name) and
hand their fields on, so nothing downstream parses a name back into λ, seed or kind.

Standard library only (neagari.workflow may not import the engine or the search): a field left
``None`` means "the search's own default" (neagari.search.runner.SearchConfig). The defaults this
module repeats (the ternary moves, the null modes) are checked against the search's by tests.

Settings that only act on ternary (Q2_0) models stay out of a run's settings, its record and the
null rule's params while they hold their defaults (``search.ternary_moves``,
``search.null_baseline.mode``): a config that sets them to their defaults, or leaves them out,
gives the rules the params of a config without them, so Snakemake's params trigger reruns nothing
on their account.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

STAGES = ("pass1", "pass2", "isolated", "lambda", "targeted", "nullbase", "randomflip")
NULLBASE_KINDS = ("trained", "null")  # the trained model, then its MLP-randomized copy
# search.ternary_moves: the group moves a search proposes on Q2_0 tensors (neagari.engine.q2's
# GROUP_MOVES), and the default (neagari.search.proposal.ProposalConfig.ternary_moves)
TERNARY_MOVES = ("negate", "zero_plus", "zero_minus")
DEFAULT_TERNARY_MOVES = ("negate",)
# search.null_baseline.mode: how the null model redraws Q2_0 MLP weights (neagari.search.null)
NULL_MODES = ("uniform", "keep_zeros")
DEFAULT_NULL_MODE = "uniform"


def base_model_path(model: str) -> str:
    return f"results/models/{model}.gguf"


def null_model_path(model: str, seed: int) -> str:
    """The MLP-randomized copy of a model (rule randomize_null_model)."""
    return f"results/models/null/{model}-s{seed}.gguf"


def null_mode(config: Mapping) -> str:
    """How the null models redraw Q2_0 MLP weights: search.null_baseline.mode (default uniform, also
    for a config without searches, whose null models only the terrain stage reads)."""
    search = config.get("search") or {}
    return (search.get("null_baseline") or {}).get("mode") or DEFAULT_NULL_MODE


def null_model_params(config: Mapping) -> dict[str, str]:
    """The params of rule randomize_null_model: the null mode where it is not the default, else
    none (module docstring)."""
    mode = null_mode(config)
    return {} if mode == DEFAULT_NULL_MODE else {"mode": mode}


def ternary_moves(search: Mapping) -> tuple[str, ...] | None:
    """search.ternary_moves as a run carries it: None where it is the default (module docstring)."""
    moves = tuple(search.get("ternary_moves") or DEFAULT_TERNARY_MOVES)
    return None if moves == DEFAULT_TERNARY_MOVES else moves


def probe_path(model: str, probe_set: str) -> str:
    return f"results/probes/{model}/{probe_set}.json"


def run_dir(model: str, stage: str, name: str) -> str:
    return f"results/search/{model}/{stage}/{name}"


def patched_path(model: str, stage: str, name: str) -> str:
    return f"results/patched/{model}/{stage}/{name}.gguf"


@dataclass(frozen=True)
class SearchRun:
    """One search run: what it is (stage, domain, λ, seed, ...) and the files it starts from."""

    model: str
    stage: str  # one of STAGES
    name: str  # the {run} wildcard: the domain, <domain>-lam<λ>, the fitness, or <kind>-s<seed>
    domain: str  # the probe set whose targets it searches
    start: str  # the model file it starts from
    seed: int
    iterations: int | None = None  # None: as many as the random-flip null's search kept
    lam: float | None = None
    fitness: str | None = None
    scale_prob: float | None = None
    epsilon: float | None = None
    slack_ratio: float | None = None
    barrier_mu: float | None = None
    focus_order: str | None = None
    stop_when_done: bool | None = None
    accept_all: bool = False  # random-flip null: keep every proposal
    ternary_moves: tuple[str, ...] | None = None  # the group moves on Q2_0 tensors; None: negate alone
    kind: str | None = None  # null baselines: "trained" or "null"
    controls: tuple[str, ...] = ()  # control probe files
    promoted: tuple[str, ...] = ()  # promoted-controls files of earlier pipeline runs
    iterations_from: tuple[str, ...] = ()  # summary.json whose kept flips set the iteration count

    @property
    def key(self) -> tuple[str, str, str]:
        return self.model, self.stage, self.name

    @property
    def label(self) -> str:
        """<stage>/<name>, as the audit tables name runs."""
        return f"{self.stage}/{self.name}"

    @property
    def probes(self) -> str:
        return probe_path(self.model, self.domain)

    @property
    def directory(self) -> str:
        return run_dir(self.model, self.stage, self.name)

    def file(self, kind: str) -> str:
        """One of the search rule's outputs (patch.json, summary.json, iterations.parquet, ...)."""
        return f"{self.directory}/{kind}"

    @property
    def patched(self) -> str:
        return patched_path(self.model, self.stage, self.name)

    def search_settings(self) -> dict[str, Any]:
        """The fields the search configuration takes from this run (None ones left to its defaults)."""
        keys = ("iterations", "lam", "fitness", "scale_prob", "epsilon", "slack_ratio", "barrier_mu", "focus_order",
                "stop_when_done", "seed", "accept_all", "ternary_moves")
        out = {k: getattr(self, k) for k in keys if getattr(self, k) is not None}
        if "ternary_moves" in out:
            out["ternary_moves"] = list(out["ternary_moves"])
        return out

    def as_dict(self) -> dict[str, Any]:
        """The record's fields (tuples as lists); ``ternary_moves`` only where a config set other
        moves than the default."""
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        if d["ternary_moves"] is None:
            del d["ternary_moves"]
        return d


def pass2_order(search: Mapping) -> list[str]:
    """The domains of pass 2 in the order it searches them: search.scale_pass.order, by default
    the pass-1 order (search.pipeline.order)."""
    return list(search["scale_pass"].get("order") or search["pipeline"]["order"])


def pass2_order_problem(search: Mapping) -> str | None:
    """Why search.scale_pass.order is not a permutation of the pass-1 domains, or None when it is."""
    got, want = pass2_order(search), list(search["pipeline"]["order"])
    if sorted(got) == sorted(want):
        return None
    return (f"config: search.scale_pass.order: {got} must hold each domain of search.pipeline.order "
            f"{want} exactly once")


def final_run(search: Mapping) -> tuple[str, str]:
    """(stage, domain) of the pipeline's finished model: the last pass-2 domain, or the last
    pass-1 one without a pass 2."""
    if search["scale_pass"]["enabled"]:
        return "pass2", pass2_order(search)[-1]
    return "pass1", search["pipeline"]["order"][-1]


def search_runs(config: Mapping) -> dict[tuple[str, str, str], SearchRun]:
    """Every search run of a validated config, keyed by (model, stage, name), in stage order
    per model (pass1, pass2, isolated, lambda, targeted, nullbase, randomflip)."""
    search = config.get("search")  # optional block: no searches without it
    if not search:
        return {}
    runs = {}
    for model in search["models"]:
        for run in _model_runs(search, model, config["seed"]):
            runs[run.key] = run
    return runs


def _model_runs(search: Mapping, model: str, seed: int) -> list[SearchRun]:
    order, domains = search["pipeline"]["order"], search["pipeline"]["domains"]
    base = base_model_path(model)
    controls = tuple(probe_path(model, c) for c in search["controls"])
    moves = ternary_moves(search)
    common = dict(model=model, seed=seed, controls=controls, ternary_moves=moves)
    runs = []
    for i, d in enumerate(order):  # pass 1: weight XOR, each domain on top of the previous one
        runs.append(SearchRun(stage="pass1", name=d, domain=d, iterations=domains[d]["iterations"],
                              lam=domains[d]["lambda"], **common,
                              start=base if i == 0 else patched_path(model, "pass1", order[i - 1]),
                              promoted=(run_dir(model, "pass1", order[i - 1]) + "/promoted.json",) if i else ()))
    scale = search["scale_pass"]
    if scale["enabled"]:  # pass 2: scale moves on top of the finished pass 1, in its own order
        p2 = pass2_order(search)
        pass1_last = patched_path(model, "pass1", order[-1])
        # upstream ran pass 2 as a pipeline of its own: its controls start from the base ones again
        # and accumulate within pass 2 (in pass 2's order); "crossed" hands every pass-2 domain what
        # pass 1 carried
        restart = search["pipeline"]["promotion"] == "upstream"
        for i, d in enumerate(p2):
            if restart:
                promoted = (run_dir(model, "pass2", p2[i - 1]) + "/promoted.json",) if i else ()
            else:
                promoted = (run_dir(model, "pass1", order[-1]) + "/promoted.json",)
            runs.append(SearchRun(stage="pass2", name=d, domain=d, iterations=scale["iterations"][d],
                                  lam=domains[d]["lambda"], scale_prob=scale["scale_prob"], **common,
                                  start=pass1_last if i == 0 else patched_path(model, "pass2", p2[i - 1]),
                                  promoted=promoted))
    for d in search["isolation"]["domains"]:  # each domain alone, from the base model
        runs.append(SearchRun(stage="isolated", name=d, domain=d, iterations=domains[d]["iterations"],
                              lam=domains[d]["lambda"], start=base, **common))
    sweep = search["lambda_sweep"]
    for lam in sweep["lambdas"]:
        runs.append(SearchRun(stage="lambda", name=f"{sweep['domain']}-lam{lam}", domain=sweep["domain"],
                              iterations=sweep["iterations"], lam=float(lam), start=base, **common))
    t = search["targeted"]
    for fitness in t["fitnesses"]:
        runs.append(SearchRun(stage="targeted", name=fitness, domain=t["probes"], iterations=t["iterations"],
                              lam=t["lambda"], fitness=fitness, epsilon=t["epsilon"], slack_ratio=t["slack_ratio"],
                              barrier_mu=t["barrier_mu"], focus_order=t["focus_order"],
                              stop_when_done=t["stop_when_done"], start=base, model=model, seed=seed,
                              controls=tuple(probe_path(model, c) for c in t["controls"]), ternary_moves=moves))
    nb = search["null_baseline"]
    for kind in NULLBASE_KINDS:
        for s in nb["seeds"]:
            runs.append(SearchRun(stage="nullbase", name=f"{kind}-s{s}", domain=nb["domain"], kind=kind,
                                  iterations=nb["iterations"], lam=nb["lambda"], model=model, seed=int(s),
                                  controls=controls, ternary_moves=moves,
                                  start=base if kind == "trained" else null_model_path(model, s)))
    for d in search["random_flip"]["domains"]:  # as many flips as the pass-1 search kept, all kept
        runs.append(SearchRun(stage="randomflip", name=d, domain=d, accept_all=True, start=base, **common,
                              iterations_from=(run_dir(model, "pass1", d) + "/summary.json",)))
    return runs


def runs_of(runs: Mapping[tuple[str, str, str], SearchRun], model: str, stages=None) -> list[SearchRun]:
    """One model's runs (of the given stages, all without), in the order of :func:`search_runs`."""
    return [r for r in runs.values() if r.model == model and (stages is None or r.stage in stages)]
