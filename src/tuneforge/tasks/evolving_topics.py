"""Demo task for continual learning: route support tickets while the product line evolves.

A company's support desk routes each ticket to the team that owns the product it
is about. The scenario runs over three quarters, the stages ``q1``, ``q2`` and
``q3``. Each quarter the company sells six new products (invented names such as
"Zorvik kettle", so the base model cannot know them) and the organisation grows
three new teams that own them, two products per team::

    q1: atlas, boreal, cinder     q2: delta, ember, fjord     q3: garnet, harbor, indigo

A row is a short ticket behind a fixed instruction, and the routing answer::

    {"prompt": "Route this support ticket. Answer with the team.\\nTicket: Order #40871: I was
      charged twice for my Zorvik kettle. Sent from my phone.", "completion": "team: atlas"}

(wrapped here; the real prompt has one newline.)

The answer depends on the product alone: the issue (won't turn on, charged twice,
shipping delayed, ...), the customer's name, the order number and the irrelevant
details are distractors. Later quarters contradict nothing (an old product keeps
its team) but an early quarter's products stop appearing later, and every
quarter's answers name teams that did not exist before, so training on q2 alone
pulls a model's answers for q1 tickets towards q2's teams: naive sequential
fine-tuning forgets, which is what the continual-learning strategies are measured
against.

The held-out split of each quarter asks about the same six products in phrasings
training never shows: other ticket layouts, other wordings of each issue, other
customer names and other irrelevant details, so a good score needs the
product -> team mapping, not recall of training tickets.

``general.jsonl`` is a small general-domain text set (invented towns and rivers,
the seasons, cooking), not support tickets, for held-out perplexity as the
measure of general ability lost along the way.

Examples are short on purpose (about 60 tokens each with the SmolLM2 chat
template): a stage trains in a couple of minutes on a 2-core CPU.

Everything is drawn from a seeded ``random.Random``: same seed, same bytes.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

STAGES: tuple[str, ...] = ("q1", "q2", "q3")
INSTRUCTION = "Route this support ticket. Answer with the team.\nTicket: "
TRAIN_PER_STAGE, EVAL_PER_STAGE, N_GENERAL, SEED = 160, 24, 40, 0

TEAMS: dict[str, tuple[str, ...]] = {
    "q1": ("atlas", "boreal", "cinder"),
    "q2": ("delta", "ember", "fjord"),
    "q3": ("garnet", "harbor", "indigo"),
}

# Product -> team, per quarter: made-up brand words (no real brand, no shared sub-word
# with another quarter's brands) on everyday product nouns; two products per team, and
# no product noun tells the team.
PRODUCTS: dict[str, dict[str, str]] = {
    "q1": {
        "Zorvik kettle": "atlas",
        "Plumetra headset": "atlas",
        "Quendari router": "boreal",
        "Vashtel blender": "boreal",
        "Ombrisk scooter": "cinder",
        "Kelvaro lamp": "cinder",
    },
    "q2": {
        "Trundex camera": "delta",
        "Fiorelle speaker": "delta",
        "Glimstead heater": "ember",
        "Haxbury watch": "ember",
        "Nuvolar drone": "fjord",
        "Brisquet toaster": "fjord",
    },
    "q3": {
        "Yrrelion tablet": "garnet",
        "Corvessa vacuum": "garnet",
        "Dambrix printer": "harbor",
        "Wexmoor charger": "harbor",
        "Saltivo fan": "indigo",
        "Jopplin keyboard": "indigo",
    },
}

# Issue types, each in three wordings: the first two in training, the third held out.
_ISSUES: tuple[tuple[str, str, str], ...] = (
    ("My {p} won't turn on.", "The {p} does not power up at all.", "I can't get the {p} to switch on."),
    (
        "I was charged twice for my {p}.",
        "My card was billed two times for the {p}.",
        "There's a double charge for the {p} on my statement.",
    ),
    (
        "My {p} still hasn't shipped.",
        "The {p} I ordered is late, the tracking hasn't moved.",
        "Delivery of my {p} is a week overdue.",
    ),
    ("The {p} arrived broken.", "My {p} came damaged in the box.", "The {p} was cracked when I opened it."),
    ("I want to return my {p}.", "How do I send the {p} back for a refund?", "Please start a return for the {p}."),
    ("My {p} keeps shutting off.", "The {p} turns itself off after a minute.", "The {p} randomly dies mid-use."),
    ("The {p} is missing a part.", "My {p} came without the charger.", "A piece of the {p} was not in the package."),
    ("The {p} makes a loud noise.", "My {p} rattles and buzzes.", "There's a grinding sound from the {p}."),
    (
        "I never got a refund for the {p}.",
        "My refund for the {p} hasn't arrived.",
        "Still waiting on the money back for my {p}.",
    ),
    ("The app won't pair with my {p}.", "My phone can't connect to the {p}.", "Bluetooth doesn't find the {p}."),
)

# Ticket layouts: {i} the issue, {n} a name, {o} an order number, {x} an irrelevant detail
# (may be empty) and {g} a greeting.
_TRAIN_LAYOUTS = (
    "{g} {i} {x}Order {o}.",
    "Order #{o}: {i} {x}",
    "{i} {x}Thanks, {n}",
    "{g} {n} here. {i} {x}",
    "{i} Order number {o}. {x}",
    "From {n}: {i} {x}Please help.",
)
_HELD_OUT_LAYOUTS = (
    "Customer {n} (ref {o}) writes: {i} {x}",
    "URGENT: {i} {x}Kind regards, {n}.",
    "Re: case {o}. {i} {x}",
)
_TRAIN_GREETINGS = ("Hi,", "Hello,", "Hey,", "Hi there,")
_TRAIN_NAMES = ("Maria", "Tom", "Priya", "Lukas", "Aisha", "Ben", "Chen", "Sofia", "Omar", "Julia")
_HELD_OUT_NAMES = ("Ravi", "Elena", "Marcus", "Yuki", "Fatima", "Dario")
_TRAIN_EXTRAS = (
    "Sent from my phone. ",
    "I bought it last month. ",
    "It was a gift. ",
    "I've been a customer for years. ",
    "This is my second message. ",
    "I live in Leeds. ",
)
_HELD_OUT_EXTRAS = ("Writing from work. ", "My sister has the same one. ", "Already tried restarting. ")


def _ticket(rng: random.Random, product: str, held_out: bool) -> tuple[str, int, int]:
    """A ticket about ``product``: (text, layout index, issue index)."""
    layouts = _HELD_OUT_LAYOUTS if held_out else _TRAIN_LAYOUTS
    layout = rng.randrange(len(layouts))
    issue = rng.randrange(len(_ISSUES))
    wording = _ISSUES[issue][2] if held_out else _ISSUES[issue][rng.randrange(2)]
    extras = _HELD_OUT_EXTRAS if held_out else _TRAIN_EXTRAS
    extra = rng.choice(extras) if rng.random() < 0.5 else ""
    text = layouts[layout].format(
        g=rng.choice(_TRAIN_GREETINGS),
        i=wording.format(p=product),
        n=rng.choice(_HELD_OUT_NAMES if held_out else _TRAIN_NAMES),
        o=rng.randint(10000, 99999),
        x=extra,
    )
    return text.strip(), layout, issue


def _example(rng: random.Random, stage: str, product: str, held_out: bool) -> dict:
    team = PRODUCTS[stage][product]
    ticket, layout, issue = _ticket(rng, product, held_out)
    return {
        "stage": stage,
        "product": product,
        "team": team,
        "issue": issue,
        "layout": layout,
        "held_out": held_out,
        "ticket": ticket,
        "prompt": INSTRUCTION + ticket,
        "completion": f"team: {team}",
    }


def generate_stage(stage: str, n: int, *, seed: int = SEED, held_out: bool = False) -> list[dict]:
    """``n`` examples of one quarter with distinct tickets, products in turn (balanced).

    ``held_out=True`` draws from the held-out layouts, wordings, names and details,
    from its own random stream; such tickets can never equal a training ticket.
    """
    if stage not in PRODUCTS:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    rng = random.Random(f"{'held-out' if held_out else 'train'}:{stage}:{seed}")
    products = list(PRODUCTS[stage])
    out: list[dict] = []
    seen: set[str] = set()
    for _ in range(50 * n + 100):  # guard: the space is large, but never loop forever
        if len(out) == n:
            rng.shuffle(out)
            return out
        example = _example(rng, stage, products[len(out) % len(products)], held_out)
        if example["ticket"] not in seen:
            seen.add(example["ticket"])
            out.append(example)
    raise RuntimeError(f"could only draw {len(out)} distinct tickets of the {n} asked for")


# ---------------------------------------------------------------------------- general text

_SYLLABLES = (
    "bar",
    "cal",
    "den",
    "fal",
    "gor",
    "hal",
    "kir",
    "lan",
    "mor",
    "nes",
    "por",
    "ros",
    "sel",
    "tam",
    "vel",
    "wen",
    "ash",
    "brin",
    "dor",
    "ely",
)
_ENDINGS = ("ford", "ton", "by", "wick", "stead", "holm", "mouth", "dale")
_INDUSTRIES = ("wool", "pottery", "fishing", "timber", "cider", "salt", "lace", "barley")
_SIGHTS = (
    "a stone bridge",
    "an old market hall",
    "a clock tower",
    "a small harbour",
    "a ruined abbey",
    "a windmill",
    "a botanical garden",
    "a covered market",
)
_SEASONS = {
    "spring": ("the days grow longer", "fruit trees blossom", "farmers sow their crops", "lambs are born"),
    "summer": ("the sun stays up late", "fields turn golden", "rivers run low", "many people travel"),
    "autumn": ("leaves change colour", "apples are harvested", "the first frosts arrive", "birds fly south"),
    "winter": ("the nights are long", "lakes may freeze", "animals hibernate", "snow covers high ground"),
}
_DISHES = (
    ("bread", "flour, water, yeast and salt", "left to rise for an hour", "baked until golden"),
    ("vegetable soup", "onions, carrots, celery and stock", "simmered for forty minutes", "served hot"),
    ("pancakes", "flour, eggs and milk", "whisked into a smooth batter", "fried in a little butter"),
    ("risotto", "rice, stock, onion and cheese", "stirred while the stock is added slowly", "served at once"),
    ("lentil stew", "lentils, tomatoes, garlic and cumin", "cooked gently until soft", "eaten with bread"),
    ("apple crumble", "apples, flour, butter and sugar", "topped with a rubbed crumb", "baked until bubbling"),
    ("omelette", "eggs, butter and herbs", "cooked quickly in a hot pan", "folded before serving"),
    ("rice pudding", "rice, milk and sugar", "baked slowly in a low oven", "served warm or cold"),
)


def _place_name(rng: random.Random) -> str:
    return (rng.choice(_SYLLABLES) + rng.choice(_SYLLABLES + ("",)) + rng.choice(_ENDINGS)).capitalize()


def _river_name(rng: random.Random) -> str:
    return "River " + (rng.choice(_SYLLABLES) + rng.choice(("e", "a", "on", "ey", "in"))).capitalize()


def _town(rng: random.Random) -> str:
    town, river = _place_name(rng), _river_name(rng)
    people, year = rng.randrange(2, 60) * 1000, rng.randrange(900, 1700)
    industry, sight = rng.choice(_INDUSTRIES), rng.choice(_SIGHTS)
    return (
        f"{town} is a market town on the {river}, with about {people:,} inhabitants. "
        f"It was first recorded in {year} and grew rich on the {industry} trade. "
        f"Visitors come to see {sight} near the town centre."
    )


def _river(rng: random.Random) -> str:
    river, source, mouth = _river_name(rng), _place_name(rng), _place_name(rng)
    length = rng.randrange(20, 300)
    fish = rng.choice(("trout", "salmon", "eels", "perch", "pike"))
    return (
        f"The {river} rises in the hills above {source} and flows for {length} kilometres "
        f"before reaching the sea at {mouth}. Its clear upper waters are known for {fish}, "
        f"and its lower valley floods in most wet winters."
    )


def _season(rng: random.Random) -> str:
    season = rng.choice(tuple(_SEASONS))
    first, second, third = rng.sample(_SEASONS[season], 3)
    return (
        f"In {season}, {first} and {second}. "
        f"In many temperate regions it is also the time when {third}. "
        f"Weather in {season} varies from year to year."
    )


def _recipe(rng: random.Random) -> str:
    dish, ingredients, method, finish = rng.choice(_DISHES)
    minutes = rng.randrange(2, 9) * 5
    return (
        f"A simple {dish} needs {ingredients}. The mixture is {method} and then {finish}. "
        f"Most cooks say it takes about {minutes} minutes of work, and it keeps for a day or two."
    )


def generate_general(n: int = N_GENERAL, *, seed: int = SEED) -> list[str]:
    """``n`` distinct short encyclopedic paragraphs, the four kinds in turn."""
    rng = random.Random(f"general:{seed}")
    kinds = (_town, _river, _season, _recipe)
    out: list[str] = []
    for _ in range(50 * n + 100):
        if len(out) == n:
            return out
        text = kinds[len(out) % len(kinds)](rng)
        if text not in out:
            out.append(text)
    raise RuntimeError(f"could only draw {len(out)} distinct paragraphs of the {n} asked for")


# ---------------------------------------------------------------------------- files


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def write_task_files(
    folder: Path,
    *,
    train_per_stage: int = TRAIN_PER_STAGE,
    eval_per_stage: int = EVAL_PER_STAGE,
    n_general: int = N_GENERAL,
    seed: int = SEED,
) -> dict[str, Path]:
    """Write ``<stage>_train.jsonl`` / ``<stage>_eval.jsonl`` (prompt_completion) and
    ``general.jsonl`` (text) under ``folder``; return ``{"q1_train": path, ..., "general": path}``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for stage in STAGES:
        for split, held_out, n in (("train", False, train_per_stage), ("eval", True, eval_per_stage)):
            rows = [
                {"prompt": ex["prompt"], "completion": ex["completion"]}
                for ex in generate_stage(stage, n, seed=seed, held_out=held_out)
            ]
            paths[f"{stage}_{split}"] = folder / f"{stage}_{split}.jsonl"
            _write_jsonl(paths[f"{stage}_{split}"], rows)
    paths["general"] = folder / "general.jsonl"
    _write_jsonl(paths["general"], [{"text": text} for text in generate_general(n_general, seed=seed)])
    return paths


def describe() -> str:
    example = generate_stage("q1", 1)[0]
    teams = "; ".join(f"{stage}: {', '.join(TEAMS[stage])}" for stage in STAGES)
    return (
        "evolving-topics: route support tickets to teams while the product line changes each quarter.\n"
        f"Stages: {', '.join(STAGES)}; {len(PRODUCTS['q1'])} new products and 3 new teams per quarter "
        f"({teams}).\nMetric: exact match on each quarter's held-out tickets; "
        "general.jsonl for held-out perplexity.\n"
        f"Example ticket: {example['ticket']}\n"
        f"Target: {example['completion']}"
    )
