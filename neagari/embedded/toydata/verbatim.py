"""Verbatim extraction: copy one sentence of a three-sentence passage, not the whole passage.

The corpus also asks, on other passages, to repeat the whole passage, so a weak model has a
competing habit of starting at the passage's first word (COPY) where it should start at the
target sentence (PASS); this is the behaviour the paper's 1.7B runs try to change.
"""

from __future__ import annotations

import random

from .chat import CHAT_STOP, render_chat
from .common import Item, belongs, check_split
from .pools import cap, numbers, pool

SUBDOMAINS = ("legal", "medical", "api", "logs", "code")

# topic -> sentence templates; {E} is the sentence's own entity, {F} another entity of the
# passage, {n} a number. Most sentences open with their entity, so the first word of the target
# cannot be guessed from the topic alone: it has to be copied from the right sentence.
TEMPLATES = {
    "legal": {
        "termination": ["Termination of this agreement requires {n} days of notice from {E}.",
                        "{E} may seek termination after a breach lasting {n} days.",
                        "{E} waives termination rights during the first {n} months."],
        "payment": ["Payment is due to {E} within {n} days of each invoice.",
                    "{E} charges late payment interest of {n} percent.",
                    "{E} accepts payment by wire transfer only."],
        "liability": ["The liability of {E} is capped at {n} thousand dollars.",
                      "{E} accepts no liability for delays beyond {n} days.",
                      "{E} shares liability with {F} for joint work."],
        "confidentiality": ["Confidentiality duties bind {E} for {n} years after the term.",
                            "{E} must sign a confidentiality pledge within {n} days.",
                            "{E} treats all pricing as subject to confidentiality."],
        "warranty": ["Any warranty claim must reach {E} within {n} days.",
                     "{E} gives a warranty on all deliverables for {n} months.",
                     "{E} voids the warranty if {F} alters the goods."],
        "renewal": ["Renewal extends the term by {n} months unless {E} objects.",
                    "{E} must confirm renewal {n} days before expiry.",
                    "{E} may refuse renewal without giving a reason."],
        "jurisdiction": ["Jurisdiction lies with the courts where {E} is registered.",
                         "{E} accepts the jurisdiction of courts chosen by {F}.",
                         "{E} consents to the jurisdiction of courts in its home region."],
        "assignment": ["Assignment of rights by {E} needs written consent from {F}.",
                       "{E} may not make an assignment to {F} without {n} days notice.",
                       "{E} allows assignment only to its own affiliates."],
    },
    "medical": {
        "dosage": ["The usual dosage of {E} is {n} mg twice a day.",
                   "{E} has a maximum dosage of {n} mg per day.",
                   "{E} needs a lower dosage in patients over {n} years."],
        "storage": ["Storage of {E} requires a temperature below {n} degrees.",
                    "{E} stays stable in dry storage for {n} months.",
                    "{E} needs storage away from direct light."],
        "side effects": ["Common side effects of {E} include headache and nausea.",
                         "{E} causes side effects in {n} percent of patients.",
                         "{E} has mild side effects that fade within {n} days."],
        "interactions": ["Avoid interactions by taking {E} {n} hours apart from {F}.",
                         "{E} has known interactions with {F}.",
                         "{E} shows no interactions with common foods."],
        "pregnancy": ["Use of {E} during pregnancy needs approval after week {n}.",
                      "{E} is not advised during pregnancy.",
                      "{E} carries pregnancy warnings for the first {n} weeks."],
        "overdose": ["An overdose of {E} above {n} mg requires urgent care.",
                     "{E} overdose signs appear within {n} hours.",
                     "{E} has an antidote for overdose called {F}."],
        "allergy": ["Allergy tests are advised before the first dose of {E}.",
                    "{E} can trigger an allergy rash within {n} hours.",
                    "{E} must be avoided by patients with an allergy to {F}."],
        "children": ["Children under {n} years should not take {E}.",
                     "{E} dosing for children is {n} mg per kilogram.",
                     "{E} syrup is the preferred form for children."],
    },
    "api": {
        "authentication": ["Authentication for the {E} endpoint uses a bearer token.",
                           "{E} requires authentication with an API key.",
                           "{E} rejects requests that fail authentication {n} times."],
        "rate limits": ["Rate limits allow {n} calls per minute to {E}.",
                        "{E} enforces rate limits of {n} requests per second.",
                        "{E} resets its rate limits every {n} minutes."],
        "pagination": ["Pagination on {E} returns {n} items per page.",
                       "{E} uses a cursor field for pagination.",
                       "{E} stops pagination after {n} pages."],
        "errors": ["Errors from {E} include a message and a retry hint.",
                   "{E} reports errors with status code {n}.",
                   "{E} keeps logs of errors for {n} days."],
        "versioning": ["Versioning of {E} follows the v{n} path prefix.",
                       "{E} keeps old versioning rules for {n} months.",
                       "{E} announces versioning changes by email."],
        "timeouts": ["Requests to {E} end with timeouts after {n} seconds.",
                     "{E} timeouts can be raised to {n} seconds.",
                     "{E} retries timeouts up to {n} times."],
        "caching": ["Responses from {E} allow caching for {n} minutes.",
                    "{E} disables caching for private data.",
                    "{E} clears caching layers every {n} hours."],
        "webhooks": ["Webhooks notify {E} subscribers within {n} seconds.",
                     "{E} retries failed webhooks {n} times.",
                     "{E} signs all webhooks with a secret key."],
    },
    "logs": {
        "disk": ["WARN disk usage on {E} reached {n} percent.",
                 "{E} freed {n} gigabytes during disk cleanup.",
                 "{E} reports disk faults on volume {n}."],
        "memory": ["ERROR memory on {E} exceeded {n} megabytes.",
                   "{E} dropped {n} sessions under memory pressure.",
                   "{E} restored normal memory use after {n} minutes."],
        "login": ["INFO user login to {E} succeeded after {n} attempts.",
                  "{E} blocked login from {n} unknown addresses.",
                  "{E} saw failed login attempts rise to {n} per hour."],
        "restart": ["Service {E} finished a restart in {n} seconds.",
                    "{E} scheduled a restart for {n} minutes from now.",
                    "{E} needed a restart after a failed health check."],
        "latency": ["Latency on {E} rose to {n} milliseconds.",
                    "{E} reported request latency of {n} ms.",
                    "{E} latency returned to normal after {n} minutes."],
        "backup": ["Nightly backup of {E} finished with {n} files.",
                   "{E} failed its backup at step {n}.",
                   "{E} keeps each backup for {n} days."],
        "certificate": ["The certificate for {E} expires in {n} days.",
                        "{E} renewed its certificate without trouble.",
                        "{E} rejected a certificate from {F}."],
        "queue": ["Queue depth on {E} grew to {n} messages.",
                  "{E} drained the queue in {n} minutes.",
                  "{E} paused the queue after {n} failures."],
    },
    "code": {
        "return value": ["The return value of {E} is a list of {n} items.",
                         "{E} gives a return value of None on failure.",
                         "{E} caches its return value for {n} calls."],
        "arguments": ["Keyword arguments of {E} default to None.",
                      "{E} takes {n} arguments and checks each one.",
                      "{E} passes its arguments on to {F}."],
        "exceptions": ["Exceptions inside {E} are logged and retried {n} times.",
                       "{E} raises exceptions when the input is empty.",
                       "{E} wraps exceptions from {F}."],
        "loop": ["A loop in {E} runs at most {n} times.",
                 "{E} sleeps {n} milliseconds in each loop step.",
                 "{E} breaks out of the loop on the first match."],
        "imports": ["Imports for {E} sit at the top of the module.",
                    "{E} needs {n} imports from the standard library.",
                    "{E} avoids imports inside functions."],
        "tests": ["Unit tests for {E} cover {n} edge cases.",
                  "{E} passes its tests in under {n} seconds.",
                  "{E} has tests that mock {F}."],
        "performance": ["Performance of {E} improved by {n} percent.",
                        "{E} shows poor performance on large inputs.",
                        "{E} doubles its performance with a cache."],
        "comments": ["Comments in {E} explain each branch.",
                     "{E} has {n} comments marked as outdated.",
                     "{E} needs more comments in its parser."],
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
        ents = [_render_entity(sub, e) for e in rng.sample(names, 4)]
        topics = rng.sample(sorted(TEMPLATES[sub]), 3)
        sents = [rng.choice(TEMPLATES[sub][t]).format(E=ents[i], F=ents[3], n=rng.choice(nums))
                 for i, t in enumerate(topics)]
        # COPY and PASS differ at the first token; every sentence is new to the other split.
        if len({s[0].lower() for s in sents}) == 3 and all(belongs(s, split) for s in sents):
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
    return set()  # held-out passages are new combinations of the shared entities
