"""Demo task: answer a request by calling the right one of five tools with the right arguments.

Each row is an OpenAI-style chat row with ``tools`` (three of the five function
schemas, in a shuffled order, the one to call among them) and the assistant's call::

    {"tools": [...], "messages": [
        {"role": "user", "content": "How warm is it in Porto right now, in fahrenheit?"},
        {"role": "assistant", "tool_calls": [{"type": "function", "function":
            {"name": "get_weather", "arguments": {"city": "Porto", "unit": "fahrenheit"}}}]}]}

The tools: ``get_weather`` (city, optional unit), ``convert_units`` (value, from / to
unit), ``convert_currency`` (amount, from / to currency), ``create_event`` (title,
ISO date, optional 24-hour time) and ``set_timer`` (minutes, optional label).
A request names its entities in words the call must normalise: "kilometres" → ``km``,
"yen" → ``JPY``, "May 3, 2026" → ``2026-05-03``, "in °F" → ``fahrenheit``.

Training rows teach the format: a quarter go on past the call (the tool's result, then
the assistant's answer from it) and one in ten needs no tool (a plain answer, no
call). The dev and test splits are single calls only, and each split has its **own
phrasings and its own entities** (cities, event titles, timer labels): no dev or
test request uses a sentence frame or an entity of training, and dev and test share
none either, so held-out call accuracy measures generalisation, not recall. Settings
are tuned on dev; test is scored only by bench/tool_calling.py.

Everything is drawn from seeded ``random.Random`` objects: same seed, same bytes.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

SIZES = {"train": 320, "dev": 60, "test": 100}
SEED = 0
TOOLS_PER_ROW = 3  # of the five, shuffled: short prompts, and the right tool is not always in the same place
SPLITS = ("train", "dev", "test")

_UNITS = ["km", "mi", "kg", "lb", "l", "gal"]
_CURRENCIES = ["USD", "EUR", "GBP", "JPY", "CHF"]
TOOLS: list[dict] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "convert_units",
            "description": "Convert a length, weight or volume.",
            "parameters": {
                "type": "object",
                "properties": {
                    "value": {"type": "number"},
                    "from_unit": {"type": "string", "enum": _UNITS},
                    "to_unit": {"type": "string", "enum": _UNITS},
                },
                "required": ["value", "from_unit", "to_unit"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "convert_currency",
            "description": "Convert money at today's rate.",
            "parameters": {
                "type": "object",
                "properties": {
                    "amount": {"type": "number"},
                    "from_currency": {"type": "string", "enum": _CURRENCIES},
                    "to_currency": {"type": "string", "enum": _CURRENCIES},
                },
                "required": ["amount", "from_currency", "to_currency"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "create_event",
            "description": "Add an event to the calendar.",
            "parameters": {
                "type": "object",
                "properties": {
                    "title": {"type": "string"},
                    "date": {"type": "string", "description": "YYYY-MM-DD"},
                    "time": {"type": "string", "description": "HH:MM"},
                },
                "required": ["title", "date"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "set_timer",
            "description": "Start a countdown timer.",
            "parameters": {
                "type": "object",
                "properties": {"minutes": {"type": "integer"}, "label": {"type": "string"}},
                "required": ["minutes"],
                "additionalProperties": False,
            },
        },
    },
]

# Entities: one pool per split, disjoint.
CITIES = {
    "train": "Lisbon|Madrid|Berlin|Vienna|Prague|Warsaw|Dublin|Oslo|Helsinki|Athens|Cairo|Nairobi|Lagos|Toronto|"
    "Chicago|Denver|Seattle|Boston|Austin|Miami|Lima|Bogota|Santiago|Quito|Havana|Tokyo|Osaka|Seoul|Manila|Hanoi|"
    "Jakarta|Delhi|Mumbai|Dubai|Doha|Perth|Sydney|Auckland|Zurich|Munich",
    "dev": "Porto|Seville|Hamburg|Krakow|Riga|Tallinn|Tunis|Accra|Calgary|Phoenix|Montevideo|Busan|Kyoto|Taipei",
    "test": "Valencia|Lyon|Bergen|Gdansk|Vilnius|Malmo|Dakar|Kigali|Ottawa|Portland|Nashville|Cusco|Medellin|"
    "Sapporo|Chennai|Muscat|Hobart|Wellington|Geneva|Salzburg|Bruges|Split|Bologna",
}
TITLES = {
    "train": "Dentist|Team standup|Yoga class|Piano lesson|Budget review|Lunch with Sam|Car service|Book club|"
    "Parent meeting|Haircut|Flight to Rome|Guitar practice|Project kickoff|Vet appointment|Dinner with Alex|"
    "Quarterly planning|Gym session|Doctor visit|Birthday party|Job interview|Coffee with Mia|Code review",
    "dev": "Eye exam|Board meeting|Swim practice|Tax advisor|Movie night|Sprint demo",
    "test": "Physio session|Client call|Pottery workshop|Wedding rehearsal|Chess club|Design review|"
    "Dinner with Priya|Passport renewal|Bike repair|Language class",
}
TIMER_LABELS = {
    "train": "pasta|laundry|tea|eggs|pizza|break|rice|bread",
    "dev": "cookies|nap",
    "test": "soup|oatmeal|workout|cake",
}
_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
# Words a request may use for each enum value.
_UNIT_WORDS = {
    "km": ["km", "kilometers", "kilometres"],
    "mi": ["miles", "mi"],
    "kg": ["kg", "kilograms", "kilos"],
    "lb": ["pounds", "lbs", "lb"],
    "l": ["liters", "litres", "l"],
    "gal": ["gallons", "gal"],
}
_UNIT_PAIRS = [("km", "mi"), ("mi", "km"), ("kg", "lb"), ("lb", "kg"), ("l", "gal"), ("gal", "l")]
_CURRENCY_WORDS = {
    "USD": ["US dollars", "dollars", "USD"],
    "EUR": ["euros", "EUR"],
    "GBP": ["British pounds", "sterling", "GBP"],
    "JPY": ["yen", "Japanese yen", "JPY"],
    "CHF": ["Swiss francs", "CHF"],
}
_TEMP_WORDS = {"celsius": ["in celsius", "in °C", "in C"], "fahrenheit": ["in fahrenheit", "in °F", "in F"]}

# Sentence frames: one pool per split, disjoint. {unit} is " in fahrenheit" or "" (weather).
FRAMES: dict[str, dict[str, list[str]]] = {
    "get_weather": {
        "train": [
            "What's the weather in {city}{unit}?",
            "How's the weather in {city} today{unit}?",
            "Weather for {city}{unit}, please.",
            "Is it cold in {city} right now{unit}?",
            "Tell me the current weather in {city}{unit}.",
            "Check the weather in {city}{unit}.",
            "what is it like outside in {city}{unit}",
            "Give me the temperature in {city}{unit}.",
        ],
        "dev": ["Any idea how hot it is in {city}{unit}?", "Current conditions in {city}{unit}?"],
        "test": [
            "How warm is it in {city} right now{unit}?",
            "I'm heading to {city}, what's the weather doing there{unit}?",
            "Could you look up the weather in {city}{unit}?",
        ],
    },
    "convert_units": {
        "train": [
            "Convert {value} {from} to {to}.",
            "How many {to} is {value} {from}?",
            "What is {value} {from} in {to}?",
            "{value} {from} to {to}, please.",
            "Please turn {value} {from} into {to}.",
            "how much is {value} {from} in {to}",
        ],
        "dev": ["Express {value} {from} in {to}.", "I need {value} {from} converted to {to}."],
        "test": [
            "Could you tell me what {value} {from} comes to in {to}?",
            "Change {value} {from} over to {to}.",
            "If I have {value} {from}, how much is that in {to}?",
        ],
    },
    "convert_currency": {
        "train": [
            "Convert {value} {from} to {to}.",
            "How much is {value} {from} in {to}?",
            "What are {value} {from} worth in {to}?",
            "Exchange {value} {from} into {to}.",
            "{value} {from} in {to}?",
            "how many {to} do I get for {value} {from}",
        ],
        "dev": ["Change {value} {from} into {to} for me.", "What's {value} {from} in {to} today?"],
        "test": [
            "I want to swap {value} {from} for {to}, how much would that be?",
            "Please work out {value} {from} in {to}.",
            "At today's rate, {value} {from} equals how many {to}?",
        ],
    },
    "create_event": {
        "train": [
            "Add {title} to my calendar on {date}{time}.",
            "Schedule {title} on {date}{time}.",
            "Put {title} in my calendar for {date}{time}.",
            "Create an event called {title} on {date}{time}.",
            "Book {title} for {date}{time}.",
            "new calendar entry: {title}, {date}{time}",
        ],
        "dev": ["Remember {title} on {date}{time} in my calendar.", "Set up {title} for {date}{time}."],
        "test": [
            "Can you pencil in {title} on {date}{time}?",
            "I have {title} on {date}{time}, please save it to my calendar.",
            "Make a calendar event named {title} for {date}{time}.",
        ],
    },
    "set_timer": {
        "train": [
            "Set a timer for {minutes} minutes{label}.",
            "Start a {minutes} minute timer{label}.",
            "Timer for {minutes} minutes{label}, please.",
            "Count down {minutes} minutes{label}.",
            "remind me in {minutes} minutes{label}",
        ],
        "dev": ["Give me a {minutes}-minute countdown{label}.", "Time {minutes} minutes for me{label}."],
        "test": [
            "Can you start a countdown of {minutes} minutes{label}?",
            "Let me know when {minutes} minutes are up{label}.",
            "I need a timer running for {minutes} minutes{label}.",
        ],
    },
}
_NO_TOOL = [
    ("Tell me a joke about cats.", "Why did the cat sit on the computer? To keep an eye on the mouse!"),
    ("What is the capital of France?", "The capital of France is Paris."),
    ("Hi there!", "Hello! How can I help you today?"),
    ("Thanks, that's all.", "You're welcome! Have a great day."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote Romeo and Juliet."),
    ("What is 7 times 8?", "7 times 8 is 56."),
    ("Give me a synonym for happy.", "A synonym for happy is cheerful."),
    ("Can you recommend a good book?", "Try 'The Little Prince' by Antoine de Saint-Exupery."),
]


def _pool(text: str) -> list[str]:
    return text.split("|")


def _number(rng: random.Random) -> int | float:
    return rng.choice([rng.randint(2, 500), rng.randint(2, 99) + rng.choice([0.5, 0.25, 0.75])])


def _request(rng: random.Random, tool: str, split: str) -> tuple[str, dict]:
    """One request of ``split``'s own frames and entities, and the arguments its call needs."""
    frame = rng.choice(FRAMES[tool][split])
    if tool == "get_weather":
        city = rng.choice(_pool(CITIES[split]))
        unit = rng.choice([None, None, "celsius", "fahrenheit"])
        text = frame.format(city=city, unit=f" {rng.choice(_TEMP_WORDS[unit])}" if unit else "")
        return text, {"city": city} | ({"unit": unit} if unit else {})
    if tool in ("convert_units", "convert_currency"):
        if tool == "convert_units":
            a, b = rng.choice(_UNIT_PAIRS)
            words = _UNIT_WORDS
        else:
            a, b = rng.sample(_CURRENCIES, 2)
            words = _CURRENCY_WORDS
        value = _number(rng)
        text = frame.format(value=value, **{"from": rng.choice(words[a]), "to": rng.choice(words[b])})
        keys = (
            ("value", "from_unit", "to_unit") if tool == "convert_units" else ("amount", "from_currency", "to_currency")
        )
        return text, dict(zip(keys, (value, a, b)))
    if tool == "create_event":
        title = rng.choice(_pool(TITLES[split]))
        year, month, day = rng.choice([2026, 2027]), rng.randint(1, 12), rng.randint(1, 28)
        said = rng.choice(
            [
                f"{year}-{month:02d}-{day:02d}",
                f"{_MONTHS[month - 1]} {day}, {year}",
                f"{day} {_MONTHS[month - 1]} {year}",
            ]
        )
        hour, minute = rng.randint(7, 21), rng.choice([0, 15, 30, 45])
        time = rng.choice([None, f"{hour:02d}:{minute:02d}"])
        text = frame.format(title=title, date=said, time=f" at {time}" if time else "")
        return text, {"title": title, "date": f"{year}-{month:02d}-{day:02d}"} | ({"time": time} if time else {})
    minutes = rng.choice([rng.randint(1, 15), rng.randint(16, 90)])
    label = rng.choice([None, rng.choice(_pool(TIMER_LABELS[split]))])
    text = frame.format(minutes=minutes, label=f" for the {label}" if label else "")
    return text, {"minutes": minutes} | ({"label": label} if label else {})


def _result_and_answer(rng: random.Random, tool: str, args: dict) -> tuple[dict, str]:
    """What the tool returns and the assistant's answer from it (training rows that go on)."""
    if tool == "get_weather":
        unit = args.get("unit", "celsius")
        temp = rng.randint(-5, 35) if unit == "celsius" else rng.randint(25, 95)
        sky = rng.choice(["sunny", "cloudy", "raining", "windy"])
        symbol = "°C" if unit == "celsius" else "°F"
        return {
            "temperature": temp,
            "unit": unit,
            "conditions": sky,
        }, f"It's {temp}{symbol} and {sky} in {args['city']}."
    if tool in ("convert_units", "convert_currency"):
        value, a, b = args.values()
        result = round(value * rng.uniform(0.3, 3.0), 2)
        return {"result": result}, f"{value} {a} is {result} {b}."
    if tool == "create_event":
        when = args["date"] + (f" at {args['time']}" if "time" in args else "")
        return {"status": "created"}, f"Done: {args['title']} is in your calendar for {when}."
    return {"status": "started"}, f"Your {args['minutes']}-minute timer is running."


def _row(rng: random.Random, split: str) -> dict:
    tools = rng.sample(TOOLS, TOOLS_PER_ROW)  # a shuffled subset: the model has to read the list
    if split == "train" and rng.random() < 0.1:
        question, answer = rng.choice(_NO_TOOL)
        return {
            "tools": tools,
            "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
        }
    tool = rng.choice(tools)["function"]["name"]
    text, args = _request(rng, tool, split)
    call = {"type": "function", "function": {"name": tool, "arguments": args}}
    messages = [{"role": "user", "content": text}, {"role": "assistant", "tool_calls": [call]}]
    if split == "train" and rng.random() < 0.25:
        result, answer = _result_and_answer(rng, tool, args)
        messages += [{"role": "tool", "content": json.dumps(result)}, {"role": "assistant", "content": answer}]
    return {"tools": tools, "messages": messages}


def make_splits(seed: int = SEED, sizes: dict[str, int] | None = None) -> dict[str, list[dict]]:
    """``{"train", "dev", "test"}`` rows; each split from its own frames and entities (module docstring)."""
    sizes = sizes or SIZES
    return {split: [_row(random.Random(f"{split}:{seed}:{i}"), split) for i in range(sizes[split])] for split in SPLITS}


def write_task_files(out_dir: Path, *, seed: int = SEED, sizes: dict[str, int] | None = None) -> dict[str, Path]:
    """Write ``train.jsonl``, ``dev.jsonl`` and ``test.jsonl`` under ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, rows in make_splits(seed, sizes).items():
        paths[split] = out_dir / f"{split}.jsonl"
        paths[split].write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return paths


def describe() -> str:
    """One line for users."""
    return (
        "tool_calling: call one of five tools (weather, units, currency, calendar, timer) with the right "
        f"arguments; {SIZES['train']} train / {SIZES['dev']} dev / {SIZES['test']} test rows, dev and test with "
        "unseen phrasings and entities; metric: tool_call_accuracy."
    )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tuneforge.tasks.tool_calling OUTDIR")
    for split, path in write_task_files(Path(sys.argv[1])).items():
        print(f"{split}: {path}")
