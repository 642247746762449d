"""Demo task: label a social-media comment ``negative``, ``neutral`` or ``positive``.

Each row is a short synthetic comment and its label::

    {"text": "ngl the flavor was unreal, this place is fire!! 🔥🔥 #foodie", "label": "positive"}

This is the text-classification demo. A small model with a classification head,
fine-tuned on the 960 training comments, should score a held-out macro-F1 above 0.90,
and a small instruct model prompted zero-shot clearly less, because the comments are
built around what defeats keyword matching:

* slang ("ngl", "lowkey", "fr", "mid", "bussin", "W", "L"), emoji, hashtags,
  @mentions, mixed casing, loose punctuation and the odd typo;
* negation both ways ("not bad at all" -> positive, "wasn't great" -> negative);
* sarcasm, always with a marker a careful reader relies on ("/s", "yeah right",
  "oh great, another ...", "love waiting 2 hours 🙄");
* mixed comments whose verdict settles them ("screen is nice but ..., returning it");
* neutral questions, plans and announcements, some with loaded words ("is it
  actually good or just hype?", "not sure yet how I feel about it").

Comments are templates (each with one label and one phenomenon) filled with phrases
from seven topics: phones, restaurants, games, shows, airlines, sports, a delivery app.
The template fixes the label and no filler can flip it, so the text alone always
determines the label: there is no label noise. Labels are balanced by construction.
The held-out split never repeats a training comment (even up to case, punctuation and
emoji), and half of it uses (template, topic) pairs that training never sees: the same
phenomena in new combinations, so a good score needs more than recall.

Everything is drawn from a seeded ``random.Random``: same seed, same bytes.
"""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

LABELS: tuple[str, ...] = ("negative", "neutral", "positive")
TRAIN_SIZE, EVAL_SIZE, SEED = 960, 240, 0
NOVEL_SHARE = 0.5  # share of the held-out split drawn from (template, topic) pairs unseen in training
MIN_WORDS, MAX_WORDS = 8, 40


def _topic(**fields: str) -> dict[str, tuple[str, ...]]:
    fields.setdefault("qthing", fields["thing"])  # what a neutral comment asks about
    return {key: tuple(part.strip() for part in value.split("|")) for key, value in fields.items()}


# Slot fillers per topic. pos/neg: clauses that carry the sentiment; plus/minor: a mild upside or
# downside that a mixed comment outweighs; pres/nres: the verdict that settles it (with the
# shared ones below); wait: a plainly bad experience, as a gerund (the sarcasm slot);
# another: a plainly unwelcome thing; nq/nf: neutral questions and facts.
_TOPICS: dict[str, dict[str, tuple[str, ...]]] = {
    "phones": _topic(
        thing="this phone|my new phone|the new flagship|the budget model|the new model",
        did="got",
        doing="setting up",
        qthing="the new flagship|the budget model|the new model|the foldable",
        cat="phone",
        at="@Google|@Apple|@SamsungMobile|@OnePlus",
        tag="#tech|#techtwitter|#smartphone|#gadgets",
        pos="the battery lasts two full days|the camera is insane at night|the screen is gorgeous|"
        "it charges crazy fast|face unlock works every single time|the speakers are way louder than my old one",
        neg="the battery dies by lunch|it overheats just opening the camera|the screen cracked after one drop|"
        "it restarts on its own every night|calls keep dropping|the update broke the wifi",
        plus="the screen is nice|the camera is decent|it looks sleek|the speakers are fine",
        minor="it's a bit heavy|the charger is sold separately|the colors are kinda boring|setup took forever",
        fails="hold a charge|make a normal phone call|take a clear photo",
        wait="watching my phone reboot in the middle of a call|paying $1000 for a phone that dies by noon|"
        "being on hold with support for an hour|restarting my phone five times a day",
        another="update that breaks the wifi|phone with no charger in the box|$1200 phone that looks like the last one",
        pres="keeping it|not going back to my old one",
        nres="returning it tomorrow|going back to my old one",
        nq="anyone know when the update drops?|is 128gb enough or should I get 256?|"
        "what case are you all using for it?|does it come with a charger in the box?",
        nf="ordered the new one, arrives thursday|switching from android next week|"
        "the launch event is at 10am pacific tomorrow|preorders open friday",
    ),
    "food": _topic(
        thing="this place|their new burger|the spicy chicken sandwich|the late night menu|the new location",
        did="tried",
        doing="trying",
        cat="restaurant",
        at="@Chipotle|@tacobell|@Wendys|@dominos",
        tag="#foodie|#foodtok|#fastfood|#lunch",
        pos="the flavor was unreal|the fries were crispy and hot|the portions are huge|the staff were super sweet|"
        "every single bite was perfect|the sauce is bussin",
        neg="the chicken was raw in the middle|the fries were cold and soggy|we waited an hour for a table|"
        "the waiter ignored us all night|my order was completely wrong|it gave me food poisoning",
        plus="the decor is cute|the drinks were fine|the location is convenient|the music was nice",
        minor="it's a bit pricey|parking is a nightmare|the line was long|it's kinda loud inside",
        fails="get a simple order right|serve the food hot|keep the tables clean",
        wait="waiting 2 hours for a table|paying $18 for cold fries|finding a hair in my soup|"
        "getting the wrong order for the third time",
        another="$20 sandwich with three fries on the side|shrinkflation burger|45 minute wait for a table",
        pres="going back next week|already planning my next visit",
        nres="not going back|never eating there again",
        nq="what time do they close on sundays?|is there anything vegan on the menu?|"
        "do they take reservations or is it walk in only?|is it cash only?",
        nf="they open a second location next month|booked a table for my sister's birthday saturday|"
        "the menu changes every season|they're closed for renovations until the 12th",
    ),
    "games": _topic(
        thing="this game|the new season|the dlc|the new update|the remake",
        did="played",
        doing="starting",
        cat="game",
        at="@PlayStation|@Xbox|@NintendoAmerica|@EpicGames",
        tag="#gaming|#gamer|#videogames|#ps5",
        pos="the combat feels so smooth|the soundtrack goes crazy|the open world is gorgeous|"
        "the story had me hooked all weekend|it runs at a solid 60fps|the boss fights are peak",
        neg="it crashes every twenty minutes|the servers are down again|matchmaking takes forever|"
        "the story makes zero sense|it runs at like 15fps|they locked half the game behind a paywall",
        plus="the graphics are pretty|the soundtrack is decent|the character creator is fun|the map looks nice",
        minor="the tutorial drags a bit|the menus are clunky|the first hour is slow|the install is huge",
        fails="load past the main menu|save my progress|keep me connected for one match",
        wait="downloading a 60gb day one patch|getting disconnected mid match|paying $70 for a beta|"
        "losing my save file",
        another="battle pass|$70 game that ships broken|delay|remaster nobody asked for",
        pres="already 40 hours in|game of the year for me",
        nres="refunded|uninstalling it",
        nq="anyone know if it's coming to switch?|what difficulty are you all playing on?|"
        "is co-op split screen or online only?|how long is the main story?",
        nf="patch notes drop tomorrow at 9|preloaded it, launches friday at midnight|"
        "the dlc gets announced next week|servers go down for maintenance at 2am",
    ),
    "shows": _topic(
        thing="the new season|the finale|this anime|the reboot|this series|that true crime doc",
        did="watched",
        doing="starting",
        cat="show",
        at="@netflix|@PrimeVideo|@hbomax|@disneyplus",
        tag="#tv|#bingewatching|#tvtwitter|#nospoilers",
        pos="the acting was incredible|the ending gave me chills|the soundtrack is perfect|"
        "I binged the whole thing in one night|every episode is better than the last|the visuals are stunning",
        neg="the ending ruined the whole thing|the plot made no sense|the pacing is painfully slow|"
        "they killed off the best character for nothing|the cgi looks cheap|I fell asleep halfway through",
        plus="the cast is great|the opening credits are cool|the first episode was fine|the visuals are nice",
        minor="it's a bit long|the first episode is slow|the middle drags a little|some of the jokes don't land",
        fails="stick the landing|make any sense|keep me awake",
        wait="paying for three streaming apps to watch one show|sitting through ads on a plan I pay for|"
        "refreshing the app for an hour waiting for the episode",
        another="reboot nobody asked for|price hike|show cancelled after one season|cliffhanger",
        pres="already rewatching it|best thing I've watched all year",
        nres="cancelling my subscription|dropping it",
        nq="what time does the new episode drop?|is it on netflix or prime?|do I need to watch season 1 first?|"
        "how many episodes are there?",
        nf="starting season 2 tonight|it leaves the platform at the end of the month|the trailer drops tomorrow|"
        "new episodes come out every wednesday",
    ),
    "airlines": _topic(
        thing="this airline|the red eye to nyc|the 6am to chicago|their new business class|the budget carrier",
        did="flew",
        doing="flying",
        cat="airline",
        at="@united|@Delta|@AmericanAir|@Ryanair",
        tag="#travel|#wanderlust|#avgeek|#airport",
        pos="we landed 20 minutes early|the crew were so kind|I got a free upgrade|boarding took ten minutes|"
        "the seats actually had legroom|they found my bag in an hour",
        neg="they lost my bag|the flight got delayed six hours|they cancelled with zero notice|"
        "the seat wouldn't recline and the wifi never worked|they overbooked and bumped me|"
        "the crew were rude the whole flight",
        plus="the crew were friendly|the snacks were fine|the app check-in was easy|the seats were clean",
        minor="the snacks were tiny|boarding was a little chaotic|the wifi was slow|we left ten minutes late",
        fails="leave on time|keep track of a suitcase|answer the phone",
        wait="sitting on the tarmac for 3 hours|sleeping on the airport floor|paying $60 for a carry on|"
        "sitting through a 14 hour layover",
        another="delay|bag fee|cancelled flight|middle seat",
        pres="flying with them again for sure|new go-to airline",
        nres="never flying them again|booking elsewhere next time",
        nq="anyone know if the lounge is open at 5am?|do I need a visa for a 6 hour layover?|"
        "what's the carry on size limit?|can you pick seats for free?",
        nf="flying out thursday, back sunday|checking in online now, gate is b12|"
        "the terminal moved to gate c this week|boarding starts at 7:15",
    ),
    "sports": _topic(
        thing="my team|this squad|our squad|the team this year|the new coach",
        did="watched",
        doing="checking out",
        qthing="the new signing|the season pass|the new stadium|the new streaming package",
        cat="team",
        at="@ESPN|@SportsCenter|@BleacherReport|@TheAthletic",
        tag="#gameday|#matchday|#sportstwitter|#letsgo",
        pos="we won by 30|that last second shot was unreal|the defense was locked in all night|"
        "the rookie is a problem|that comeback was legendary|we finally made the playoffs",
        neg="we blew a 20 point lead|the defense was nonexistent|we got destroyed at home|the refs robbed us|"
        "we missed every free throw|the coach has no plan whatsoever",
        plus="the new jerseys look clean|the halftime show was fun|our rookie played well|the crowd was loud",
        minor="the first half was sloppy|the tickets cost a fortune|our star sat out|it rained the whole game",
        fails="defend a corner|hit a free throw|win a home game",
        wait="watching us blow another lead|paying $15 for a stadium beer|sitting through a 3 hour rain delay",
        another="blown lead|injury|rebuilding season",
        pres="what a season|proud of this team",
        nres="cancelling my season tickets|done watching this season",
        nq="what channel is the game on tonight?|who's starting at quarterback sunday?|"
        "is the game on cable or streaming?|when does the draft start?",
        nf="kickoff moved to 8pm|the trade deadline is thursday|tickets go on sale friday at 10|"
        "heading to the stadium now, section 112",
    ),
    "delivery": _topic(
        thing="this delivery app|the app|their membership|this food app",
        did="used",
        doing="trying",
        cat="delivery app",
        at="@DoorDash|@UberEats|@Deliveroo|@Instacart",
        tag="#delivery|#foodorder|#takeout|#dinner",
        pos="the food showed up in 15 minutes|the driver was super nice|everything arrived still hot|"
        "the refund took two minutes|the tracking is actually accurate now|the wings were bussin",
        neg="my food arrived cold|the driver ate half my fries|the order never showed up|"
        "support just keeps closing my ticket|the eta changed six times|they charged me twice",
        plus="the app looks nice|the driver was polite|the packaging was fine|the promo was decent",
        minor="the fees are a bit much|the app is a little slow|the driver got lost once|the menu is cluttered",
        fails="show the right eta|get my address right|refund a missing item",
        wait="waiting 2 hours for cold pad thai|paying $12 in fees for a $9 burger|"
        "watching my driver do three other orders first|chatting with a support bot for 40 minutes",
        another="service fee|order that shows up cold|'your driver is nearby' for 45 minutes",
        pres="ordering again tonight|my go-to app now",
        nres="deleting the app|switching apps",
        nq="does the app do grocery delivery in my area?|how do I change the tip after ordering?|"
        "is the membership monthly or yearly?|anyone know the promo code for first orders?",
        nf="ordered thai, eta says 7:40|they added a new pickup option|the membership price changes next month|"
        "ordering for the whole office today",
    ),
}

_SHARED: dict[str, tuple[str, ...]] = {
    "padj": ("amazing", "so good", "fire", "incredible", "elite", "top tier", "goated", "SO good", "unreal"),
    "nadj": ("terrible", "so bad", "trash", "awful", "a joke", "a disaster", "garbage", "a mess"),
    "pslang": ("absolute W", "huge W", "this slaps", "goated", "no cap", "it's giving perfection"),
    "nslang": ("massive L", "huge L", "straight trash", "it's so over", "down bad", "not it"),
    "pres": ("still worth it", "still a W", "10/10 would recommend", "no regrets", "overall really happy"),
    "nres": ("not worth it", "never again", "hard pass", "huge L", "so disappointed"),
    "day": ("tonight", "tomorrow", "this weekend", "on friday", "next week"),
}

# label -> phenomenon -> patterns. A template fixes the label; its slots never change it.
_PATTERNS: dict[str, dict[str, tuple[str, ...]]] = {
    "positive": {
        "plain": (
            "{pos}, {thing} is {padj}",
            "just {did} {thing} and {pos}",
            "{pos}. new favorite {cat} unlocked",
            "can we talk about how {pos}?? {thing} is {padj}",
            "{at} you nailed it with {thing}, {pos}",
        ),
        "slang": ("{pslang}, {pos}. {thing} is {padj}", "{thing} is a W fr, {pos}", "{thing} hits different, {pos}"),
        "negation": (
            "{thing} is not bad at all, {pos}",
            "can't complain about {thing}, {pos}",
            "didn't expect much from {thing} but {pos}",
            "no complaints about {thing} so far, {pos}",
            "{thing} did not disappoint. {pos}",
            "never had a single issue with {thing}, {pos}",
        ),
        "mixed": (
            "{minor} but {pos}, {pres}",
            "ok {minor}, but honestly {pos}. {pres}",
            "{minor}, sure, but {pos}. {pres}",
        ),
        "inverted": ("I hate how good {thing} is, {pos}", "I'm never shutting up about {thing}, {pos}"),
    },
    "negative": {
        "plain": (
            "{neg}. {thing} is {nadj}",
            "just {did} {thing} and {neg}",
            "{at} {neg} and nobody is helping",
            "{neg}. worst {cat} I've dealt with all year",
        ),
        "slang": ("{nslang}, {neg}. {thing} is {nadj}", "{thing} is so mid, {neg}", "took an L with {thing}, {neg}"),
        "negation": (
            "{thing} wasn't great tbh, {neg}",
            "{thing} is not worth the hype, {neg}",
            "not impressed with {thing} at all, {neg}",
            "would not recommend {thing}, {neg}",
            "{thing} can't even {fails}, how is that even possible",
            "never again with {thing}, {neg}",
        ),
        "sarcasm": (
            "oh great, another {another}. thanks {at}",
            "love {wait} 🙄 {thing} never disappoints",
            "nothing like {wait} to make my day /s",
            "wow, {wait}. what a great experience /s",
            "thanks {at} for yet another {another}, really appreciate it /s",
            "{thing} is totally worth the hype, yeah right. {neg}",
            "best {cat} ever, {neg} /s",
            "so happy I spent my day {wait} 🙃",
            "{wait} is exactly how I wanted to spend my night. thanks {at}",
        ),
        "mixed": (
            "{plus} but {neg}, {nres}",
            "ok {plus}, I'll give them that. but {neg}. {nres}",
            "{plus}, sure, but {neg}. {nres}",
            "wanted to love {thing}. {plus} but {neg}, {nres}",
        ),
    },
    "neutral": {
        "question": (
            "{nq}",
            "{at} {nq}",
            "anyone tried {qthing} yet? trying to decide {day}",
            "no idea if {qthing} is any good, what do you all think?",
            "is {qthing} actually good or just hype? genuinely asking",
            "poll: is {qthing} overrated or underrated? 🤔",
        ),
        "fact": ("update: {nf}", "{at} {nf}", "{nf}. {nq}"),
        "plan": ("{doing} {qthing} {day}, will report back on how it goes",),
        "hedge": (
            "not sure yet how I feel about {qthing}, will post an update {day}",
            "reviews of {qthing} are all over the place, guess I'll see for myself {day}",
        ),
    },
}
_TEMPLATES: tuple[tuple[str, str, str], ...] = tuple(
    (label, kind, pattern) for label, kinds in _PATTERNS.items() for kind, pats in kinds.items() for pattern in pats
)

_FILLERS = {
    "positive": ("ngl", "tbh", "lowkey", "honestly", "fr", "not gonna lie,", "omg", "yo"),
    "negative": ("ngl", "tbh", "lowkey", "honestly", "fr", "not gonna lie,", "bruh", "ugh"),
    "neutral": ("ok so", "random but", "hey all,", "quick one:"),
}
_SUFFIXES = {"positive": ("fr", "no cap", "fr fr", "ong"), "negative": ("smh", "fr", "bruh", "ugh")}
_ENDINGS = {"positive": ("", "!", "!!", "!!!", "."), "negative": ("", ".", "!", "!!", "..."), "neutral": ("", ".")}
_EMOJI = {
    "positive": ("😍", "🔥", "🙌", "💯", "👍", "🥰", "✨", "🤩", "😭"),
    "sarcasm": ("🙄", "🙃", "🤡", "👏"),
    "negative": ("😡", "🤬", "😤", "👎", "😒", "💀", "😭", "🤡"),
    "neutral": ("🤔", "👀", "😐", "🤷", "📅"),
}
_TYPOS = {
    "really": "rly",
    "definitely": "definately",
    "because": "bc",
    "probably": "prolly",
    "you": "u",
    "though": "tho",
    "tonight": "tonite",
    "favorite": "fav",
    "minutes": "mins",
    "wasn't": "wasnt",
    "didn't": "didnt",
    "can't": "cant",
    "I'm": "im",
    "I've": "ive",
    "I'll": "ill",
    "what": "wut",
}
_STOP = {
    "the",
    "and",
    "was",
    "are",
    "for",
    "all",
    "its",
    "our",
    "got",
    "one",
    "two",
    "way",
    "that",
    "this",
    "with",
    "they",
    "them",
    "every",
    "whole",
    "just",
    "from",
    "were",
    "than",
}

_TOPIC_NAMES = tuple(_TOPICS)


def _novel(template: int, topic: int) -> bool:
    """About a fifth of (template, topic) pairs are kept out of training."""
    return (3 * template + topic) % 5 == 0


# (label, novel) -> the (template, topic) pairs a row with that label may use
_POOLS: dict[tuple[str, bool], list[tuple[int, int]]] = {(lab, nov): [] for lab in LABELS for nov in (False, True)}
for _ti, (_label, _, _) in enumerate(_TEMPLATES):
    for _ki in range(len(_TOPIC_NAMES)):
        _POOLS[(_label, _novel(_ti, _ki))].append((_ti, _ki))


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", text.lower()) if len(w) >= 3} - _STOP


def _clashes(drawn: dict[str, str]) -> bool:
    """A mixed comment must not praise and fault the same thing ("the crew were friendly but rude")."""
    return any(_words(drawn.get(a, "")) & _words(drawn.get(b, "")) for a, b in (("pos", "minor"), ("plus", "neg")))


def _says(text: str, phrase: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", text, re.I) is not None


def _typo(rng: random.Random, text: str) -> str:
    roll = rng.random()
    if roll < 0.2:
        hits = [m for m in re.finditer(r"[A-Za-z']+", text) if m.group() in _TYPOS]
        if hits:
            m = rng.choice(hits)
            return text[: m.start()] + _TYPOS[m.group()] + text[m.end() :]
    elif roll < 0.3:  # two letters swapped inside a longer word
        hits = list(re.finditer(r"(?<![#@\w])[a-z]{6,}\b", text))
        if hits:
            m = rng.choice(hits)
            i = m.start() + rng.randrange(1, len(m.group()) - 2)
            return text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    return text


def _dress(rng: random.Random, text: str, label: str, kind: str, topic: dict[str, tuple[str, ...]]) -> str:
    """Social-media surface: filler, punctuation, slang tag-ons, emoji, hashtag, typo, casing."""
    if rng.random() < (0.3 if label != "neutral" else 0.15 if kind == "question" else 0.0):
        filler = rng.choice(_FILLERS[label])
        text = text if _says(text, filler.strip(",:")) else f"{filler} {text}"  # no "tbh ... tbh"
    if text[-1].isalnum() and not text.endswith("/s"):
        text += rng.choice(_ENDINGS[label])
    if label != "neutral" and kind != "sarcasm" and rng.random() < 0.15:
        suffix = rng.choice(_SUFFIXES[label])
        text = text if _says(text, suffix.split()[0]) else f"{text} {suffix}"
    if rng.random() < 0.45:
        emoji = rng.choice(_EMOJI["sarcasm" if kind == "sarcasm" else label])
        text += " " + emoji * rng.choice((1, 1, 2, 3))
    if rng.random() < 0.25:
        text += " " + rng.choice(topic["tag"])
    if "@" not in text and rng.random() < 0.1:
        text = f"{rng.choice(topic['at'])} {text}"
    text = _typo(rng, text)
    casing = rng.random()
    if casing < 0.5:
        return text.lower()
    if casing < 0.96 or label == "neutral" or kind == "sarcasm":
        return text[0].upper() + text[1:]
    return text.upper()  # shouting


def _row(rng: random.Random, label: str, novel: bool) -> dict | None:
    """One comment with ``label``, or None when the draw is rejected (clash, length)."""
    ti, ki = rng.choice(_POOLS[(label, novel)])
    _, kind, pattern = _TEMPLATES[ti]
    topic = _TOPICS[_TOPIC_NAMES[ki]]
    drawn: dict[str, str] = {}  # slot -> the filler drawn for it, in the order the slots appear
    for slot in re.findall(r"\{(\w+)\}", pattern):
        drawn[slot] = rng.choice(topic.get(slot, ()) + _SHARED.get(slot, ()))
    if _clashes(drawn):
        return None
    text = pattern.format_map(drawn)
    text = _dress(rng, text, label, kind, topic)
    if not MIN_WORDS <= len(text.split()) <= MAX_WORDS:
        return None
    return {"text": text, "label": label, "kind": kind, "template": ti, "topic": _TOPIC_NAMES[ki]}


def _dedup_key(text: str) -> str:
    """What two comments must differ in: words and numbers, ignoring case, punctuation and emoji."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def _rows(rng: random.Random, n: int, novel_share: float, exclude: frozenset[str] = frozenset()) -> list[dict]:
    """``n`` distinct comments (with their template and topic), balanced over LABELS."""
    labels = [LABELS[i % len(LABELS)] for i in range(n)]
    rng.shuffle(labels)
    seen, out = set(exclude), []
    for label in labels:
        for _ in range(1000):  # guard: the space is vast, but never loop forever
            row = _row(rng, label, rng.random() < novel_share)
            if row is not None and _dedup_key(row["text"]) not in seen:
                seen.add(_dedup_key(row["text"]))
                out.append(row)
                break
        else:
            raise RuntimeError(f"could not draw a new {label} comment after {len(out)} rows")
    return out


def _public(rows: list[dict]) -> list[dict]:
    return [{"text": row["text"], "label": row["label"]} for row in rows]


def _split_rows(n_train: int, n_eval: int, seed: int) -> tuple[list[dict], list[dict]]:
    train = _rows(random.Random(seed), n_train, 0.0)
    taken = frozenset(_dedup_key(row["text"]) for row in train)
    held_out = _rows(random.Random(f"held-out:{seed}"), n_eval, NOVEL_SHARE, exclude=taken)
    return train, held_out


def generate(n: int, seed: int = SEED) -> list[dict]:
    """``n`` distinct comments ``{"text", "label"}`` from the training templates, labels balanced."""
    return _public(_rows(random.Random(seed), n, 0.0))


def make_splits(n_train: int = TRAIN_SIZE, n_eval: int = EVAL_SIZE, seed: int = SEED) -> tuple[list, list]:
    """(train, held_out): no held-out comment repeats a training one, even up to case and punctuation."""
    train, held_out = _split_rows(n_train, n_eval, seed)
    return _public(train), _public(held_out)


def write_task_files(
    out_dir: Path, *, n_train: int = TRAIN_SIZE, n_eval: int = EVAL_SIZE, seed: int = SEED
) -> dict[str, Path]:
    """Write ``train.jsonl`` and ``eval.jsonl`` (``{"text", "label"}`` per line) under ``out_dir``."""
    train, held_out = make_splits(n_train, n_eval, seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"train": out_dir / "train.jsonl", "eval": out_dir / "eval.jsonl"}
    for split, rows in (("train", train), ("eval", held_out)):
        lines = (json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        paths[split].write_text("".join(lines), encoding="utf-8")
    return paths


def describe() -> str:
    """One line for users."""
    return (
        f"sentiment: label social-media comments {'/'.join(LABELS)} (slang, emoji, negation, sarcasm, "
        f"mixed opinions); {TRAIN_SIZE} train / {EVAL_SIZE} held-out rows, metric: macro-F1."
    )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tuneforge.tasks.sentiment OUTDIR")
    for split, path in write_task_files(Path(sys.argv[1])).items():
        print(f"{split}: {path}")
