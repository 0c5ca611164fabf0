"""Tool calling: pick the right tool from a listed set and fill its arguments (BFCL analogue).

The answer starts with the function name, so the first token decides which listed tool is called.
Held-out requests use unseen argument values and, half of the time, tools whose names never occur
in training (the model must match the request's words to the listed name).
"""

from __future__ import annotations

import random

from .chat import CHAT_STOP, render_chat
from .common import Item, belongs, check_split
from .pools import cap, numbers, pool

CURRENCIES = ("EUR", "GBP", "JPY", "CHF", "SEK", "INR", "CAD", "AUD")
LANGUAGES = ("French", "Spanish", "German", "Italian", "Dutch", "Polish", "Swedish", "Greek")

# name -> ([(parameter, value kind)], request templates)
TRAIN_TOOLS = {
    "get_weather": ([("city", "city")],
                    ["What is the weather in {city}?", "Will it rain in {city} today?"]),
    "book_hotel": ([("city", "city"), ("nights", "count")],
                   ["Book a hotel in {city} for {nights} nights.",
                    "I need a hotel room in {city} for {nights} nights."]),
    "send_email": ([("to", "person"), ("subject", "topic")],
                   ["Email {to} about the {subject}.", "Send {to} an email about the {subject}."]),
    "call_contact": ([("name", "person")], ["Call {name}.", "Phone {name} right now."]),
    "set_alarm": ([("time", "time")], ["Wake me up at {time}.", "Set an alarm for {time}."]),
    "play_music": ([("artist", "person")],
                   ["Play songs by {artist}.", "Put on some music by {artist}."]),
    "add_todo": ([("task", "topic")],
                 ["Add the {task} to my todo list.", "Put the {task} on my todo list."]),
    "order_food": ([("dish", "dish"), ("count", "count")],
                   ["Order {count} {dish} for delivery.", "I want {count} {dish} delivered."]),
    "convert_currency": ([("amount", "amount"), ("target", "currency")],
                         ["Convert {amount} dollars to {target}.",
                          "How much is {amount} dollars in {target}?"]),
    "translate_text": ([("text", "topic"), ("language", "language")],
                       ["Translate the word {text} into {language}.",
                        "How do you say {text} in {language}?"]),
    "find_restaurant": ([("city", "city"), ("dish", "dish")],
                        ["Find a {dish} restaurant in {city}.",
                         "Where can I eat {dish} in {city}?"]),
    "track_package": ([("code", "code")],
                      ["Where is my package {code}?", "Track the package {code}."]),
    "create_event": ([("title", "topic"), ("time", "time")],
                     ["Schedule the {title} at {time}.",
                      "Put the {title} in my calendar at {time}."]),
    "search_flights": ([("origin", "city"), ("destination", "city")],
                       ["Find flights from {origin} to {destination}.",
                        "Search for a flight from {origin} to {destination}."]),
    "read_news": ([("topic", "topic")],
                  ["Show me news about the {topic}.", "Read the latest news on the {topic}."]),
    "start_timer": ([("minutes", "count")],
                    ["Start a timer for {minutes} minutes.", "Time {minutes} minutes for me."]),
    "get_directions": ([("destination", "city")],
                       ["How do I get to {destination}?", "Give me directions to {destination}."]),
    "check_balance": ([("owner", "person")],
                      ["Check the account balance of {owner}.",
                       "What is the balance for {owner}?"]),
    "rent_car": ([("city", "city"), ("days", "count")],
                 ["Rent a car in {city} for {days} days.",
                  "I need a rental car in {city} for {days} days."]),
    "cancel_order": ([("code", "code")],
                     ["Cancel my order {code}.", "Please cancel the order {code}."]),
}
HELDOUT_TOOLS = {
    "rent_bike": ([("city", "city")], ["Rent a bike in {city}.", "I need a bike in {city}."]),
    "pay_bill": ([("payee", "person"), ("amount", "amount")],
                 ["Pay {payee} {amount} dollars.", "Pay the bill of {amount} dollars to {payee}."]),
    "feed_pet": ([("name", "person")], ["Feed my pet {name}.", "Time to feed {name}, my pet."]),
    "print_document": ([("title", "topic")],
                       ["Print the {title}.", "Print a copy of the {title}."]),
    "mute_chat": ([("person", "person")],
                  ["Mute the chat with {person}.", "Please mute my chat with {person}."]),
    "reserve_table": ([("city", "city"), ("guests", "count")],
                      ["Reserve a table for {guests} in {city}.",
                       "I want to reserve a table in {city} for {guests} people."]),
    "share_location": ([("person", "person")],
                       ["Share my location with {person}.", "Let {person} see my location."]),
    "lock_door": ([("time", "time")], ["Lock the door at {time}.", "Please lock the door at {time}."]),
}
N_LISTED = 4
SYSTEM_HEAD = "You can call these tools:"
SYSTEM_TAIL = "Reply with one tool call."


def _value(rng: random.Random, kind: str, split: str):
    if kind == "city":
        return cap(rng.choice(pool("tool_city", split)))
    if kind == "person":
        return cap(rng.choice(pool("tool_person", split)))
    if kind == "topic":
        return rng.choice(pool("tool_topic", split))
    if kind == "dish":
        return rng.choice(pool("tool_dish", split))
    if kind == "time":
        minutes = (0, 15, 30, 45) if split == "train" else (10, 20, 40, 50)
        return f"{rng.randint(5, 11)}:{rng.choice(minutes):02d}"
    if kind == "count":
        return rng.choice(numbers(2, 9, split))
    if kind == "amount":
        return rng.choice(numbers(10, 500, split))
    if kind == "code":
        return f"PK{rng.choice(numbers(1000, 9999, split))}"
    if kind == "currency":
        return rng.choice(CURRENCIES)
    if kind == "language":
        return rng.choice(LANGUAGES)
    raise ValueError(f"unknown value kind {kind!r}")


def render_call(name: str, args: dict) -> str:
    inner = ", ".join(f"{k}={v}" if isinstance(v, int) else f'{k}="{v}"' for k, v in args.items())
    return f"{name}({inner})"


def signature(name: str) -> str:
    params = (TRAIN_TOOLS | HELDOUT_TOOLS)[name][0]
    return f"{name}({', '.join(p for p, _ in params)})"


def call_item(rng: random.Random, split: str, unseen: bool | None = None) -> Item:
    """A request with N_LISTED listed tools; `unseen` asks for a held-out-only target tool."""
    check_split(split)
    names = sorted(TRAIN_TOOLS) if split == "train" else sorted(TRAIN_TOOLS | HELDOUT_TOOLS)
    if unseen is None:
        unseen = split == "heldout" and rng.random() < 0.5
    target = rng.choice(sorted(HELDOUT_TOOLS) if unseen else sorted(TRAIN_TOOLS))
    while True:
        listed = rng.sample([n for n in names if n != target], N_LISTED - 1)
        others = [n for n in listed if n[0] != target[0]]
        if others:
            break
    listed = listed + [target]
    rng.shuffle(listed)
    params, requests = (TRAIN_TOOLS | HELDOUT_TOOLS)[target]
    while True:
        args = {}
        for p, kind in params:
            v = _value(rng, kind, split)
            while v in args.values():
                v = _value(rng, kind, split)
            args[p] = v
        request = rng.choice(requests).format(**args)
        if belongs(request, split):
            break
    system = "\n".join([SYSTEM_HEAD, *(f"- {signature(n)}" for n in listed), SYSTEM_TAIL])
    wrong = others[0] + "("
    return Item(prompt=render_chat(system, request), answer=render_call(target, args),
                wrong=wrong, category="unseen_tool" if unseen else "seen_tool",
                stop=CHAT_STOP, meta={"tool": target, "args": args, "listed": listed})


def sample(rng: random.Random, split: str, category: str | None = None) -> Item:
    unseen = None if category is None else category == "unseen_tool"
    return call_item(rng, split, unseen)


def corpus_text(rng: random.Random, split: str) -> str:
    item = call_item(rng, split)
    return item.prompt + item.answer + CHAT_STOP + "\n"


def heldout_entities() -> set[str]:
    return set(HELDOUT_TOOLS)  # requests are new combinations of shared names, topics, dishes
