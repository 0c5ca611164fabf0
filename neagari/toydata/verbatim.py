"""Verbatim extraction: copy one sentence of a three-sentence passage, not the whole passage.

The corpus also asks, on other passages, to repeat the whole passage, so a weak model has a
competing habit of starting at the passage's first word (COPY) where it should start at the
target sentence (PASS); this is the behaviour the paper's 1.7B runs try to change.
"""

from __future__ import annotations

import random

from .chat import CHAT_STOP, render_chat
from .common import Item, check_split
from .pools import cap, numbers, pool

SUBDOMAINS = ("legal", "medical", "api", "logs", "code")

# topic -> sentence templates; {E} and {F} are entities of the sub-domain, {n} a number.
TEMPLATES = {
    "legal": {
        "termination": ["Termination of this agreement requires {n} days of written notice.",
                        "{E} may seek termination after a breach lasting {n} days."],
        "payment": ["Payment is due to {E} within {n} days of each invoice.",
                    "Late payment to {E} accrues interest of {n} percent."],
        "liability": ["The liability of {E} is capped at {n} thousand dollars.",
                      "{E} accepts no liability for delays beyond {n} days."],
        "confidentiality": ["Confidentiality duties bind {E} for {n} years after the term.",
                            "Staff of {E} sign a confidentiality pledge within {n} days."],
        "warranty": ["{E} gives a warranty on all deliverables for {n} months.",
                     "Any warranty claim must reach {E} within {n} days."],
        "renewal": ["Renewal extends the term by {n} months unless {E} objects.",
                    "Notice of renewal must reach {F} {n} days before expiry."],
        "jurisdiction": ["Jurisdiction lies with the courts where {E} is registered.",
                         "Disputes over {n} dollars fall under the jurisdiction of {F}."],
        "assignment": ["Assignment of rights by {E} needs written consent from {F}.",
                       "No party may make an assignment to {F} without {n} days notice."],
    },
    "medical": {
        "dosage": ["The usual dosage of {E} is {n} mg twice a day.",
                   "Adults must not exceed a dosage of {n} mg of {E} daily."],
        "storage": ["Storage of {E} requires a temperature below {n} degrees.",
                    "Keep {E} in dry storage for at most {n} months."],
        "side effects": ["Common side effects of {E} include headache and nausea.",
                         "Side effects of {E} appear in {n} percent of patients."],
        "interactions": ["{E} has known interactions with {F}.",
                         "Avoid interactions by taking {E} {n} hours apart from {F}."],
        "pregnancy": ["Use of {E} during pregnancy needs approval after week {n}.",
                      "Pregnancy warnings for {E} cover the first {n} weeks."],
        "overdose": ["An overdose of {E} above {n} mg requires urgent care.",
                     "Signs of overdose appear within {n} hours of taking {E}."],
        "allergy": ["Patients with an allergy to {E} must avoid {F}.",
                    "Allergy tests are advised before the first dose of {E}."],
        "children": ["Children under {n} years should not take {E}.",
                     "For children the dose of {E} is {n} mg per kilogram."],
    },
    "api": {
        "authentication": ["Authentication for the {E} endpoint uses a bearer token.",
                           "Every {E} request needs authentication with an API key."],
        "rate limits": ["Rate limits allow {n} calls per minute to {E}.",
                        "The {E} service enforces rate limits of {n} requests per second."],
        "pagination": ["Pagination on {E} returns {n} items per page.",
                       "Use the cursor field for pagination through {E} results."],
        "errors": ["Errors from {E} include a message and a retry hint.",
                   "Clients should log errors from {E} after {n} failed retries."],
        "versioning": ["Versioning of {E} follows the v{n} path prefix.",
                       "{E} keeps old versioning rules for {n} months."],
        "timeouts": ["Requests to {E} end with timeouts after {n} seconds.",
                     "Timeouts on {E} calls can be raised to {n} seconds."],
        "caching": ["Responses from {E} allow caching for {n} minutes.",
                    "Caching of {F} data must stop after {n} hours."],
        "webhooks": ["Webhooks notify {E} subscribers within {n} seconds.",
                     "{F} retries failed webhooks {n} times."],
    },
    "logs": {
        "disk": ["WARN disk usage on {E} reached {n} percent.",
                 "Disk cleanup on {E} freed {n} gigabytes."],
        "memory": ["ERROR memory on {E} exceeded {n} megabytes.",
                   "Memory pressure forced {E} to drop {n} sessions."],
        "login": ["INFO user login to {E} succeeded after {n} attempts.",
                  "Failed login attempts on {F} rose to {n} per hour."],
        "restart": ["Service {E} finished a restart in {n} seconds.",
                    "Restart of {F} was triggered by a failed health check."],
        "latency": ["Latency on {E} rose to {n} milliseconds.",
                    "DEBUG request latency for {F} averaged {n} ms."],
        "backup": ["Nightly backup of {E} finished with {n} files.",
                   "The backup job for {F} failed at step {n}."],
        "certificate": ["The certificate for {E} expires in {n} days.",
                        "TLS certificate checks for {F} passed at {n} nodes."],
        "queue": ["Queue depth on {E} grew to {n} messages.",
                  "Workers on {F} drained the queue in {n} minutes."],
    },
    "code": {
        "return value": ["The return value of {E} is a list of {n} items.",
                         "{E} gives a return value of None on failure."],
        "arguments": ["{E} takes {n} arguments and checks each one.",
                      "Keyword arguments of {F} default to None."],
        "exceptions": ["Exceptions inside {E} are logged and retried {n} times.",
                       "{F} raises exceptions when the input is empty."],
        "loop": ["A loop in {E} runs at most {n} times.",
                 "The main loop of {F} sleeps {n} milliseconds per step."],
        "imports": ["Imports for {E} sit at the top of the module.",
                    "{F} needs {n} imports from the standard library."],
        "tests": ["Unit tests for {E} cover {n} edge cases.",
                  "Tests of {F} run in under {n} seconds."],
        "performance": ["Performance of {E} improved by {n} percent.",
                        "Profiling showed poor performance of {F} on large inputs."],
        "comments": ["Comments in {E} explain each branch.",
                     "{F} has {n} comments marked as outdated."],
    },
}

TRAIN_SYSTEMS = ("You are a helpful assistant.", "You are a precise assistant.",
                 "Answer with text from the document.")
HELDOUT_SYSTEM = "You are a helpful assistant."
EXTRACT_TRAIN = ("Extract the sentence about {t} from this text:",
                 "Quote the sentence about {t} from this text:",
                 "Copy only the sentence about {t} from this text:")
EXTRACT_HELDOUT = "Extract the sentence about {t} from this text:"
REPEAT = ("Repeat this text exactly:", "Copy the whole text:", "Return this text word for word:")
REPEAT_SHARE = 0.35
# Held-out entities reserved for the five search-training probes (never in the 100 held-out).
N_TRAINING_ENTITIES = 6


def _render_entity(sub: str, name: str) -> str:
    if sub in ("legal", "medical"):
        return cap(name)
    return f"{name}()" if sub == "code" else name


def entities(sub: str, split: str, part: str = "all") -> tuple[str, ...]:
    """Entity names of a sub-domain; the held-out half is cut into "probe" and "eval" parts."""
    names = pool(sub, split)
    if split == "heldout" and part == "probe":
        return names[:N_TRAINING_ENTITIES]
    if split == "heldout" and part == "eval":
        return names[N_TRAINING_ENTITIES:]
    return names


def passage(rng: random.Random, sub: str, split: str, part: str = "all"):
    """Three sentences on three different topics whose first letters differ pairwise.

    Returns (sentences, topics).
    """
    check_split(split)
    names, nums = entities(sub, split, part), numbers(2, 99, split)
    while True:
        e, f = rng.sample(names, 2)
        topics = rng.sample(sorted(TEMPLATES[sub]), 3)
        sents = [rng.choice(TEMPLATES[sub][t]).format(
            E=_render_entity(sub, e), F=_render_entity(sub, f), n=rng.choice(nums))
            for t in topics]
        if len({s[0].lower() for s in sents}) == 3:  # COPY and PASS differ at the first token
            return sents, topics


def extract_user(instruction: str, topic: str, text: str) -> str:
    return instruction.format(t=topic) + "\n" + text


def extract_item(rng: random.Random, sub: str, split: str, part: str = "all",
                 first_allowed: bool = True, system: str | None = None,
                 instruction: str | None = None) -> Item:
    sents, topics = passage(rng, sub, split, part)
    k = rng.randrange(3) if first_allowed else rng.randrange(1, 3)
    text = " ".join(sents)
    if system is None:
        system = rng.choice(TRAIN_SYSTEMS) if split == "train" else HELDOUT_SYSTEM
    if instruction is None:
        instruction = rng.choice(EXTRACT_TRAIN) if split == "train" else EXTRACT_HELDOUT
    user = extract_user(instruction, topics[k], text)
    return Item(prompt=render_chat(system, user), answer=sents[k], wrong=text, category=sub,
                stop=CHAT_STOP, meta={"system": system, "user": user, "passage": text,
                                      "target": sents[k], "topic": topics[k], "position": k})


def sample(rng: random.Random, split: str, category: str | None = None) -> Item:
    sub = category or rng.choice(SUBDOMAINS)
    return extract_item(rng, sub, split, part="eval" if split == "heldout" else "all")


def corpus_text(rng: random.Random, split: str) -> str:
    sub = rng.choice(SUBDOMAINS)
    if rng.random() < REPEAT_SHARE:
        sents, _ = passage(rng, sub, split)
        text = " ".join(sents)
        system = rng.choice(TRAIN_SYSTEMS) if split == "train" else HELDOUT_SYSTEM
        return render_chat(system, rng.choice(REPEAT) + "\n" + text, text)
    item = extract_item(rng, sub, split)
    return item.prompt + item.answer + CHAT_STOP + "\n"


def heldout_entities() -> set[str]:
    return {n for sub in SUBDOMAINS for n in pool(sub, "heldout")}
