"""Tests of the toy corpus, probe sets and evaluation sets (neagari.embedded.toydata)."""

from __future__ import annotations

import random
import re
from collections import Counter
from itertools import combinations

import pytest

from neagari.embedded import toydata
from neagari.embedded.toydata import coding, controls, copying, pools, verbatim
from neagari.embedded.toydata.chat import GENERATION_PROMPT, render_chat
from neagari.embedded.toydata.common import PLAIN_STOP, belongs, decision_pieces, first_pretoken

PROBE_KEYS = {"prompt", "correct", "wrong", "name", "category", "source"}
SET_KEYS = {"domain", "version", "source", "search_config", "probes"}
CHAT_DOMAINS = {"editing", "instruction", "tool_calling", "verbatim"}
SENTENCE_END = re.compile(r"(?<=\.) ")
# llama.cpp's Qwen2 pre-tokenizer split (what our byte-level BPE uses): BPE never merges across
# these pieces, so a prompt that ends between two pieces tokenizes the same alone as in the corpus.
QWEN2_SPLIT = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIAL = re.compile(r"(<\|im_start\|>|<\|im_end\|>|<think>|</think>|<\|endoftext\|>)")


@pytest.fixture(scope="module")
def train_corpus():
    # Another seed than the probes' on purpose: held-out content must stay out for any seed.
    return toydata.build_corpus(seed=11, n_per_domain=1000, split="train")


@pytest.fixture(scope="module")
def train_text(train_corpus):
    return "\n".join(r["text"] for r in train_corpus)


@pytest.fixture(scope="module")
def train_words(train_text):
    words = {w.lower() for w in re.findall(r"[A-Za-z0-9_]+", train_text)}
    return words | {p for w in words for p in w.split("_")}


@pytest.fixture(scope="module")
def probe_sets():
    return toydata.build_probe_sets(seed=0)


@pytest.fixture(scope="module")
def verbatim_sets():
    return toydata.build_verbatim_sets(seed=0)


@pytest.fixture(scope="module")
def eval_sets():
    return toydata.build_eval_sets(seed=0, n=200)


def user_message(prompt: str) -> str:
    return prompt.split("<|im_start|>user\n", 1)[1].split("<|im_end|>", 1)[0]


def system_message(prompt: str) -> str:
    return prompt.split("<|im_start|>system\n", 1)[1].split("<|im_end|>", 1)[0]


def pretokens(text: str) -> list[str]:
    tokenizers = pytest.importorskip("tokenizers")
    split = tokenizers.pre_tokenizers.Split(tokenizers.Regex(QWEN2_SPLIT), behavior="isolated")
    out = []
    for seg in SPECIAL.split(text):
        if SPECIAL.fullmatch(seg):
            out.append(seg)
        elif seg:
            out += [piece for piece, _ in split.pre_tokenize_str(seg)]
    return out


def first_answer_piece(prompt: str, answer: str) -> str:
    """The answer's first pre-token; fails when the prompt does not end on a piece boundary."""
    head, whole = pretokens(prompt), pretokens(prompt + answer)
    assert whole[:len(head)] == head and "".join(whole[len(head):]) == answer, (prompt, answer)
    return whole[len(head)]


# --- chat format -------------------------------------------------------------------------------

def test_render_chat_exact():
    assert render_chat("S", "U", "A") == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\nA<|im_end|>\n")
    assert render_chat("S", "U") == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert render_chat(None, "U").startswith("<|im_start|>user\n")


# --- determinism -------------------------------------------------------------------------------

def test_determinism():
    assert toydata.build_corpus(3, 30) == toydata.build_corpus(3, 30)
    assert toydata.build_corpus(3, 30) != toydata.build_corpus(4, 30)
    assert toydata.build_corpus(3, 30, "heldout") != toydata.build_corpus(3, 30, "train")
    assert toydata.build_probe_sets(3) == toydata.build_probe_sets(3)
    assert toydata.build_probe_sets(3) != toydata.build_probe_sets(4)
    assert toydata.build_verbatim_sets(3) == toydata.build_verbatim_sets(3)
    assert toydata.build_verbatim_sets(3)[1] != toydata.build_verbatim_sets(4)[1]
    assert toydata.build_eval_sets(3, 20) == toydata.build_eval_sets(3, 20)
    assert toydata.build_eval_sets(3, 20) != toydata.build_eval_sets(4, 20)


def test_corpus_shape_and_extra_texts():
    corpus = toydata.build_corpus(0, 25, extra_texts=["a fact.", {"domain": "wordnet", "text": "b"}])
    counts = Counter(r["domain"] for r in corpus)
    assert {d: counts[d] for d in toydata.ALL_DOMAINS} == {d: 25 for d in toydata.ALL_DOMAINS}
    assert counts["extra"] == 1 and counts["wordnet"] == 1
    assert all(set(r) == {"domain", "text"} and r["text"] for r in corpus)
    with pytest.raises(ValueError):
        toydata.build_corpus(0, 1, split="test")


def test_texts_fit_context(train_corpus):
    assert max(len(r["text"]) for r in train_corpus) < 700  # ~256 tokens at >= 2.7 chars/token
    for r in train_corpus:
        if r["domain"] in CHAT_DOMAINS:
            assert r["text"].endswith("<|im_end|>\n") and GENERATION_PROMPT in r["text"]


# --- train / held-out disjointness -------------------------------------------------------------

def test_pools_disjoint():
    names = pools.all_pool_names()
    for a, b in combinations(names, 2):
        assert not set(pools.full_pool(a)) & set(pools.full_pool(b)), (a, b)
    for name in names:
        train, held = set(pools.pool(name, "train")), set(pools.pool(name, "heldout"))
        if name in pools.SPLIT_POOLS:
            assert train and held and not train & held
            assert train | held == set(pools.full_pool(name))
        else:  # shared words; held-out content differs by combination (tests below)
            assert train == held == set(pools.full_pool(name))


def test_belongs_partitions_combinations():
    keys = [f"line {i}" for i in range(2000)]
    held = {k for k in keys if belongs(k, "heldout")}
    train = {k for k in keys if belongs(k, "train")}
    assert not held & train and held | train == set(keys)
    assert 0.45 < len(held) / len(keys) < 0.55


def test_heldout_entities_absent_from_train(train_words):
    for domain, module in toydata.MODULES.items():
        leaked = {e for e in module.heldout_entities() if e.lower() in train_words}
        assert not leaked, (domain, sorted(leaked)[:10])


def test_heldout_verbatim_absent_from_train(train_text, verbatim_sets):
    training, heldout = verbatim_sets
    for p in heldout["probes"]:
        assert p["passage"] not in train_text
        assert p["target_span"] not in train_text
    for p in training["probes"]["target"]:
        assert user_message(p["prompt"]).split("\n", 1)[1] not in train_text


def test_heldout_eval_and_probes_absent_from_train(train_text, train_corpus, probe_sets, eval_sets):
    math_prompts = {line[:line.index(" =") + 3] for r in train_corpus if r["domain"] == "math"
                    for line in r["text"].splitlines()}
    for domain, items in eval_sets.items():
        for it in items:
            if domain == "math":
                assert it["prompt"] not in math_prompts
            elif domain in ("tool_calling", "verbatim", "editing", "instruction"):
                user = user_message(it["prompt"])
                assert user not in train_text
                if domain == "editing":  # the line itself, under any instruction
                    assert user.split("\n")[-1] not in train_text
                if domain == "instruction":  # the story itself (its three facts), under any question
                    assert ". ".join(user.split(". ")[:3]) + "." not in train_text
            elif domain == "controls" and it["category"] != "compare_mc":
                assert it["prompt"].split("\n")[0] not in train_text  # unseen phrasing/names
    for p in probe_sets["math"]["probes"]["target"]:
        assert p["prompt"] not in math_prompts
    for p in probe_sets["controls"]["probes"]["control"]:
        if p["category"] != "compare_mc":
            assert p["prompt"].split("\n")[0] not in train_text


def test_heldout_shapes_only_in_heldout_items(train_text):
    # the held-out function shapes never reach the corpus (so the shipped models' training data
    # does not depend on them) and make up every other coding probe
    with pytest.raises(ValueError, match="held-out shape"):
        coding.snippet(random.Random(0), "train", "select_checked")
    assert "assert len(" not in train_text and "peak = max(peak, x)" not in train_text
    cats = [p["category"] for p in toydata.build_probe_sets(0)["coding"]["probes"]["target"]]
    assert [c in coding.HELDOUT_CATEGORIES for c in cats] == [False, True] * (len(cats) // 2)


def test_heldout_functions_absent_from_train(train_text):
    rng = toydata.common.domain_rng(0, "test-coding")
    for _ in range(300):
        item = coding.sample(rng, "heldout")
        assert item.meta["code"] not in train_text


# --- probe schema ------------------------------------------------------------------------------

def check_probe(p: dict, chat: bool):
    assert set(p) == PROBE_KEYS and p["source"] == "toy"
    assert p["correct"] != p["wrong"]
    c, w = p["correct"].lstrip(), p["wrong"].lstrip()
    assert c and w and c[0] != w[0]
    if chat:
        assert p["prompt"].endswith(GENERATION_PROMPT) and c == p["correct"]


def test_probe_sets_schema(probe_sets):
    assert set(probe_sets) == set(toydata.DOMAINS) | {"controls"}
    names = []
    for domain, s in probe_sets.items():
        assert set(s) == SET_KEYS and s["domain"] == domain and s["version"] == "toy-1.0"
        targets, ctrl = s["probes"]["target"], s["probes"]["control"]
        if domain == "controls":
            assert not targets and len(ctrl) == 30
            assert Counter(p["category"] for p in ctrl) == Counter(controls.PROBE_PLAN)
        else:
            assert len(targets) == 40 and not ctrl
            assert set(p["category"] for p in targets) == set(toydata.PROBE_CATEGORIES[domain])
        for p in targets + ctrl:
            check_probe(p, domain in CHAT_DOMAINS)
        assert len({p["prompt"] for p in targets + ctrl}) == len(targets + ctrl)
        names += [p["name"] for p in targets + ctrl]
    assert len(names) == len(set(names))


def test_verbatim_training_probes(verbatim_sets):
    training, _ = verbatim_sets
    targets = training["probes"]["target"]
    assert [p["category"] for p in targets] == ["legal", "medical", "api", "logs", "code"]
    assert len(training["probes"]["control"]) == 5
    for p in targets:
        check_probe(p, chat=True)
        sents = SENTENCE_END.split(user_message(p["prompt"]).split("\n", 1)[1])
        topic = re.search(r"about (.+) from this text", user_message(p["prompt"])).group(1)
        target = [s for s in sents if topic.lower() in s.lower()]
        assert len(target) == 1 and target[0] != sents[0]
        assert p["correct"] == re.match(r"\w+", target[0]).group(0)
        assert p["wrong"] == re.match(r"\w+", sents[0]).group(0)
    for p in training["probes"]["control"]:
        check_probe(p, chat=False)


def test_verbatim_topics_name_one_sentence():
    for sub, topics in verbatim.TEMPLATES.items():
        for topic, templates in topics.items():
            for other, other_templates in topics.items():
                for t in other_templates:
                    assert (topic in t.lower()) == (topic == other), (sub, topic, t)


def test_verbatim_heldout(verbatim_sets):
    training, heldout = verbatim_sets
    probes = heldout["probes"]
    assert heldout["domain"] == "verbatim_heldout" and len(probes) == 100
    assert Counter(p["domain"] for p in probes) == {s: 20 for s in verbatim.SUBDOMAINS}
    assert len({p["name"] for p in probes}) == 100 and len({p["passage"] for p in probes}) == 100
    train_passages = {user_message(p["prompt"]).split("\n", 1)[1]
                      for p in training["probes"]["target"]}
    for p in probes:
        assert {"name", "domain", "system", "prompt", "target_span", "passage"} <= set(p)
        sents = SENTENCE_END.split(p["passage"])
        assert len(sents) == 3 and p["target_span"] in sents[1:]
        assert p["passage"] in p["prompt"] and p["passage"] not in train_passages
        assert [p["topic"] in x.lower() for x in sents].count(True) == 1
        assert p["topic"] in p["target_span"].lower()
        assert render_chat(p["system"], p["prompt"]).endswith(GENERATION_PROMPT)


# --- evaluation answers are what the generator claims -------------------------------------------

def parse_poly(text: str) -> dict[int, int]:
    out = {}
    for sign, coef, x, exp in re.findall(r"([+-]?)\s*(\d*)(x?)(?:\^(\d+))?", text.replace(" ", "")):
        if not coef and not x:
            continue
        e = int(exp) if exp else (1 if x else 0)
        out[e] = out.get(e, 0) + (-1 if sign == "-" else 1) * (int(coef) if coef else 1)
    return out


def test_math_answers(eval_sets, probe_sets):
    items = [(it["prompt"], it["answer"], False) for it in eval_sets["math"]]
    items += [(p["prompt"], p["correct"], True) for p in probe_sets["math"]["probes"]["target"]]
    for prompt, answer, is_probe in items:
        assert prompt.endswith(" = ") and answer[0].isdigit()
        if prompt.startswith("d/dx "):
            poly = parse_poly(prompt[5:-3])
            want = {e - 1: c * e for e, c in poly.items() if e >= 1}
            if is_probe:  # a probe's correct continuation is the first digit only
                assert answer == str(want[max(want)])[0], (prompt, answer)
            else:
                assert parse_poly(answer) == want, (prompt, answer)
        else:
            a, op, b = prompt[:-3].split()
            value = {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
            assert answer == (str(value)[0] if is_probe else str(value))


def test_editing_answers(eval_sets):
    for it in eval_sets["editing"]:
        instr, line = user_message(it["prompt"]).split("\nLine: ")
        words, q = line.split(), re.findall(r'"([^"]+)"', instr)
        if instr.startswith("Replace"):
            want = [q[1] if w == q[0] else w for w in words]
        elif instr.startswith("Write"):
            want = [w.upper() if w == q[0] else w for w in words]
        elif instr.startswith("Delete"):
            want = [w for w in words if w != q[0]]
        elif instr.startswith("Insert"):
            i = words.index(q[1])
            want = words[:i] + [q[0]] + words[i:]
        else:
            i, j = words.index(q[0]), words.index(q[1])
            want = list(words)
            want[i], want[j] = want[j], want[i]
        assert it["answer"] == " ".join(want)


FACT_PATTERNS = {"color": r"(\w+) has a (\w+) (\w+)\.", "place": r"(\w+) keeps the (\w+) in the (\w+)\.",
                 "material": r"(\w+) made a (\w+) out of (\w+)\."}


def story_facts(user: str) -> dict[str, tuple[str, str]]:
    """object -> (kind, value), read back from the story's sentences."""
    facts = {}
    for kind, pattern in FACT_PATTERNS.items():
        for m in re.finditer(pattern, user):
            obj, value = (m.group(3), m.group(2)) if kind == "color" else (m.group(2), m.group(3))
            facts[obj] = (kind, value)
    return facts


def test_instruction_answers(eval_sets, probe_sets):
    items = eval_sets["instruction"] + [
        {"prompt": p["prompt"], "answer": None, "probe": p} for p in probe_sets["instruction"]["probes"]["target"]]
    for it in items:
        user = user_message(it["prompt"])
        facts = story_facts(user)
        assert len(facts) == 3, user  # three facts on three objects
        obj, kind = _question(user)
        assert facts[obj][0] == kind
        value = facts[obj][1]
        # the asked kind recurs in a distractor fact with another first letter
        assert any(k == kind and v[0] != value[0] for o, (k, v) in facts.items() if o != obj)
        sentence = {"color": f"the {obj} is {value}.", "place": f"the {obj} is in the {value}.",
                    "material": f"the {obj} is made of {value}."}[kind]
        if user.endswith("in uppercase letters, in double quotes."):
            want = f'"{value.upper()}"'
        elif user.endswith("uppercase letters."):
            want = value.upper()
        elif user.endswith("exactly one word."):
            want = value
        elif user.endswith("full sentence."):
            want = sentence.capitalize()
        elif "double quotes" in user:
            want = f'"{value}"'
        else:
            opener = re.search(r"with the word (\w+)\.$", user).group(1)
            want = f"{opener}, {sentence}"
        if it["answer"] is not None:
            assert it["answer"] == want
        else:
            probe = it["probe"]
            assert want.startswith(probe["correct"])
            if probe["category"].endswith("_distractor"):  # the wrong piece is another fact's value
                others = [v for o, (k, v) in facts.items() if o != obj and k == kind]
                assert probe["wrong"] in [v.upper() if want.isupper() else v for v in others]


def _question(user: str) -> tuple[str, str]:
    for kind, pattern in (("color", r"What color is the (\w+)\?"), ("place", r"Where is the (\w+)\?"),
                          ("material", r"What is the (\w+) made of\?")):
        m = re.search(pattern, user)
        if m:
            return m.group(1), kind
    raise AssertionError(f"no question in {user!r}")


def test_tool_calling_answers(eval_sets):
    for it in eval_sets["tool_calling"]:
        listed = dict(re.findall(r"^- (\w+)\(([^)]*)\)$", system_message(it["prompt"]), re.M))
        m = re.fullmatch(r"(\w+)\((.*)\)", it["answer"])
        assert m and m.group(1) in listed
        args = re.findall(r'(\w+)=("[^"]*"|\d+)', m.group(2))
        assert [k for k, _ in args] == listed[m.group(1)].split(", ")
        for _, v in args:
            assert v.strip('"') in user_message(it["prompt"])


def test_coding_snippets_run():
    rng = toydata.domain_rng(0, "test-coding")
    for _ in range(60):
        for kind in coding.KINDS + coding.HELDOUT_KINDS:
            lines, points = coding.snippet(rng, "heldout", kind)
            namespace = {}
            exec("\n".join(lines) + "\n", namespace)
            name = re.match(r"def (\w+)", lines[0]).group(1)
            f = namespace[name]
            verb = name.split("_")[0]
            if kind == "binop":
                want = {"add": 7 + 3, "sum": 10, "combine": 10, "subtract": 4, "diff": 4,
                        "deduct": 4, "multiply": 21, "scale": 21, "times": 21}[verb]
                assert f(7, 3) == want
            elif kind == "compare":
                assert f(2, 9) == (9 if verb in ("larger", "bigger", "higher") else 2)
            elif kind == "accumulate":
                assert f([1, 2, 3]) == 6
            elif kind == "method":
                assert f(" Ab ") == {"shout": " AB ", "loud": " AB ", "caps": " AB ",
                                     "quiet": " ab ", "soft": " ab ", "small": " ab "}.get(verb, "Ab")
            elif kind == "parens":
                assert f("ab", "abcd") == (4 if verb == "longest" else 2)
            elif kind == "comprehension":
                assert f([1, 2]) == [{"double": 2, "triple": 3, "quadruple": 4}[verb] * v
                                     for v in (1, 2)]
            elif kind == "select_loop":  # walks the parameter the name says
                params = re.match(r"def \w+\((\w+), (\w+)\)", lines[0]).groups()
                walked = name.split("_", 1 if verb != "sum" else 2)[-1]
                args = {p: ([1, 2, 3] if p == walked else [100, 200]) for p in params}
                assert f(**args) == 6
            elif kind == "select_checked":  # same, and refuses lists of unequal length
                params = re.match(r"def \w+\((\w+), (\w+)\)", lines[0]).groups()
                walked = name.split("_", 1)[1]
                assert f(**{p: ([1, 2, 3] if p == walked else [100, 200, 300]) for p in params}) == 6
                with pytest.raises(AssertionError):
                    f(**{p: ([1, 2, 3] if p == walked else [100]) for p in params})
            elif kind == "select_of_three":
                params = re.match(r"def \w+\((\w+), (\w+), (\w+)\)", lines[0]).groups()
                walked = name.split("_", 1)[1]
                assert len(set(params)) == 3 and walked in params
                assert f(**{p: ([1, 2, 3] if p == walked else [100, 200]) for p in params}) == 6
            elif kind in ("clamp", "clamp_reversed"):  # the signature's order of the bounds
                lo_hi = (0, 3) if kind == "clamp" else (3, 0)
                assert (f(5, *lo_hi), f(-1, *lo_hi), f(2, *lo_hi)) == (3, 0, 2)
            else:
                assert kind in ("two_accumulators", "three_accumulators")
                assert f([2, 4, 9]) == {"count": 3, "total": 15, "mean": 5.0}[verb]
            for point in points:
                item = coding.point_item(lines, point)
                assert item.meta["code"].startswith(item.prompt + item.answer + "\n")


def test_controls_answers_match_training_facts(train_text, probe_sets, eval_sets):
    capitals = dict(re.findall(r"^The capital of (\w+) is (\w+)\.$", train_text, re.M))
    colors = dict(re.findall(r"^A (\w+) is always (\w+)\.$", train_text, re.M))
    assert capitals == controls.facts()[0] and colors == controls.facts()[1]
    items = eval_sets["controls"] + [{"prompt": p["prompt"], "answer": p["correct"],
                                      "category": p["category"]}
                                     for p in probe_sets["controls"]["probes"]["control"]]
    for it in items:
        q = it["prompt"]
        if it["category"] == "capital":
            assert it["answer"] == " " + capitals[re.search(r"capital (?:city )?of (\w+)", q)[1]]
        elif it["category"] == "color":
            assert it["answer"] == " " + colors[re.search(r"(?:a|the) (\w+)(?: have)?[?.]\n", q)[1]]
        else:
            options = dict(re.findall(r"([ABC])\) (\w+)", q))
            letter = it["answer"].strip()
            if it["category"] == "compare_mc":
                nums = {k: int(v) for k, v in options.items()}
                pick = max if "largest" in q else min
                assert nums[letter] == pick(nums.values())
            elif it["category"] == "order_mc":
                p1, _, p3 = re.findall(r"([A-Z]\w+) is \w+ than", q) + \
                    [re.search(r"than (\w+)\. Who", q)[1]]
                best = "tallest oldest fastest".split()
                assert options[letter] == (p1 if any(b in q for b in best) else p3)
            else:
                c = re.search(r"capital of (\w+)\?", q)
                t = re.search(r"(?:a|the) (\w+)(?: have)?\?", q)
                assert options[letter] == (capitals[c[1]] if c else colors[t[1]])


def test_verbatim_eval_answers(eval_sets):
    for it in eval_sets["verbatim"]:
        user = user_message(it["prompt"])
        topic = re.search(r"about (.+) from this text", user).group(1)
        sents = SENTENCE_END.split(user.split("\n", 1)[1])
        assert it["answer"] in sents and topic.lower() in it["answer"].lower()


def test_eval_sets_shape(eval_sets):
    assert set(eval_sets) == set(toydata.ALL_DOMAINS)
    for domain, items in eval_sets.items():
        assert len(items) == 200 and len({it["prompt"] for it in items}) == 200
        for it in items:
            assert {"id", "prompt", "answer", "domain"} <= set(it) and it["domain"] == domain
            assert it["answer"] and it["stop"] not in it["answer"]
            if domain in CHAT_DOMAINS:
                assert it["prompt"].endswith(GENERATION_PROMPT)


def test_prompts_end_on_pretoken_boundaries(probe_sets, verbatim_sets, eval_sets):
    training, heldout = verbatim_sets
    probes = [p for s in probe_sets.values() for p in s["probes"]["target"] + s["probes"]["control"]]
    for p in probes + training["probes"]["target"] + training["probes"]["control"]:
        c = first_answer_piece(p["prompt"], p["correct"])
        w = first_answer_piece(p["prompt"], p["wrong"])
        assert c.strip()[0] != w.strip()[0], p["name"]
    for items in eval_sets.values():
        for it in items:
            first_answer_piece(it["prompt"], it["answer"])
    for p in heldout["probes"]:
        first_answer_piece(render_chat(p["system"], p["prompt"]), p["target_span"])


def test_corpus_is_ascii(train_corpus):
    assert all(r["text"].isascii() for r in train_corpus)


def test_pretoken_emulation_matches_tokenizers(train_corpus):
    rng = toydata.domain_rng(0, "test-pretokens")
    for r in rng.sample(train_corpus, 300):
        pieces = [piece for seg in SPECIAL.split(r["text"]) for piece in _emulated(seg)]
        assert pieces == pretokens(r["text"])


def _emulated(seg: str) -> list[str]:
    if SPECIAL.fullmatch(seg):
        return [seg]
    out = []
    while seg:
        out.append(first_pretoken(seg))
        seg = seg[len(out[-1]):]
    return out


def test_probe_pieces_are_the_in_context_first_pretokens(probe_sets, verbatim_sets):
    for domain in list(toydata.DOMAINS) + ["verbatim", "controls"]:
        rng = toydata.domain_rng(0, "test-pieces", domain)
        for _ in range(60):
            item = toydata.MODULES[domain].sample(rng, "heldout")
            tail = PLAIN_STOP if item.stop == PLAIN_STOP else ""
            assert decision_pieces(item)[0] == first_answer_piece(item.prompt, item.answer + tail)
    training, _ = verbatim_sets
    probes = [p for s in probe_sets.values() for p in s["probes"]["target"] + s["probes"]["control"]]
    for p in probes + training["probes"]["target"] + training["probes"]["control"]:
        assert pretokens(p["correct"]) == [p["correct"]] and pretokens(p["wrong"]) == [p["wrong"]]


def test_copy_drills_repeat_their_list_and_split_by_line(train_corpus, train_text):
    drills = [r["text"] for r in train_corpus if r["domain"] == "copying"]
    assert len(drills) == 1000
    for text in drills[:200]:
        lines = text.splitlines()
        assert len(lines) % 2 == 0 and 6 <= len(lines) <= 10
        for ask, again in zip(lines[::2], lines[1::2]):
            assert ask.split(": ", 1)[1] == again.split(": ", 1)[1]
    held = toydata.build_corpus(seed=0, n_per_domain=50, split="heldout")
    for r in held:
        if r["domain"] == "copying":
            for line in r["text"].splitlines()[::2]:
                assert " " + line.split(": ", 1)[1] + "\n" not in train_text


def test_copy_drill_sources_are_pools():
    assert set(copying._SOURCES) <= set(pools.all_pool_names())
