"""Demo task: find the FAQ answer to a user's question (domain retrieval, for embedding models).

The domain is a fictional home battery and solar inverter, the "VoltNest". Files (JSONL)::

    train.jsonl     {"anchor": <question>, "positive": <its answer>, "negative": <a nearest sibling answer>}
                    (the hard negative in half the rows: same intent, another detail, most shared words)
    eval.jsonl      {"anchor": <held-out question>, "positive": <its answer>}
    corpus.jsonl    {"text": <answer>}, every answer: held-out questions are ranked against all of them
    raw_text.jsonl  {"text": ...}, the answers and training questions, shuffled (for unsupervised SimCSE)

Contrastively fine-tune an encoder (MiniLM-L6, mean pooling) or a small decoder (last-token pooling),
then score held-out recall@k over the corpus. The data is built so a general-purpose model leaves a
lot on the table:

* near-duplicate answers: each is an intent template filled with one decisive detail (error code
  E-104 vs E-105, model VoltNest 5 vs 10, iOS vs Android, battery vs inverter warranty, mode, tariff,
  region, charge level, firmware version). Siblings share most of their words, and answers about the
  same detail (VoltNest 10 capacity, power, noise) share it, so neither topic nor detail suffices.
* low lexical overlap: casual paraphrases with lay terms ("how much juice can a VN10 hold"), symptoms
  instead of the answer's wording ("the garage is like an oven" for "cells above 50 °C"), aliases for
  the detail ("error 104", "iPhone", "E7"), fillers and the odd typo. The detail itself is always in
  the question, so each question has exactly one right answer.
* held-out wording: held-out questions use their own templates and never equal a training question
  up to case and punctuation.
* unseen answers: about a fifth of the answers get no training question (their intent does, through
  siblings) and are never a training negative; questions about them test generalisation.

Everything is drawn from seeded ``random.Random`` instances: same seed, same bytes.
"""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

SEED = 0
TRAIN_PER_ANSWER, EVAL_PER_ANSWER = (18, 3)  # questions per answer (train: answers that have training questions)
UNSEEN_SHARE = 0.2  # share of answers with no training question
NEGATIVE_SHARE = 0.5  # share of training rows with a hard negative
MIN_WORDS, MAX_WORDS, MAX_ANSWER_WORDS = 6, 25, 60

# One block per intent. "## name [fields]: answer template" opens it ("## name <table: ..." takes the details
# and facts of block "table"; the default field is "text"). "Q:" lines hold training question templates, "H:"
# lines held-out ones, "|" between them. Other lines are "detail = fact ~ fact ...", one fact per field; facts
# named q_* only feed questions ("|" between options). {v} is the detail, {unit} and {pct} are shared slots.
# An indented line continues the line above. Blocks without questions are tables (models, aliases).
_FAQ = """
## error [meaning fix q_hint]: Error {v} means {meaning}. {fix}
Q: my {unit} is showing {v}, what does that mean|{v} on the display again, what am I supposed to do|got {v} this
    morning, {q_hint}|what is {v} on a voltnest|how do I get rid of {v}|{unit} keeps flagging {v}. {q_hint}. any
    ideas|is {v} something I can fix myself or do I need the installer|app notification says {v}, should I worry
H: screen reads {v} and {q_hint}, what's going on|anyone know what fault {v} is|{q_hint}, now it throws {v}. help
E-101 = grid voltage rose above 253 V ~ The inverter reconnects after five minutes; if it happens most sunny
    afternoons, ask your network operator to check the voltage. ~ lights flicker at midday|the street is full of solar
E-102 = grid voltage dropped below 207 V ~ The inverter reconnects after five minutes; if it happens most evenings,
    ask your network operator to check the voltage. ~ it happens around dinner time|lights go dim in the evening
E-103 = grid frequency left the 49.5-50.5 Hz window ~ This short network disturbance clears itself within five
    minutes; nothing needs doing unless it repeats daily. ~ there was a storm last night|the power blipped
E-104 = the battery cells are above 50 °C ~ Charging pauses until the pack cools. Keep the unit out of direct sun
    with 30 cm of free space around it. ~ the garage is like an oven|we've got a heatwave|sun hits it all afternoon
E-105 = the battery cells are below 0 °C ~ Charging pauses until the pack warms up. Turn on Cold Weather Heating in
    Settings > Battery. ~ it's freezing outside|we had frost last night|it sits in an unheated shed
E-106 = the inverter heatsink is overheating ~ Output is reduced until it cools. Clean the dust off the fan grille
    and keep the vents clear. ~ the fan is really loud|it's covered in cobwebs|output dropped to almost nothing
E-107 = an insulation fault was found on the solar panel strings ~ Turn off the PV isolator and call your
    installer; do not touch the panel wiring. ~ it only shows after heavy rain|the roofer was up there last week
E-108 = an arc fault was detected on the solar input ~ The solar input is locked for safety. Turn off the PV
    isolator and call your installer. ~ I heard crackling near the roof cable|a squirrel chewed something
E-109 = the CT clamp is not detected ~ Check that its plug is firmly in the meter port and the cable is undamaged,
    then restart from the app. ~ an electrician worked in the meter box|house usage shows zero
E-110 = the CT clamp is reading power backwards ~ It is fitted back to front: the arrow must point toward the house,
    away from the grid. Have your installer flip it. ~ the app says I'm exporting at night|the numbers look negative
E-111 = the battery has lost contact with the inverter ~ Check the RJ45 data cable between the units, then restart
    both from Settings > System. ~ the app lists the battery as unavailable|we moved the battery last weekend
E-112 = the gateway has lost its internet connection ~ The system keeps running but the app shows old data. Restart
    your router, then rerun Wi-Fi setup in the app. ~ we got a new router|the wifi password changed
E-113 = the battery and inverter run different firmware ~ Start a firmware update from Settings > Firmware so both
    units match; the error then clears. ~ an update got interrupted|the power went off mid update
E-114 = the backup relay failed its self-test ~ Backup power is off until it is repaired, but the system still runs
    with the grid. Book a service visit. ~ the monthly test failed|got a scary message about backup
E-115 = the state of charge needs recalibrating ~ Let the battery charge to 100% and run down to the reserve once;
    the reading then corrects itself. ~ the percentage jumps around|it went from 40 to 10 in a minute
E-116 = the cooling fan has stopped ~ Power is limited to protect the system. Clear any debris from the fan; if it
    still does not spin, book a service visit. ~ it's gone totally quiet|no humming anymore
E-117 = the battery's DC isolator is switched off ~ Turn the red isolator on the side of the battery to ON; the
    system restarts within a minute. ~ the kids were playing near it|the electrician just left
## led [meaning action]: A {v} status light means {meaning}. {action}
Q: the light on my {unit} is {v}, is that normal|what does a {v} light mean on the battery|{v} LED on the front,
    what's it telling me|why is the little light {v}|the {unit} led went {v}, anything wrong|lamp is {v}, ok or not
H: little indicator on the voltnest shows {v} since this morning, should I do something|my {unit} glows {v}, why
solid green = the system is running normally in its operating mode ~ Nothing needs doing.
blinking green = the battery is idle because it is full or at its reserve ~ It resumes when solar or demand changes.
solid amber = charging or discharging is limited, usually by heat or the export limit ~ The app's status page shows why.
blinking amber = a firmware update is installing ~ Do not switch off the isolator until it turns green again.
solid red = a fault has stopped the system ~ Read the error code in the app and follow the advice for that code.
blinking red = a safety shutdown happened ~ Turn off the battery isolator and call your installer; don't restart it.
solid blue = the unit is in Bluetooth pairing mode ~ Open the app and add the device within 10 minutes.
blinking blue = the unit is trying to join your Wi-Fi ~ If it blinks for over five minutes, rerun Wi-Fi setup.
## models [cap usable kw peak load hours stack total amps kg place fan db like]:
VoltNest Mini = 3.3 ~ 3.0 ~ 1.5 ~ 2.2 ~ a fridge compressor ~ 4 ~ 2 ~ 6.6 ~ 16 ~ 32 ~ on a wall or a sturdy shelf,
    indoors only (IP21) ~ 1.0 ~ 25 ~ a whisper
VoltNest 5 = 5.2 ~ 4.8 ~ 2.5 ~ 3.6 ~ a kettle ~ 7 ~ 3 ~ 15.6 ~ 20 ~ 52 ~ on a wall, indoors or outside (IP65) ~ 1.5 ~
    30 ~ a quiet fridge
VoltNest 10 = 10.4 ~ 9.6 ~ 5.0 ~ 7.0 ~ a kettle and an oven together ~ 14 ~ 3 ~ 31.2 ~ 32 ~ 98 ~ on a wall, indoors
    or outside (IP65) ~ 3.0 ~ 35 ~ a fridge
VoltNest 15 = 15.6 ~ 14.4 ~ 6.0 ~ 8.0 ~ a heat pump ~ 21 ~ 2 ~ 31.2 ~ 40 ~ 145 ~ on the floor only, indoors or
    outside (IP65) ~ 4.0 ~ 38 ~ a quiet conversation
## capacity <models: The {v} holds {cap} kWh, of which {usable} kWh is usable; the rest protects the cells.
Q: how much energy does the {v} actually store|usable kWh on a {v}|how big is the battery in the {v}|is a {v}
    enough storage for an evening|{v} capacity, total vs usable|how much juice can a {v} hold
H: what's the real storage of a {v} once you take off the reserve|how many kilowatt hours do I get out of my {v}
## power <models: The {v} charges and discharges at up to {kw} kW, with {peak} kW for ten seconds to start {load}.
Q: can my {v} run the kettle and the oven at once|max output of the {v}|how fast does the {v} charge up|what's the
    discharge rate on the {v}|{v} power rating in kW|will a {v} cope when the heat pump kicks in
H: does the {v} have enough punch for big appliances|how many watts can the {v} push out
## runtime <models: In a power cut a full {v} runs a fridge, lights, router and TV for about {hours} hours;
    electric heating or an EV charger empties it much faster.
Q: blackout, how long will my {v} keep the lights on|how many hours of backup from a {v}|power went out, how long
    can the {v} run the fridge|{v} backup duration|if the grid is down overnight will the {v} last
H: how long does a charged {v} last when the mains fails|outage tonight: will a {v} get us through till morning
## stacking <models: Up to {stack} {v} units can share one inverter, {total} kWh in all; models cannot be mixed.
Q: can I add a second {v} later|expand storage on my {v}|how many {v} can I chain together|max number of {v}
    batteries on one system|buy another {v} to double capacity, possible
H: is it possible to stack more {v} units onto my current setup|what's the biggest system I can build out of {v}s
## breaker <models: The {v} needs its own {amps} A Type B breaker and an RCD; your installer sizes the cable.
Q: what size breaker for the {v}|which fuse does the {v} need in the consumer unit|does the {v} need its own
    circuit|amp rating of the breaker for a {v}|electrician asking what MCB the {v} wants
H: what protection does the {v} need in the fuse box|sparky wants to know the breaker for a {v}
## mounting <models: The {v} weighs {kg} kg and mounts {place}. Never fix it to plasterboard or a stud wall.
Q: how heavy is the {v}, can I hang it on drywall|can the {v} go outside|where can I put my {v}|{v} weight and
    mounting options|can I install the {v} in the garage or on the side of the house
H: is a {v} too heavy for a stud wall|does the {v} need to be indoors
## noise <models: The {v} is silent at rest; its fan starts above {fan} kW and peaks at {db} dB, like {like}.
Q: is the {v} noisy|does the {v} hum at night|fan noise on a {v}|can I put the {v} by a bedroom|how loud is a {v}
    at full power
H: will a {v} keep us awake if it's on the bedroom wall|decibels of the {v}
## outage: {text}
Q: power cut and we have {v}, what happens|we have {v}, will the house stay on in a blackout|grid went down and we
    have {v}, what does the battery do|outage question: setup is with {v}
H: what does my system do in a blackout if there's {v}|with {v}, do the lights stay on when the street loses power
a Backup Gateway = With a Backup Gateway, the home switches to battery within 20 ms of a power cut; the gateway
    islands the house from the grid so solar keeps charging the battery.
no Backup Gateway = Without a Backup Gateway, the inverter must shut down within two seconds of a power cut
    (anti-islanding rules), so the house goes dark even with a full battery.
a generator = A generator on the Backup Gateway's GEN port starts when the battery falls to its reserve during a
    power cut; the battery then charges from it at up to 3 kW.
## pairing: On {v}, tap Add device, allow {text}, hold the unit's button for 3 s until it glows blue, then pick it.
Q: how do I connect the app to my battery on {v}|pair voltnest with {v}|setting up the unit from my {v}, what are
    the steps|first time setup on {v}, how to link the battery|add new device in the app on {v}
H: getting my {v} talking to the battery for the first time, how|steps to hook up the app on {v} to a new VoltNest
iOS = Bluetooth ;; Android = Bluetooth, Location and Nearby devices
## not_found: {text}
Q: app can't see the battery on my {v}|scan finds nothing on {v}|{v} app says no devices found|bluetooth search
    doesn't show the voltnest on my {v}|why won't my {v} detect the unit
H: VoltNest never shows up in the device list on {v}|searching forever on {v}, battery not appearing
iOS = On iOS, open Settings > VoltNest, turn on Bluetooth access, then scan again within 5 m of the unit.
Android = On Android, allow Location and Nearby devices in Settings > Apps > VoltNest, turn off battery saver, rescan.
## notifications: {text}
Q: not getting alerts on {v}|push notifications stopped on my {v}|no warning when the power went out, using {v}|how
    do I turn on voltnest notifications on {v}|{v}: the app never pings me
H: alerts from the battery don't come through on my {v}|why am I not told about outages on {v}
iOS = On iOS, enable alerts in Settings > Notifications > VoltNest and check that no Focus mode silences them.
Android = On Android, allow VoltNest notifications and set its battery usage to Unrestricted so it keeps running.
## wifi: On {v}, start Settings > Network > Change Wi-Fi in the app; {text}, then choose your new network.
Q: got a new router, how do I reconnect the battery using {v}|change wifi network on voltnest from {v}|wifi
    password changed, update it on {v}|moving the battery to a new wifi, on {v}
H: switched broadband provider, how do I get the system back online from my {v}|new wireless network, steps on {v}
iOS = join the VN-Setup hotspot in the phone's Wi-Fi settings, return to the app
Android = the app joins the VN-Setup hotspot itself, so accept the 'no internet' prompt
## app_version [ver store fix]: The app needs {v} {ver} or later; update it from {store}; if it still crashes, {fix}.
Q: app keeps crashing on {v}|voltnest app closes as soon as I open it on {v}|which {v} version do I need for the
    app|app won't install on my old {v}
H: the app freezes on launch on {v}, any fix|minimum {v} requirement for the VoltNest app
iOS = 15 ~ the App Store ~ reinstall it ;; Android = 9 ~ Google Play ~ clear its storage in Settings > Apps
## export_data: {text}
Q: how do I download my energy data on {v}|export history to a spreadsheet from {v}|get a csv of my usage on
    {v}|want last year's numbers in excel, using {v}
H: can I pull my solar and battery history out as a file on {v}|saving usage stats on {v}, how
iOS = On iOS, open Energy, pick a date range and tap Share > Save to Files to get a CSV.
Android = On Android, open Energy, pick a date range and tap Export; the CSV lands in your Downloads folder.
web portal = In the web portal, open Reports, pick a date range and click Download CSV; over a year comes by email.
## share: {text}; invitees get view-only access unless you make them an owner.
Q: let my wife see the battery app on {v}|share access with family on {v}|add another user from {v}|how do I give
    my partner access using {v}
H: can someone else in the house log in too, I'm on {v}|invite a family member to the system from {v}
iOS = On iOS, go to Settings > Household > Invite and send the link
Android = On Android, go to Settings > Household > Invite and share the code
web portal = In the web portal, go to Account > Members > Add member and enter their email
## warranty: The {v} warranty lasts {text}.
Q: how long is the warranty on the {v}|{v} guarantee period|is the {v} still covered after 7 years|what does the
    {v} warranty cover|warranty terms for the {v}
H: for how many years is my {v} protected if it fails|if the {v} dies in year 6, am I covered
battery = 10 years or 6,000 full cycles, whichever comes first, and guarantees at least 70% of the capacity
inverter = 10 years and includes both parts and labour ;; CT clamp = 2 years; replacements are posted free
Backup Gateway = 5 years for parts; labour is covered for the first two years only
## claim: To claim for a faulty {v}, send us the serial number from {text} and a photo via Support > Warranty.
Q: {v} broke, how do I make a warranty claim|where's the serial number on the {v}|replacement for a dead {v},
    what's the process|claiming a faulty {v} under guarantee
H: my {v} has failed, how do I get it replaced under warranty|what info do you need to replace a broken {v}
battery = the label under the right-hand cover ;; inverter = the sticker on its left side
Backup Gateway = inside its front door ;; CT clamp = the tag on its cable
## void: The {v} warranty is void if {text}.
Q: what would void the warranty on my {v}|can I move the {v} myself without losing the guarantee|things that
    cancel the {v} warranty|will DIY work on the {v} void the cover
H: what could make VoltNest refuse a {v} claim|ways to lose the guarantee on the {v}
battery = it sits where it drops below -10 °C or goes above 50 °C, or anyone but VoltNest opens it
inverter = a non-certified installer connects it or its firmware is modified
Backup Gateway = an unregistered installer wires it or a generator above 5 kW is connected to it
CT clamp = its cable is cut or extended beyond 25 m
## mode: In {v} mode {text}.
Q: what does {v} mode actually do|should I use {v}|explain the {v} setting in the app|is {v} good for saving
    money|{v} mode, does it charge from the grid
H: in plain english, how does {v} behave|what's the point of the {v} option
Self-Use = the battery stores spare solar and powers the house in the evening; it never charges from the grid
Time-of-Use = the battery charges from the grid in the cheap hours you set and covers the expensive ones
Backup Only = the battery stays full and only discharges when the grid fails, so it saves nothing day to day
Export First = solar goes to the grid first up to your export limit, and the battery only takes what is left over
## mode_switch: To use {v}, open Settings > Operating mode, choose {v} and {text}; it applies within two minutes.
Q: how do I turn on {v}|where's the {v} setting|switch my battery to {v}|change operating mode to {v}|pls enable {v}
H: steps to put the system into {v}|I want {v}, where do I change that
Self-Use = save ;; Time-of-Use = enter your cheap and peak hours ;; Backup Only = confirm the reserve warning
Export First = check the export limit your installer set
## tariff: For {v}, pick Time-of-Use mode and {text}; the battery then charges from the grid when power is cheap.
Q: I'm on {v}, what settings should I use|best way to set up the battery for {v}|just switched to {v}, how to
    configure|charge the battery overnight on {v}|schedule setup in the app for {v}
H: signed up for {v}, how should the battery be programmed|making the most of {v} with my VoltNest
Economy 7 = set the cheap window to 00:30-07:30
Economy 10 = add three cheap windows: 00:00-05:00, 13:00-16:00 and 20:00-22:00
a half-hourly tariff = turn on Smart Import so the app follows your supplier's prices
an EV tariff = set the cheap window to 23:30-05:30 and tick Pause discharge while the car charges
## soc_cap: {text}
Q: battery won't charge past {v}|SoC capped at {v}, why|why does the charge stop at {v}|stuck at {v} even with
    loads of sun|state of charge never goes above {v}
H: charging always halts at {v}, is something wrong|tops out at {v} every day, normal
80% = Stopping at 80% means Battery Care is on, limiting charge to slow cell ageing; turn it off in Settings > Battery.
90% = Stopping at 90% is cold protection: below 5 °C the battery limits charging to 90% until the cells warm up.
95% = Stopping at 95% is normal: the last 5% fills during the weekly balancing cycle, which tops every cell up.
## soc_floor: {text}
Q: battery never goes below {v}|why does it stop discharging at {v}|won't drain under {v} in the evening|SoC floor
    stuck at {v}|house pulls from the grid while the battery still has {v}
H: it refuses to use the last {v}, why|discharge halts at {v} every night, can I change that
10% = Stopping at 10% is the fixed minimum that protects the cells; it cannot be lowered.
20% = Stopping at 20% means your backup reserve is 20%; lower it in Settings > Battery if you need no outage power.
30% = Stopping at 30% means Storm Watch raised the reserve ahead of severe weather, until the warning ends.
## export_limit: In {v} the export limit defaults to {text}; the inverter curtails solar above that.
Q: why is my export capped, I'm in {v}|grid export limit for {v}|solar gets throttled at midday, live in {v}|max
    feed-in allowed in {v}
H: we're in {v} and the panels get clipped when sending power back, why|how much can I sell back to the grid in {v}
the UK = 3.68 kW per phase under the G98 rule ;; Germany = 60% of the panels' peak power under the feed-in rules
Australia = 5 kW per phase under most network rules
California = 0 kW until your utility grants permission to operate under Rule 21
## export_raise: To export more in {v}, your installer must {text}, then enter the new limit in the installer menu.
Q: how do I raise the export limit in {v}|can I export more than the default in {v}|increase the feed-in cap,
    install in {v}|who approves a bigger export limit in {v}
H: want to send more solar to the grid, {v}, what paperwork|lifting the export cap on my system in {v}
the UK = apply to the network operator under G99 ;; Australia = request a larger export approval from your network
Germany = register the change with the grid operator and the Marktstammdatenregister
California = get an updated interconnection agreement from your utility
## fw_update: {text}
Q: how do I update the {v} software|{v} firmware update, manual or automatic|latest firmware on the {v}, how to
    install|does the {v} update itself
H: getting new software onto the {v}, what's involved|will updating the {v} cut my power
battery = Battery firmware installs over the air at 2 am when the charge is above 30%; nothing needs doing.
inverter = Inverter firmware starts from Settings > Firmware and takes about 15 minutes; solar output pauses meanwhile.
Backup Gateway = Gateway firmware starts from Settings > Firmware; backup power is off for five minutes as it restarts.
## fw_stuck: If the {v} update sits at the same percentage for over 30 minutes, {text}.
Q: {v} update stuck at {pct}|firmware on the {v} frozen at {pct}|{v} update hasn't moved in an hour|{v} upgrade hung
H: progress bar on the {v} firmware won't budge|the {v} has been updating forever
battery = switch the battery isolator off for one minute and back on; the update resumes by itself
inverter = restart the inverter from its AC isolator and start the update again in the app
Backup Gateway = hold the gateway's reset button for ten seconds; it rolls back to the previous version
## release: Firmware {v} {text}.
Q: what's new in {v}|is it worth installing {v}|{v} changelog|what did {v} change|anything important in {v}
H: what features came with {v}|should I bother updating to {v}
3.1 = added Storm Watch, which raises the backup reserve before severe weather warnings
3.2 = added Smart Import for half-hourly tariffs and fixed false E-109 CT clamp alerts
3.3 = added Cold Weather Heating and cut standby consumption by 8 W ;; 4.1 = fixed stale charge levels after Wi-Fi drops
4.0 = added the generator port on the Backup Gateway and support for three-phase homes
## aliases [alts]: how a question may name a detail besides its own name (codes, models, levels, LEDs: _aliases)
VoltNest Mini = VN Mini|Mini|voltnest mini ;; iOS = iPhone|iPad|ios ;; Android = Samsung phone|Pixel|android phone
web portal = browser|laptop ;; battery = battery pack|batt ;; inverter = hybrid inverter|inverter box
Backup Gateway = gateway|backup switch box ;; CT clamp = current clamp|CT sensor ;; Germany = Deutschland
a Backup Gateway = the backup gateway box|the gateway thing fitted ;; Time-of-Use = TOU|time of use
no Backup Gateway = no gateway fitted|no backup box ;; a generator = a petrol generator|a standby genny
Self-Use = self use|self-consumption ;; Backup Only = backup mode|backup-only
Export First = export priority|export mode ;; Economy 7 = E7|economy seven
Economy 10 = E10|economy ten ;; a half-hourly tariff = agile|a dynamic half hourly tariff ;; Australia = Oz|NSW
an EV tariff = an electric car tariff|an EV night rate ;; the UK = England|Britain ;; California = Cali|CA
"""
_LED_WORDS = {
    "solid": ("solid", "steady", "constant"),
    "blinking": ("blinking", "flashing", "flickering"),
    "green": ("green",),
    "amber": ("amber", "orange", "yellow"),
    "red": ("red",),
    "blue": ("blue",),
}
_SHARED = {"unit": ("battery", "VoltNest", "system", "unit", "setup"), "pct": ("45%", "60%", "99%", "halfway")}
_PREFIXES = ("hi,", "hey,", "quick question:", "hello,", "help!", "ok so", "sorry if this is obvious,", "newbie here:")
_SUFFIXES = ("thanks", "thx", "cheers", "any ideas?", "pls help", "thanks in advance")
_TYPOS = {
    "battery": "batery",
    "because": "bc",
    "please": "pls",
    "really": "rly",
    "firmware": "firmwear",
    "warranty": "warrenty",
    "inverter": "invertor",
    "through": "thru",
    "what": "wat",
    "doesn't": "doesnt",
    "won't": "wont",
    "can't": "cant",
    "what's": "whats",
    "I'm": "im",
    "notifications": "notifcations",
}


def _parse(text: str) -> dict[str, dict]:
    """Blocks by name: {"name", "answer", "fields", "facts": {detail: {field: fact}}, "train", "held"}."""
    blocks: dict[str, dict] = {}
    for line in re.sub(r"\n +", " ", text.strip()).splitlines():  # an indented line continues the one above
        if head := re.fullmatch(r"## (\w+)(?: <(\w+))?(?: \[(.*?)\])?:\s*(.*)", line):
            name, table, fields, answer = head.groups()
            block = blocks[name] = {
                "name": name,
                "answer": answer,
                "train": [],
                "held": [],
                "fields": blocks[table]["fields"] if table else (fields or "text").split(),
                "facts": dict(blocks[table]["facts"]) if table else {},
            }
        elif line.startswith(("Q: ", "H: ")):
            block["train" if line[0] == "Q" else "held"] += line[3:].split("|")
        else:
            for entry in line.split(" ;; "):
                detail, _, facts = entry.partition(" = ")
                parts = facts.split(" ~ ")
                assert len(parts) == len(block["fields"]), entry
                block["facts"][detail] = dict(zip(block["fields"], parts))
    return blocks


_BLOCKS = _parse(_FAQ)
_INTENTS = tuple(block for block in _BLOCKS.values() if block["train"])


def _aliases(detail: str) -> tuple[str, ...]:
    """The ways a question names ``detail``: its own name first."""
    if m := re.fullmatch(r"E-(\d+)", detail):
        return detail, f"E{m[1]}", f"error {m[1]}", f"code {m[1]}", f"err {detail}"
    if m := re.fullmatch(r"VoltNest (\d+)", detail):
        return detail, f"VN{m[1]}", f"Voltnest{m[1]}", f"VN-{m[1]}"
    if m := re.fullmatch(r"(\d+)%", detail):
        return detail, f"{m[1]} percent", f"{m[1]} per cent", m[1]
    if re.fullmatch(r"\d\.\d", detail):
        return detail, f"v{detail}", f"{detail}.0"
    if m := re.fullmatch(r"(solid|blinking) (\w+)", detail):
        return tuple(f"{k} {c}" for k in _LED_WORDS[m[1]] for c in _LED_WORDS[m[2]])
    return (detail, *_BLOCKS["aliases"]["facts"][detail]["alts"].split("|"))


def _answers() -> list[dict]:
    """Every answer, in intent order: {"intent", "detail", "text", "facts", "spec"} (spec: its intent block)."""
    return [
        {
            "intent": intent["name"],
            "detail": detail,
            "text": intent["answer"].format(v=detail, **facts),
            "facts": facts,
            "spec": intent,
        }
        for intent in _INTENTS
        for detail, facts in intent["facts"].items()
    ]


def _key(text: str) -> str:
    """What two questions must differ in: their lowercased words and numbers."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def _typo(rng: random.Random, text: str) -> str:
    """Sometimes one misspelt word: a common typo (15%) or two letters swapped (7%)."""
    roll = rng.random()
    pattern = r"[A-Za-z']+" if roll < 0.15 else r"(?<![\w-])[a-z]{6,}\b" if roll < 0.22 else None
    hits = [m for m in re.finditer(pattern, text) if roll >= 0.15 or m.group() in _TYPOS] if pattern else []
    if not hits:
        return text
    m = rng.choice(hits)
    if roll < 0.15:
        return text[: m.start()] + _TYPOS[m.group()] + text[m.end() :]
    i = m.start() + rng.randrange(1, len(m.group()) - 2)
    return text[:i] + text[i + 1] + text[i] + text[i + 2 :]


def _question(rng: random.Random, answer: dict, split: str) -> str:
    """One question that ``answer`` answers, from the ``split`` templates ("train" or "held")."""
    pattern = rng.choice(answer["spec"][split])
    slots = {
        s: rng.choice(answer["facts"][s].split("|") if s in answer["facts"] else _SHARED[s])
        for s in re.findall(r"\{(\w+)\}", pattern)
        if s != "v"
    }
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
    alias = rng.choice(_aliases(answer["detail"]))
    return text.replace("\x00", alias.lower() if lower else alias)


def _questions(rng: random.Random, answer: dict, split: str, n: int, taken: set[str]) -> list[str]:
    """``n`` questions whose keys are new to ``taken`` (which gains them)."""
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
    """About UNSEEN_SHARE of the answers get no training question; every intent keeps two that do."""
    order = list(answers)
    random.Random(f"unseen:{seed}").shuffle(order)
    left = {a["intent"]: sum(b["intent"] == a["intent"] for b in answers) for a in answers}
    unseen: set[str] = set()
    for answer in order:
        if len(unseen) < round(UNSEEN_SHARE * len(answers)) and left[answer["intent"]] > 2:
            left[answer["intent"]] -= 1
            unseen.add(answer["text"])
    return unseen


def _siblings(text: str, answers: list[dict]) -> list[str]:
    """The other answers of the intent of ``text``, most word overlap first (the nearest near-duplicates)."""
    intent, words = next(a["intent"] for a in answers if a["text"] == text), set(_key(text).split())
    others = [a["text"] for a in answers if a["intent"] == intent and a["text"] != text]
    return sorted(others, key=lambda o: -len(words & set(_key(o).split())) / len(words | set(_key(o).split())))


def generate_splits(seed: int = SEED) -> dict[str, list[dict]]:
    """The rows of the four files: {"train", "eval", "corpus", "raw_text"}."""
    answers = _answers()
    unseen = _unseen(answers, seed)
    seen = [a for a in answers if a["text"] not in unseen]
    rng, taken = random.Random(f"train:{seed}"), set()
    train = [
        {"anchor": q, "positive": a["text"]} for a in seen for q in _questions(rng, a, "train", TRAIN_PER_ANSWER, taken)
    ]
    rng.shuffle(train)
    for i, row in enumerate(train):
        if i % round(1 / NEGATIVE_SHARE) == 0:  # hard negative: a sibling answer that has training questions
            row["negative"] = rng.choice(_siblings(row["positive"], seen)[:2])
    held_rng = random.Random(f"held-out:{seed}")
    held = [
        {"anchor": q, "positive": a["text"]}
        for a in answers
        for q in _questions(held_rng, a, "held", EVAL_PER_ANSWER, taken)
    ]
    held_rng.shuffle(held)
    corpus = [a["text"] for a in answers]
    random.Random(f"corpus:{seed}").shuffle(corpus)
    raw = corpus + [row["anchor"] for row in train]
    random.Random(f"raw:{seed}").shuffle(raw)
    return {
        "train": train,
        "eval": held,
        "corpus": [{"text": t} for t in corpus],
        "raw_text": [{"text": t} for t in raw],
    }


def write_task_files(folder: Path, *, seed: int = SEED) -> dict[str, Path]:
    """Write train/eval/corpus/raw_text ``.jsonl`` (one JSON object per line, UTF-8) under ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, rows in generate_splits(seed).items():
        paths[split] = folder / f"{split}.jsonl"
        paths[split].write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return paths


def describe() -> str:
    """One line for users."""
    splits = generate_splits()
    return (
        f"faq_retrieval: match paraphrased user questions to VoltNest home-battery FAQ answers (near-duplicate "
        f"distractors, ~{UNSEEN_SHARE:.0%} of answers unseen in training); {len(splits['train'])} train pairs, "
        f"{len(splits['eval'])} held-out questions, {len(splits['corpus'])} answers; metric: recall@k."
    )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tuneforge.tasks.faq_retrieval OUTDIR")
    for split, path in write_task_files(Path(sys.argv[1])).items():
        print(f"{split}: {path}")
