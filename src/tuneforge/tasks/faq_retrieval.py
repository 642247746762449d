"""Demo task: find the FAQ answer that answers a user's question (domain retrieval).

The domain is a fictional home battery and solar inverter, the "VoltNest". Rows are::

    train.jsonl     {"anchor": "grid went down and we have no gateway fitted, why did the lights go off",
                     "positive": "Without a Backup Gateway, the inverter must shut down ...",
                     "negative": "With a Backup Gateway, the home switches to battery ..."}   (half the rows)
    eval.jsonl      {"anchor": <held-out question>, "positive": <its answer>}
    corpus.jsonl    {"text": <answer>}   every answer: retrieval is over all of them
    raw_text.jsonl  {"text": ...}        answers and training questions, shuffled (for unsupervised SimCSE)

This is the embedding demo: contrastively fine-tune an encoder (MiniLM-L6, mean pooling) or a small
decoder (last-token pooling) so that a question lands next to its answer, and score recall@k of the
held-out questions against the whole corpus. It is built so that a general-purpose embedding model
leaves a lot on the table:

* near-duplicate answers. Each answer comes from an intent template filled with one decisive detail:
  an error code (E-104 vs E-105), a model (VoltNest 5 vs 10), a platform (iOS vs Android), a component
  (battery vs inverter warranty), a mode, a tariff, a region, a charge level, a firmware version. The
  siblings share most of their words, so only that detail (and what it implies) tells them apart.
* low lexical overlap. Questions are casual paraphrases ("how much juice can a VN10 hold") with lay
  terms, hints instead of the answer's wording ("garage is like an oven" for "cells above 50 C"),
  aliases for the detail ("error 104", "iPhone", "E7"), fillers and the odd typo. The detail itself is
  always in the question, so every question has exactly one right answer.
* held-out wording. Held-out questions come from their own paraphrase templates, and no held-out
  question equals a training question up to case and punctuation.
* unseen answers. About a fifth of the answers get no training question at all (their intent does,
  through sibling answers), and they never serve as a training negative: held-out questions about them
  test generalisation rather than recall of the training pairs.

Hard negatives in training are always a sibling answer of the same intent (a different detail).
Everything is drawn from seeded ``random.Random`` instances: same seed, same bytes.
"""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

SEED = 0
TRAIN_PER_ANSWER, EVAL_PER_ANSWER = 18, 3  # questions per answer (train: only answers that have training questions)
UNSEEN_SHARE = 0.2  # share of answers with no training question
NEGATIVE_SHARE = 0.5  # share of training rows with a hard negative
MIN_WORDS, MAX_WORDS, MAX_ANSWER_WORDS = 6, 25, 60


def _intent(name: str, answer: str, train: str, held: str, values: dict, fields: str = "") -> dict:
    """``values``: detail -> facts (a tuple matching ``fields``; facts named q_* feed questions, "|" = options)."""
    names = fields.split()
    facts = {v: dict(zip(names, f if isinstance(f, tuple) else (f,))) for v, f in values.items()}
    return {"name": name, "answer": answer, "train": train.split("|"), "held": held.split("|"), "facts": facts}


_MODELS = {  # capacity, usable, continuous kW, peak kW, what the peak starts, backup hours, stack, amps, kg,
    # where it mounts, fan-on kW, dB, as loud as
    "VoltNest Mini": ("3.3", "3.0", "1.5", "2.2", "a fridge compressor", "4", "2", "16", "32",
                      "on a wall or a sturdy shelf, indoors only (IP21)", "1.0", "25", "a whisper"),
    "VoltNest 5": ("5.2", "4.8", "2.5", "3.6", "a kettle", "7", "3", "20", "52",
                   "on a wall, indoors or outside (IP65)", "1.5", "30", "a quiet fridge"),
    "VoltNest 10": ("10.4", "9.6", "5.0", "7.0", "a kettle and an oven together", "14", "3", "32", "98",
                    "on a wall, indoors or outside (IP65)", "3.0", "35", "a fridge"),
    "VoltNest 15": ("15.6", "14.4", "6.0", "8.0", "a heat pump", "21", "2", "40", "145",
                    "on the floor only, indoors or outside (IP65)", "4.0", "38", "a quiet conversation"),
}
_MODEL_FIELDS = "cap usable kw peak load hours stack amps kg place fan db like"
_COMPONENTS = ("battery", "inverter", "Backup Gateway", "CT clamp")
_PLATFORMS2 = ("iOS", "Android")


def _by(keys, *columns) -> dict:
    return {k: tuple(col[i] for col in columns) if len(columns) > 1 else columns[0][i] for i, k in enumerate(keys)}


_INTENTS: tuple[dict, ...] = (
    _intent("error", "Error {v} means {meaning}. {fix}",
            "my {unit} is showing {v}, what does that mean|{v} on the display again, what am I supposed to do|"
            "got {v} this morning, {q_hint}|what is {v} on a voltnest|how do I get rid of {v}|"
            "{unit} keeps flagging {v}. {q_hint}. any ideas|is {v} something I can fix myself or do I need the "
            "installer|app notification says {v}, should I worry",
            "screen reads {v} and {q_hint}, what's going on|anyone know what fault {v} actually is|"
            "{q_hint}, now the {unit} throws {v}. what should I do", {
        "E-101": ("grid voltage rose above 253 V", "The inverter waits five minutes and reconnects on its own; if "
                  "it happens most sunny afternoons, ask your network operator to check the street voltage.",
                  "lights flicker at midday|only happens on sunny afternoons|half the street has solar now"),
        "E-102": ("grid voltage dropped below 207 V", "The inverter waits five minutes and reconnects on its own; "
                  "if it happens most evenings, ask your network operator to check the street voltage.",
                  "seems to happen around dinner time|lights go dim in the evening"),
        "E-103": ("grid frequency left the 49.5-50.5 Hz window", "This is a short disturbance on the network and "
                  "clears itself within five minutes; no action is needed unless it repeats daily.",
                  "there was a storm last night|the power blipped for a second"),
        "E-104": ("the battery cells are above 50 °C", "Charging and discharging pause until the pack cools down. "
                  "Keep the unit out of direct sun and leave 30 cm of free space around it.",
                  "the garage is like an oven|we've got a heatwave|the sun hits it all afternoon"),
        "E-105": ("the battery cells are below 0 °C", "Charging pauses until the pack warms up. Switch on Cold "
                  "Weather Heating in Settings > Battery so the built-in heater keeps the cells warm.",
                  "it's freezing outside|we had frost last night|it sits in an unheated shed"),
        "E-106": ("the inverter heatsink is overheating", "Output is reduced until it cools. Clean the dust off the "
                  "fan grille and make sure nothing blocks the vents.",
                  "the fan is really loud|it's covered in cobwebs|output dropped to almost nothing"),
        "E-107": ("an insulation fault was found on the solar panel strings", "Turn off the PV isolator and "
                  "contact your installer; do not touch the panel wiring yourself.",
                  "it only shows after heavy rain|the panels are wet with dew|roofer was up there last week"),
        "E-108": ("an arc fault was detected on the solar input", "The inverter locks the solar input for safety. "
                  "Turn off the PV isolator and contact your installer before restarting.",
                  "I heard crackling near the roof cable|a squirrel chewed something"),
        "E-109": ("the CT clamp is not detected", "Check that the clamp's plug is firmly seated in the meter port "
                  "and its cable is undamaged, then restart the system from the app.",
                  "an electrician worked in the meter box|house usage shows zero"),
        "E-110": ("the CT clamp is reading power in the wrong direction", "The clamp is fitted back to front: the "
                  "arrow on it must point toward the house, away from the grid. Have your installer flip it.",
                  "app says I'm exporting at night|the house numbers look negative"),
        "E-111": ("the battery has lost communication with the inverter", "Check the RJ45 data cable between the "
                  "two units, then restart both from Settings > System > Restart.",
                  "app lists the battery as unavailable|we moved the battery last weekend"),
        "E-112": ("the gateway has lost its internet connection", "The system keeps running, but the app shows old "
                  "data. Restart your router, then rerun Wi-Fi setup in the app if it does not reconnect.",
                  "we got a new router|changed broadband provider|the wifi password changed"),
        "E-113": ("the battery and inverter run different firmware versions", "Start a firmware update from "
                  "Settings > Firmware so both units get the same version; the error clears afterwards.",
                  "an update got interrupted|the power went off mid update"),
        "E-114": ("the backup relay failed its self-test", "Backup power is unavailable until it is repaired, but "
                  "the system keeps working with the grid. Book a service visit in the app.",
                  "the monthly test failed|got a scary message about backup"),
        "E-115": ("the state of charge needs recalibrating", "Let the battery charge to 100% and run down to the "
                  "reserve once; the reading corrects itself after this full cycle.",
                  "the percentage jumps around|it went from 40 to 10 in a minute"),
        "E-116": ("the cooling fan has stopped", "The system limits its power to protect itself. Check the fan for "
                  "debris, and if it still does not spin, book a service visit.",
                  "it's gone totally quiet|no humming anymore"),
        "E-117": ("the battery's DC isolator is switched off", "Turn the red isolator on the side of the battery to "
                  "ON; the system restarts within a minute.",
                  "the kids were playing near it|after the electrician left"),
    }, "meaning fix q_hint"),
    _intent("led", "A {v} status light means {meaning}. {action}",
            "the light on my {unit} is {v}, is that normal|what does a {v} light mean on the battery|{v} status "
            "LED on the front, what's it telling me|why is the little light {v}|noticed the {unit} led went {v} "
            "today, anything wrong|lamp on the side is {v}, ok or not",
            "little indicator on the voltnest shows {v} since this morning, should I do something|front led {v}: "
            "meaning|my {unit} glows {v} now, what gives", {
        "solid green": ("the system is running normally in its operating mode", "Nothing needs doing."),
        "blinking green": ("the battery is idle because it is full or at its reserve", "It resumes by itself when "
                           "solar or household demand changes."),
        "solid amber": ("charging or discharging is limited, usually by temperature or the export limit",
                        "The status page in the app shows the reason."),
        "blinking amber": ("a firmware update is installing", "Do not switch off the isolator until it turns "
                           "green again."),
        "solid red": ("a fault has stopped the system", "Open the app to read the error code and follow the advice "
                      "for that code."),
        "blinking red": ("a safety shutdown has happened", "Turn off the battery isolator and call your installer; "
                         "do not restart it yourself."),
        "solid blue": ("the unit is in Bluetooth pairing mode", "Open the app and add the device within 10 minutes."),
        "blinking blue": ("the unit is trying to join your Wi-Fi", "If it keeps blinking for more than five "
                          "minutes, rerun Wi-Fi setup in the app."),
    }, "meaning action"),
    _intent("capacity", "The {v} holds {cap} kWh in total, of which {usable} kWh is usable; the rest is held back "
            "to protect the cells.",
            "how much energy does the {v} actually store|usable kWh on a {v}|how big is the battery in the {v}|is "
            "a {v} enough storage for an evening|{v} capacity, total vs usable|how much juice can a {v} hold",
            "what's the real storage of a {v} once you take off the reserve|how many kilowatt hours do I get out of "
            "my {v}", _MODELS, _MODEL_FIELDS),
    _intent("power", "The {v} charges and discharges at up to {kw} kW continuously and {peak} kW for ten seconds, "
            "enough to start {load}.",
            "can my {v} run the kettle and the oven at once|max output of the {v}|how fast does the {v} charge up|"
            "what's the discharge rate on the {v}|{v} power rating in kW|will a {v} cope when the heat pump kicks in",
            "does the {v} have enough punch for big appliances|how many watts can the {v} push out",
            _MODELS, _MODEL_FIELDS),
    _intent("runtime", "In a power cut a full {v} keeps a fridge, lights, router and TV going for about {hours} "
            "hours; electric heating or an EV charger empties it much faster.",
            "blackout, how long will my {v} keep the lights on|how many hours of backup from a {v}|power went out, "
            "how long can the {v} run the fridge|{v} backup duration|if the grid is down overnight will the {v} last",
            "how long does a charged {v} last when the mains fails|outage tonight: will a {v} get us through till "
            "morning", _MODELS, _MODEL_FIELDS),
    _intent("stacking", "Up to {stack} {v} units can share one inverter, giving {total} kWh in total. Different "
            "VoltNest models cannot be mixed in one stack.",
            "can I add a second {v} later|expand storage on my {v}|how many {v} can I chain together|max number of "
            "{v} batteries on one system|buy another {v} to double capacity, possible",
            "is it possible to stack more {v} units onto my current setup|what's the biggest system I can build out "
            "of {v}s", {m: f[:7] + (f"{float(f[0]) * int(f[6]):.1f}",) for m, f in _MODELS.items()},
            "cap usable kw peak load hours stack total"),
    _intent("breaker", "The {v} needs its own {amps} A Type B breaker and an RCD on the AC side; your installer "
            "sizes the cable to match.",
            "what size breaker for the {v}|which fuse does the {v} need in the consumer unit|does the {v} need its "
            "own circuit|amp rating of the breaker for a {v}|electrician asking what MCB the {v} wants",
            "what protection does the {v} need in the fuse box|sparky wants to know the breaker for a {v}",
            _MODELS, _MODEL_FIELDS),
    _intent("mounting", "The {v} weighs {kg} kg and mounts {place}. Never fix it to plasterboard or a stud wall.",
            "how heavy is the {v}, can I hang it on drywall|can the {v} go outside|where can I put my {v}|{v} "
            "weight and mounting options|can I install the {v} in the garage or on the side of the house",
            "is a {v} too heavy for a stud wall|does the {v} need to be indoors", _MODELS, _MODEL_FIELDS),
    _intent("noise", "The {v} is silent at rest; its fan only starts above {fan} kW and peaks at {db} dB, about as "
            "loud as {like}.",
            "is the {v} noisy|does the {v} hum at night|fan noise on a {v}|can I put the {v} next to a bedroom|how "
            "loud is a {v} when charging",
            "will a {v} keep us awake if it's on the bedroom wall|decibels of the {v}", _MODELS, _MODEL_FIELDS),
    _intent("outage", "{text}",
            "power cut and we have {v}, what happens|we have {v}, will the house stay on in a blackout|grid went "
            "down and we have {v}, what does the battery do|outage question: setup is with {v}",
            "what does my system do in a blackout if there's {v}|with {v}, do the lights stay on when the street "
            "loses power", {
        "a Backup Gateway": "With a Backup Gateway, the home switches to battery within 20 ms of a power cut; the "
        "gateway islands the house from the grid so solar keeps charging the battery.",
        "no Backup Gateway": "Without a Backup Gateway, the inverter must shut down within two seconds of a power "
        "cut (anti-islanding rules), so the house goes dark even with a full battery.",
        "a generator": "A generator on the Backup Gateway's GEN port starts when the battery falls to its reserve "
        "during a power cut; the battery then charges from it at up to 3 kW.",
    }, "text"),
    _intent("pairing", "{text}",
            "how do I connect the app to my battery on {v}|pair voltnest with {v}|setting up the unit from my {v}, "
            "what are the steps|first time setup on {v}, how to link the battery|add new device in the app on {v}",
            "getting my {v} talking to the battery for the first time, how|steps to hook up the app on {v} to a "
            "new VoltNest", _by(_PLATFORMS2, (
                "On iOS, tap Add device and allow Bluetooth when asked, then hold the unit's button for three "
                "seconds until the light turns blue and pick it from the list.",
                "On Android, tap Add device and allow Bluetooth, Location and Nearby devices, then hold the unit's "
                "button for three seconds until the light turns blue and pick it from the list.")), "text"),
    _intent("not_found", "{text}",
            "app can't see the battery on my {v}|scan finds nothing on {v}|{v} app says no devices found|bluetooth "
            "search doesn't show the voltnest on my {v}|why won't my {v} detect the unit",
            "VoltNest never shows up in the device list on {v}|searching forever on {v}, battery not appearing",
            _by(_PLATFORMS2, (
                "On iOS, open Settings > VoltNest and turn on Bluetooth access, then stand within 5 m of the unit "
                "and scan again.",
                "On Android, open Settings > Apps > VoltNest > Permissions and allow Location and Nearby devices, "
                "turn off battery saver, then scan again within 5 m.")), "text"),
    _intent("notifications", "{text}",
            "not getting alerts on {v}|push notifications stopped on my {v}|no warning when the power went out, "
            "using {v}|how do I turn on voltnest notifications on {v}|{v}: the app never pings me",
            "alerts from the battery don't come through on my {v}|why am I not told about outages on {v}",
            _by(_PLATFORMS2, (
                "On iOS, enable alerts in Settings > Notifications > VoltNest and check that a Focus mode is not "
                "silencing them.",
                "On Android, allow notifications for VoltNest and set its battery usage to Unrestricted, otherwise "
                "the system stops it in the background.")), "text"),
    _intent("wifi", "{text}",
            "got a new router, how do I reconnect the battery using {v}|change wifi network on voltnest from {v}|"
            "wifi password changed, update it on {v}|moving the battery to a new wifi, on {v}",
            "switched broadband provider, how do I get the system back online from my {v}|new wireless network, "
            "steps on {v}", _by(_PLATFORMS2, (
                "On iOS, start Settings > Network > Change Wi-Fi in the app, join the VN-Setup hotspot in the "
                "phone's Wi-Fi settings, then return to the app and choose your new network.",
                "On Android, start Settings > Network > Change Wi-Fi in the app; it joins the VN-Setup hotspot "
                "itself, so accept the 'no internet' prompt and choose your new network.")), "text"),
    _intent("app_version", "{text}",
            "app keeps crashing on {v}|voltnest app closes as soon as I open it on {v}|which {v} version do I need "
            "for the app|app won't install on my old {v}",
            "the app freezes on launch on {v}, any fix|minimum {v} requirement for the VoltNest app",
            _by(_PLATFORMS2, (
                "The VoltNest app needs iOS 15 or later. Update it from the App Store; if it still crashes, delete "
                "and reinstall it, since your settings are stored online.",
                "The VoltNest app needs Android 9 or later. Update it from Google Play; if it still crashes, clear "
                "its storage in Settings > Apps, since your settings are stored online.")), "text"),
    _intent("export_data", "{text}",
            "how do I download my energy data on {v}|export history to a spreadsheet from {v}|get a csv of my usage "
            "on {v}|want last year's numbers in excel, using {v}",
            "can I pull my solar and battery history out as a file on {v}|saving usage stats on {v}, how",
            _by(_PLATFORMS2 + ("web portal",), (
                "On iOS, open Energy, pick a date range and tap Share > Save to Files to get a CSV.",
                "On Android, open Energy, pick a date range and tap Export; the CSV lands in your Downloads folder.",
                "In the web portal, go to Reports, choose a date range and click Download CSV; ranges over a year "
                "arrive by email.")), "text"),
    _intent("share", "{text}",
            "let my wife see the battery app on {v}|share access with family on {v}|add another user from {v}|how "
            "do I give my partner access using {v}",
            "can someone else in the house log in too, I'm on {v}|invite a family member to the system from {v}",
            _by(_PLATFORMS2 + ("web portal",), (
                "On iOS, go to Settings > Household > Invite and send the link; invited people get view-only access "
                "unless you make them an owner.",
                "On Android, go to Settings > Household > Invite and share the code; invited people get view-only "
                "access unless you make them an owner.",
                "In the web portal, go to Account > Members > Add member and enter their email; they get view-only "
                "access unless you make them an owner.")), "text"),
    _intent("warranty", "The {v} warranty lasts {text}.",
            "how long is the warranty on the {v}|{v} guarantee period|is the {v} still covered after 7 years|what "
            "does the {v} warranty cover|warranty terms for the {v}",
            "for how many years is my {v} protected if it fails|if the {v} dies in year 6, am I covered",
            _by(_COMPONENTS, (
                "10 years or 6,000 full cycles, whichever comes first, and guarantees at least 70% of the capacity",
                "10 years and includes both parts and labour", "5 years for parts; labour is covered for the first "
                "two years only", "2 years, and replacements are posted free of charge")), "text"),
    _intent("claim", "To claim for a faulty {v}, send us the serial number from {text} and a photo via Support > "
            "Warranty in the app.",
            "{v} broke, how do I make a warranty claim|where's the serial number on the {v}|replacement for a dead "
            "{v}, what's the process|claiming a faulty {v} under guarantee",
            "my {v} has failed, how do I get it replaced under warranty|what info do you need to replace a broken "
            "{v}", _by(_COMPONENTS, ("the label under the right-hand cover", "the sticker on its left side",
                                     "inside its front door", "the tag on its cable")), "text"),
    _intent("void", "The {v} warranty is void if {text}.",
            "what would void the warranty on my {v}|can I move the {v} myself without losing the guarantee|things "
            "that cancel the {v} warranty|will DIY work on the {v} void the cover",
            "what could make VoltNest refuse a {v} claim|ways to lose the guarantee on the {v}",
            _by(_COMPONENTS, (
                "it sits where it drops below -10 °C or goes above 50 °C, or anyone but VoltNest opens it",
                "a non-certified installer connects it or its firmware is modified",
                "an unregistered installer wires it or a generator above 5 kW is connected to it",
                "its cable is cut or extended beyond 25 m")), "text"),
    _intent("mode", "In {v} mode {text}.",
            "what does {v} mode actually do|should I use {v}|explain the {v} setting in the app|is {v} good for "
            "saving money|{v} mode, does it charge from the grid",
            "in plain english, how does {v} behave|what's the point of the {v} option", {
        "Self-Use": "the battery stores spare solar and powers the house in the evening; it never charges from the "
        "grid",
        "Time-of-Use": "the battery charges from the grid during the cheap hours you set and covers the house during "
        "the expensive ones",
        "Backup Only": "the battery stays full and only discharges when the grid fails, so it saves nothing day to "
        "day",
        "Export First": "solar goes to the grid first up to your export limit, and the battery only takes what is "
        "left over",
    }, "text"),
    _intent("mode_switch", "To use {v}, open Settings > Operating mode, choose {v} and {text}; the change applies "
            "within two minutes.",
            "how do I turn on {v}|where's the {v} setting|switch my battery to {v}|change operating mode to {v}|"
            "can't find how to enable {v}",
            "steps to put the system into {v}|I want {v}, where do I change that", {
        "Self-Use": "save", "Time-of-Use": "enter your cheap and peak hours", "Backup Only": "confirm the reserve "
        "warning", "Export First": "check the export limit your installer set",
    }, "text"),
    _intent("tariff", "For {v}, pick Time-of-Use mode and {text}; the battery then charges from the grid when power "
            "is cheapest.",
            "I'm on {v}, what settings should I use|best way to set up the battery for {v}|just switched to {v}, "
            "how to configure|charge the battery overnight on {v}|{v} schedule setup in the app",
            "got a {v} deal, how should the battery be programmed|making the most of {v} with my VoltNest", {
        "Economy 7": "set the cheap window to 00:30-07:30", "Economy 10": "add three cheap windows: 00:00-05:00, "
        "13:00-16:00 and 20:00-22:00", "a half-hourly tariff": "turn on Smart Import so the app follows your "
        "supplier's prices", "an EV tariff": "set the cheap window to 23:30-05:30 and tick Pause discharge while "
        "the car charges",
    }, "text"),
    _intent("soc_cap", "{text}",
            "battery won't charge past {v}|SoC capped at {v}, why|why does the charge stop at {v}|stuck at {v} even "
            "with loads of sun|state of charge never goes above {v}",
            "charging always halts at {v}, is something wrong|tops out at {v} every day, normal", {
        "80%": "Stopping at 80% means Battery Care is on: it limits charging to slow cell ageing. Turn it off in "
        "Settings > Battery > Battery Care for a full charge.",
        "90%": "Stopping at 90% is cold protection: below 5 °C the battery limits charging to 90% until the cells "
        "warm up, then finishes the charge.",
        "95%": "Stopping at 95% is normal: the last 5% is filled during the weekly balancing cycle, which tops every "
        "cell up to 100%.",
    }, "text"),
    _intent("soc_floor", "{text}",
            "battery never goes below {v}|why does it stop discharging at {v}|won't drain under {v} in the evening|"
            "SoC floor stuck at {v}|house pulls from the grid while the battery still has {v}",
            "it refuses to use the last {v}, why|discharge halts at {v} every night, can I change that", {
        "10%": "The battery stops discharging at 10% because that is the fixed minimum that protects the cells; it "
        "cannot be lowered.",
        "20%": "Stopping at 20% means your backup reserve is set to 20%. Lower it in Settings > Battery > Backup "
        "reserve if you don't need power for outages.",
        "30%": "Stopping at 30% means Storm Watch raised the reserve ahead of severe weather; it returns to your "
        "normal reserve once the warning ends.",
    }, "text"),
    _intent("export_limit", "In {v} the export limit defaults to {text}; the inverter curtails solar above that.",
            "why is my export capped, I'm in {v}|grid export limit for {v}|solar gets throttled at midday, live in "
            "{v}|max feed-in allowed in {v}",
            "we're in {v} and the panels get clipped when sending power back, why|how much can I sell back to the "
            "grid in {v}", {
        "the UK": "3.68 kW per phase under the G98 rule", "Germany": "60% of the panels' peak power under the "
        "feed-in rules", "Australia": "5 kW per phase under most network rules", "California": "0 kW until your "
        "utility grants permission to operate under Rule 21",
    }, "text"),
    _intent("export_raise", "To export more in {v}, your installer must {text}, then enter the new limit in the "
            "installer menu.",
            "how do I raise the export limit in {v}|can I export more than the default in {v}|increase the feed-in "
            "cap, install in {v}|who approves a bigger export limit in {v}",
            "want to send more solar to the grid, {v}, what paperwork|lifting the export cap on my system in {v}", {
        "the UK": "apply to the network operator under G99", "Germany": "register the change with the grid operator "
        "and the Marktstammdatenregister", "Australia": "request a larger export approval from your network",
        "California": "get an updated interconnection agreement from your utility",
    }, "text"),
    _intent("fw_update", "{text}",
            "how do I update the {v} software|{v} firmware update, manual or automatic|latest firmware on the {v}, "
            "how to install|does the {v} update itself",
            "getting new software onto the {v}, what's involved|will updating the {v} cut my power",
            _by(_COMPONENTS[:3], (
                "Battery firmware installs over the air at 2 am when the charge is above 30%; nothing needs doing.",
                "Inverter firmware is started from Settings > Firmware and takes about 15 minutes; solar output "
                "pauses while it installs.",
                "Backup Gateway firmware is started from Settings > Firmware; backup power is unavailable for about "
                "five minutes while the gateway restarts.")), "text"),
    _intent("fw_stuck", "If a {v} update sits at the same percentage for over 30 minutes, {text}.",
            "{v} update stuck at {q_pct}|firmware on the {v} frozen at {q_pct}|{v} update hasn't moved in an hour|"
            "{v} upgrade hung, what now",
            "progress bar on the {v} firmware won't budge|the {v} has been updating forever",
            _by(_COMPONENTS[:3], (
                "switch the battery isolator off for one minute and back on; the update resumes by itself",
                "restart the inverter from its AC isolator and start the update again in the app",
                "hold the gateway's reset button for ten seconds; it rolls back to the previous version"),
                ("45%|60%|99%|halfway",) * 3), "text q_pct"),
    _intent("release", "Firmware {v} {text}.",
            "what's new in {v}|is it worth installing {v}|{v} changelog|what did {v} change|anything important in "
            "the {v} update",
            "what features came with {v}|should I bother updating to {v}", {
        "3.1": "added Storm Watch, which raises the backup reserve before severe weather warnings",
        "3.2": "added Smart Import for half-hourly tariffs and fixed false E-109 CT clamp alerts",
        "3.3": "added Cold Weather Heating and cut standby consumption by 8 W",
        "4.0": "added the generator port on the Backup Gateway and support for three-phase homes",
        "4.1": "fixed the app showing stale state of charge after a Wi-Fi dropout",
    }, "text"),
)

_ALIASES = {
    "VoltNest Mini": ("VoltNest Mini", "VN Mini", "Mini", "voltnest mini"), "iOS": ("iOS", "iPhone", "iPad", "ios"),
    "Android": ("Android", "Samsung phone", "Pixel", "android phone"), "web portal": ("web portal", "browser", "laptop"),
    "battery": ("battery", "battery pack", "batt"), "inverter": ("inverter", "hybrid inverter", "inverter box"),
    "Backup Gateway": ("Backup Gateway", "gateway", "backup switch box"), "CT clamp": ("CT clamp", "current clamp",
    "CT sensor"), "a Backup Gateway": ("a Backup Gateway", "the backup gateway box", "the gateway thing fitted"),
    "no Backup Gateway": ("no Backup Gateway", "no gateway fitted", "no backup box"), "a generator": ("a generator",
    "a petrol generator", "a standby genny"), "Self-Use": ("Self-Use", "self use", "self-consumption"),
    "Time-of-Use": ("Time-of-Use", "TOU", "time of use"), "Backup Only": ("Backup Only", "backup mode", "backup-only"),
    "Export First": ("Export First", "export priority", "export mode"), "Economy 7": ("Economy 7", "E7",
    "economy seven"), "Economy 10": ("Economy 10", "E10", "economy ten"), "a half-hourly tariff": ("a half-hourly "
    "tariff", "agile", "a dynamic half hourly tariff"), "an EV tariff": ("an EV tariff", "an electric car tariff",
    "an EV night rate"), "the UK": ("the UK", "England", "Britain"), "Germany": ("Germany", "Deutschland"),
    "Australia": ("Australia", "Oz", "NSW"), "California": ("California", "Cali", "CA"),
}
_LED_WORDS = {"solid": ("solid", "steady", "constant"), "blinking": ("blinking", "flashing", "flickering"),
              "green": ("green",), "amber": ("amber", "orange", "yellow"), "red": ("red",), "blue": ("blue",)}
_SHARED = {"unit": ("battery", "VoltNest", "system", "unit", "setup")}
_PREFIXES = ("hi,", "hey,", "quick question:", "hello,", "help!", "ok so", "sorry if this is obvious,", "newbie here:")
_SUFFIXES = ("thanks", "thx", "cheers", "any ideas?", "pls help", "thanks in advance")
_TYPOS = {"battery": "batery", "because": "bc", "please": "pls", "really": "rly", "firmware": "firmwear",
          "warranty": "warrenty", "inverter": "invertor", "through": "thru", "what": "wat", "doesn't": "doesnt",
          "won't": "wont", "can't": "cant", "what's": "whats", "I'm": "im", "notifications": "notifcations"}


def _aliases(value: str) -> tuple[str, ...]:
    if m := re.fullmatch(r"E-(\d+)", value):
        return value, f"E{m[1]}", f"error {m[1]}", f"code {m[1]}", f"err {value}"
    if m := re.fullmatch(r"VoltNest (\d+)", value):
        return value, f"VN{m[1]}", f"Voltnest{m[1]}", f"VN-{m[1]}"
    if m := re.fullmatch(r"(\d+)%", value):
        return value, f"{m[1]} percent", f"{m[1]} per cent", m[1]
    if m := re.fullmatch(r"(\d\.\d)", value):
        return value, f"v{value}", f"{value}.0"
    if m := re.fullmatch(r"(solid|blinking) (\w+)", value):
        return tuple(f"{k} {c}" for k in _LED_WORDS[m[1]] for c in _LED_WORDS[m[2]])
    return _ALIASES[value]


def _answers() -> list[dict]:
    """Every answer: {"intent", "value", "text", "facts"}, in intent order."""
    out = []
    for intent in _INTENTS:
        for value, facts in intent["facts"].items():
            text = intent["answer"].format(v=value, **facts)
            out.append({"intent": intent["name"], "value": value, "text": text, "facts": facts, "spec": intent})
    return out


def _key(text: str) -> str:
    """What two questions must differ in: their lowercased words and numbers."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def _typo(rng: random.Random, text: str) -> str:
    roll = rng.random()
    if roll < 0.15:
        hits = [m for m in re.finditer(r"[A-Za-z']+", text) if m.group() in _TYPOS]
        if hits:
            m = rng.choice(hits)
            return text[: m.start()] + _TYPOS[m.group()] + text[m.end() :]
    elif roll < 0.22:  # two letters swapped inside a longer word
        hits = list(re.finditer(r"(?<![\w-])[a-z]{6,}\b", text))
        if hits:
            m = rng.choice(hits)
            i = m.start() + rng.randrange(1, len(m.group()) - 2)
            return text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    return text


def _question(rng: random.Random, answer: dict, split: str) -> str:
    """One paraphrase of a question that ``answer`` answers, from the ``split`` templates ("train"/"held")."""
    pattern = rng.choice(answer["spec"][split])
    slots = {s: rng.choice(answer["facts"][s].split("|")) if s in answer["facts"] else rng.choice(_SHARED[s])
             for s in re.findall(r"\{(\w+)\}", pattern) if s != "v"}
    text = pattern.format(v="\x00", **slots)  # the detail goes in last: no typo or case change breaks it
    if rng.random() < 0.2:
        text = f"{rng.choice(_PREFIXES)} {text}"
    if text[-1].isalnum():
        text += rng.choice(("?", "?", "", "??", "."))
    if rng.random() < 0.15:
        text += " " + rng.choice(_SUFFIXES)
    text = _typo(rng, text)
    lower = rng.random() < 0.5
    text = text.lower() if lower else text[0].upper() + text[1:]
    alias = rng.choice(_aliases(answer["value"]))
    return text.replace("\x00", alias.lower() if lower else alias)


def _questions(rng: random.Random, answer: dict, split: str, n: int, taken: set[str]) -> list[str]:
    """``n`` questions whose keys are new to ``taken`` (updated in place)."""
    out: list[str] = []
    for _ in range(200 * n):
        text = _question(rng, answer, split)
        if MIN_WORDS <= len(text.split()) <= MAX_WORDS and _key(text) not in taken:
            taken.add(_key(text))
            out.append(text)
            if len(out) == n:
                return out
    raise RuntimeError(f"only {len(out)} distinct {split} questions for {answer['text']!r}")


def _unseen(answers: list[dict], seed: int) -> set[str]:
    """About UNSEEN_SHARE of the answers, never all of an intent's answers, get no training question."""
    order = list(answers)
    random.Random(f"unseen:{seed}").shuffle(order)
    unseen: set[str] = set()
    left = {a["intent"]: sum(b["intent"] == a["intent"] for b in answers) for a in answers}
    for answer in order:
        if len(unseen) >= round(UNSEEN_SHARE * len(answers)):
            break
        if left[answer["intent"]] > 2:  # keep two training siblings per intent (the hard negatives)
            left[answer["intent"]] -= 1
            unseen.add(answer["text"])
    return unseen


def generate_splits(seed: int = SEED) -> dict[str, list[dict]]:
    """{"train", "eval", "corpus", "raw_text"}: the rows of the four files."""
    answers = _answers()
    unseen = _unseen(answers, seed)
    seen = [a for a in answers if a["text"] not in unseen]
    rng, taken = random.Random(f"train:{seed}"), set()
    train = [{"anchor": q, "positive": a["text"]} for a in seen for q in _questions(rng, a, "train", TRAIN_PER_ANSWER,
                                                                                     taken)]
    rng.shuffle(train)
    siblings = {a["text"]: [b["text"] for b in seen if b["intent"] == a["intent"] and b is not a] for a in answers}
    for i, row in enumerate(train):
        if i % round(1 / NEGATIVE_SHARE) == 0:
            row["negative"] = rng.choice(siblings[row["positive"]])
    train_questions = [row["anchor"] for row in train]
    held_rng = random.Random(f"held-out:{seed}")
    held = [{"anchor": q, "positive": a["text"]} for a in answers for q in _questions(held_rng, a, "held",
                                                                                       EVAL_PER_ANSWER, taken)]
    held_rng.shuffle(held)
    corpus = [a["text"] for a in answers]
    random.Random(f"corpus:{seed}").shuffle(corpus)
    raw = corpus + train_questions
    random.Random(f"raw:{seed}").shuffle(raw)
    return {"train": train, "eval": held, "corpus": [{"text": t} for t in corpus], "raw_text": [{"text": t} for t in raw]}


def write_task_files(folder: Path, *, seed: int = SEED) -> dict[str, Path]:
    """Write train/eval/corpus/raw_text ``.jsonl`` (one JSON object per line, UTF-8) under ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, rows in generate_splits(seed).items():
        paths[split] = folder / f"{split}.jsonl"
        paths[split].write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return paths


def describe() -> str:
    """One line for users."""
    n = len(_answers())
    return (f"faq_retrieval: match paraphrased user questions to one of {n} VoltNest home-battery FAQ answers "
            f"(near-duplicate distractors, ~{UNSEEN_SHARE:.0%} answers unseen in training); metric: recall@k.")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tuneforge.tasks.faq_retrieval OUTDIR")
    for split, path in write_task_files(Path(sys.argv[1])).items():
        print(f"{split}: {path}")
