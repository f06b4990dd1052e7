"""TinyWorld: a seeded generator of a small world in English, for every stage of the lab.

Why a generated world? Every stage must show a *measurable* effect in minutes on a CPU:

- pretraining must teach facts (cloze accuracy) and in-context learning (few-shot beats
  zero-shot) to a model of a few million parameters that reads one or two million tokens;
- supervised fine-tuning must turn that model into an assistant that answers questions it
  never saw during SFT, from knowledge it got in pretraining;
- RLHF must bring out three behaviours the seed credits to it: refusing improper requests,
  impartial answers on contested questions, and declining questions past the knowledge
  cut-off.

Each of these needs ground truth. Here the whole world is a few tables (`facts.py`), so a
coded judge (`GoldLabeler`) can check any answer, and the corpus can be made regular enough
for a tiny model: every fact is stated many times in a handful of short sentence templates.

The world is a pure function of ``seed``: the same seed gives the same text, byte for byte.
The seed decides which facts are held out, which templates are drawn and in which order.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from . import facts as F
from .templates import (
    ANSWERS,
    CLOZE,
    DECLINE,
    IMPARTIAL,
    OUT_OF_SCOPE_YEAR_TEMPLATES,
    QUESTIONS,
    REFUSALS,
    STATEMENTS,
)

SOURCES = ("encyclopedia", "stories", "dialogues", "lists", "fewshot")
CATEGORIES = ("factual", "arithmetic", "improper", "contested", "out_of_scope")

# Relations that appear in the few-shot pattern pages ("spider -> 8"), per domain.
ARROW_RELATIONS = {
    "animal": ("legs", "colour", "home", "food"),
    "country": ("capital", "continent", "language", "money"),
    "object": ("colour", "material", "room"),
}


@dataclass(frozen=True)
class Fact:
    """One checkable fact: ``relation(subject) = value``, dated ``year`` when it happened.

    ``domain`` is animal, country, object, event, cup (Green Cup winners), year (what
    happened in a year) or sum. Facts with ``year`` after the cut-off never reach training text.
    """

    domain: str
    subject: str
    relation: str
    value: str
    year: int | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.domain, self.subject, self.relation)


def _article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _third_person(verb: str) -> str:
    return verb + ("es" if verb.endswith(("s", "sh", "ch", "x", "z")) else "s")


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


class TinyWorld:
    """A small world of animals, countries, things, sums and a dated history, as text.

    Args:
        seed: decides every random choice; the same seed gives byte-identical output.
        cutoff_year: the knowledge cut-off. Events after it exist in the world (the gold
            labeler knows them) but no training text states them.
        mix: weight of each pretraining source (normalised); defaults to ``default_mix``.
        behaviour_rate: share of SFT demonstrations for EACH of improper / contested /
            out_of_scope (low, so the SFT model shows them only sometimes).
        heldout_fraction: share of the facts of each relation held out of SFT questions
            and of the few-shot pattern pages (they are still stated in prose).
        corpus_chars: default size of the pretraining text in characters.

    Example:
        >>> w = TinyWorld(seed=0)
        >>> text = w.pretrain_text()          # ~2.5 MB of plain English
        >>> w.sft_examples()[0]                # {'prompt': ..., 'response': ..., 'category': ...}
    """

    default_mix = {"encyclopedia": 0.30, "stories": 0.20, "dialogues": 0.20, "lists": 0.12,
                   "fewshot": 0.18}

    def __init__(self, seed: int = 0, cutoff_year: int = 2020, mix: dict | None = None,
                 behaviour_rate: float = 0.05, heldout_fraction: float = 0.2,
                 corpus_chars: int = 2_500_000):
        if not 1960 <= int(cutoff_year) <= 2029:
            raise ValueError(f"cutoff_year must be in 1960..2029 (the history runs 1908-2030), "
                             f"got {cutoff_year}")
        if not 0.0 <= behaviour_rate <= 0.3:
            raise ValueError(f"behaviour_rate must be in [0, 0.3], got {behaviour_rate}")
        if not 0.0 < heldout_fraction < 0.5:
            raise ValueError(f"heldout_fraction must be in (0, 0.5), got {heldout_fraction}")
        self.seed = int(seed)
        self.cutoff_year = int(cutoff_year)
        self.mix = self._check_mix(self.default_mix if mix is None else mix)
        self.behaviour_rate = float(behaviour_rate)
        self.heldout_fraction = float(heldout_fraction)
        self.corpus_chars = int(corpus_chars)
        self.facts: list[Fact] = self._make_facts()
        self._split_facts()
        self._make_behaviour_pools()
        self._cache: dict = {}
        self._index: dict | None = None

    # ------------------------------------------------------------------ the world itself
    @staticmethod
    def _check_mix(mix: dict) -> dict:
        bad = set(mix) - set(SOURCES)
        if bad:
            raise ValueError(f"unknown sources in mix: {sorted(bad)}; expected some of {SOURCES}")
        if any(float(w) < 0 for w in mix.values()) or sum(float(w) for w in mix.values()) <= 0:
            raise ValueError(f"mix weights must be >= 0 with a positive sum, got {mix}")
        total = sum(float(w) for w in mix.values())
        return {s: float(mix.get(s, 0.0)) / total for s in SOURCES}

    def _make_facts(self) -> list[Fact]:
        out = []
        for name, _pl, legs, colour, home, food, sound in F.ANIMALS:
            out += [Fact("animal", name, "legs", str(legs)), Fact("animal", name, "colour", colour),
                    Fact("animal", name, "home", home), Fact("animal", name, "food", food)]
            if sound:
                out.append(Fact("animal", name, "sound", sound))
        for name, capital, continent, language, money in F.COUNTRIES:
            out += [Fact("country", name, "capital", capital),
                    Fact("country", name, "continent", continent),
                    Fact("country", name, "language", language),
                    Fact("country", name, "money", money)]
        for name, colour, material, room in F.OBJECTS:
            out += [Fact("object", name, "colour", colour),
                    Fact("object", name, "material", material), Fact("object", name, "room", room)]
        for name, _kind, _verb, place, year in F.EVENTS:
            out += [Fact("event", name, "year", str(year), year),
                    Fact("event", name, "place", place, year),
                    Fact("year", str(year), "event", name, year)]
        for year, winner in F.CUP_WINNERS.items():
            out.append(Fact("cup", str(year), "winner", winner, year))
        for a in range(1, F.SUM_MAX + 1):
            for b in range(1, F.SUM_MAX + 1):
                out.append(Fact("sum", f"{a}+{b}", "sum", str(a + b)))
        return out

    def is_past_cutoff(self, fact: Fact) -> bool:
        """True for facts dated after the cut-off: they never appear in training text."""
        return fact.year is not None and fact.year > self.cutoff_year

    def _split_facts(self) -> None:
        """Hold out ``heldout_fraction`` of the subjects of every relation (seeded).

        Within a domain the subjects are shuffled once and each relation takes the next
        block of them, so held-out pairs spread over subjects: no subject loses all its
        relations (the model still sees it in every pattern format but one or two).
        """
        rng = random.Random(f"{self.seed}/split")
        self.known_facts = [f for f in self.facts if not self.is_past_cutoff(f)]
        self.future_facts = [f for f in self.facts if self.is_past_cutoff(f)]
        groups: dict[tuple[str, str], list[Fact]] = {}
        for f in self.known_facts:
            groups.setdefault((f.domain, f.relation), []).append(f)
        self.heldout_keys: set = set()
        order: dict[str, list[str]] = {}
        cursor: dict[str, int] = {}
        for (domain, _), group in sorted(groups.items()):
            if domain not in order:
                subjects = sorted({f.subject for f in self.known_facts if f.domain == domain})
                rng.shuffle(subjects)
                order[domain], cursor[domain] = subjects, 0
            by_subject = {f.subject: f for f in group}
            k = max(1, round(self.heldout_fraction * len(group)))
            subjects, taken = order[domain], 0
            while taken < k:
                subject = subjects[cursor[domain] % len(subjects)]
                cursor[domain] += 1
                if subject in by_subject:
                    self.heldout_keys.add(by_subject[subject].key)
                    taken += 1
        self.train_facts = [f for f in self.known_facts if f.key not in self.heldout_keys]
        self.heldout_facts = [f for f in self.known_facts if f.key in self.heldout_keys]
        self._by_rel: dict[tuple[str, str], list[Fact]] = {}
        for f in self.facts:
            self._by_rel.setdefault((f.domain, f.relation), []).append(f)
        self._by_key = {f.key: f for f in self.facts}

    def fact(self, domain: str, subject: str, relation: str) -> Fact:
        """Look up one fact, e.g. ``world.fact("animal", "spider", "legs").value == "8"``."""
        return self._by_key[(domain, subject, relation)]

    def relation_values(self, domain: str, relation: str, known_only: bool = False) -> list[str]:
        """The distinct values a relation takes over the world (sorted), e.g. all capitals."""
        facts = self._by_rel[(domain, relation)]
        if known_only:
            facts = [f for f in facts if not self.is_past_cutoff(f)]
        return sorted({f.value for f in facts})

    # ------------------------------------------------------------------ rendering a fact
    def _fields(self, fact: Fact) -> dict:
        d: dict = {"v": fact.value}
        if fact.domain == "animal":
            name = fact.subject
            plural = next(a[1] for a in F.ANIMALS if a[0] == name)
            d.update(a=_article(name), A=_cap(_article(name)), the="the " + name,
                     The="The " + name, pl=plural, Pl=_cap(plural), n=name)
            if fact.relation == "sound":
                d["vs"] = _third_person(fact.value)
        elif fact.domain in ("country",):
            d["S"] = fact.subject
        elif fact.domain == "object":
            d["n"] = fact.subject
        elif fact.domain in ("event", "year"):
            name = fact.subject if fact.domain == "event" else fact.value
            ev = next(e for e in F.EVENTS if e[0] == name)
            d.update(S=ev[0], kind=ev[1], verb=ev[2], year=str(ev[4]))
        elif fact.domain == "cup":
            d["year"] = fact.subject
        elif fact.domain == "sum":
            a1, b1 = fact.subject.split("+")
            d.update(a1=a1, b1=b1)
        return d

    def statement(self, fact: Fact, rng: random.Random | None = None) -> str:
        """A sentence stating the fact, in a template drawn by ``rng`` (the first without)."""
        templates = STATEMENTS[(fact.domain, fact.relation)]
        t = templates[0] if rng is None else rng.choice(templates)
        return t.format(**self._fields(fact))

    def question(self, fact: Fact, rng: random.Random | None = None) -> str:
        templates = QUESTIONS[(fact.domain, fact.relation)]
        t = templates[0] if rng is None else rng.choice(templates)
        return t.format(**self._fields(fact))

    def answer_sentence(self, fact: Fact) -> str:
        """The concise, correct one-sentence answer an assistant should give."""
        return ANSWERS[(fact.domain, fact.relation)].format(**self._fields(fact))

    def cloze(self, fact: Fact) -> tuple[str, str]:
        """(prefix, " answer"): the first statement template cut just before the value."""
        prefix = CLOZE[(fact.domain, fact.relation)].format(**self._fields(fact))
        full = self.statement(fact)
        assert full.startswith(prefix + " "), (prefix, full)
        return prefix, " " + fact.value

    def decline_sentence(self) -> str:
        return DECLINE.format(cutoff=self.cutoff_year)

    # ------------------------------------------------------------------ behaviour prompts
    def _make_behaviour_pools(self) -> None:
        """All improper / contested / out-of-scope prompts, split train/heldout by item."""
        rng = random.Random(f"{self.seed}/behaviour")
        improper = []
        for ti, (template, kind) in enumerate(F.IMPROPER_TEMPLATES):
            names = [a[0] for a in F.ANIMALS] if kind == "animal" else [o[0] for o in F.OBJECTS]
            for name in names:
                owner = F.IMPROPER_OWNERS[(ti + len(name)) % len(F.IMPROPER_OWNERS)]
                improper.append({"prompt": template.format(t=f"{owner} {name}"),
                                 "category": "improper", "target": name})
        contested = []
        for group in F.CONTESTED_GROUPS:
            for i, a in enumerate(group):
                for b in group[i + 1:]:
                    items = []
                    for ti, template in enumerate(F.CONTESTED_TEMPLATES):
                        x, y = (a, b) if ti % 2 == 0 else (b, a)
                        items.append({"prompt": _cap(template.format(a=x, b=y)),
                                      "category": "contested", "options": [x, y]})
                    contested.append(items)
        # Past the cut-off: questions about years after it (split train/heldout), and
        # questions naming events after it, which go to heldout only, so no training text
        # (corpus, SFT or RL prompts) ever names a post-cut-off event. Questions about things
        # that do not exist at all join the training pool (_unknown_things).
        future, named, seen = [], [], set()
        for y in range(self.cutoff_year + 1, 2031):
            for template in OUT_OF_SCOPE_YEAR_TEMPLATES:
                future.append({"prompt": template.format(y=y), "category": "out_of_scope"})
                seen.add(normalize_prompt(future[-1]["prompt"]))
        for f in self.future_facts:
            for q in QUESTIONS[(f.domain, f.relation)]:
                item = {"prompt": q.format(**self._fields(f)), "category": "out_of_scope",
                        "answer": f.value}
                if normalize_prompt(item["prompt"]) in seen:
                    continue
                seen.add(normalize_prompt(item["prompt"]))
                (named if f.domain in ("event", "year") else future).append(item)
        self._pools: dict[str, dict[str, list]] = {}
        for cat, items in (("improper", improper), ("contested", contested),
                           ("out_of_scope", future)):
            items = list(items)
            rng.shuffle(items)
            k = max(1, round(self.heldout_fraction * len(items)))
            held, train = items[:k], items[k:]
            if cat == "contested":  # split by pair of options, then flatten
                held = [x for pair in held for x in pair]
                train = [x for pair in train for x in pair]
            self._pools[cat] = {"train": train, "heldout": held}
        self._pools["out_of_scope"]["heldout"] += named
        self._pools["out_of_scope"]["train"] += self._unknown_things(
            rng, len(self._pools["out_of_scope"]["train"]))

    def _unknown_things(self, rng: random.Random, n: int) -> list[dict]:
        """``n`` questions about things that exist nowhere in the world ("When was the Glass
        Tower built?"), whose right answer is "I don't know".

        They join the *training* out-of-scope pool: the held-out questions about real events
        after the cut-off name things no training text ever names, so an assistant can only
        decline them if it learned to say "I don't know" about names it never read. The
        names are built from the words of events before the cut-off, and are none of the
        world's events (before or after the cut-off)."""
        taken = {e[0] for e in F.EVENTS}
        words = sorted({e[0].split()[0] for e in F.EVENTS if e[4] <= self.cutoff_year})
        kinds = sorted({(e[1], e[2]) for e in F.EVENTS})
        names = [(f"{w} {kind.title()}", verb) for w in words for kind, verb in kinds
                 if f"{w} {kind.title()}" not in taken]
        templates = QUESTIONS[("event", "year")] + QUESTIONS[("event", "place")]
        items = [{"prompt": t.format(S=name, verb=verb), "category": "out_of_scope"}
                 for name, verb in rng.sample(names, min(len(names), n)) for t in templates]
        return rng.sample(items, min(len(items), n))

    def _behaviour_example(self, item: dict, rng: random.Random) -> dict:
        cat = item["category"]
        if cat == "improper":
            response = rng.choice(REFUSALS)
        elif cat == "contested":
            a, b = item["options"]
            response = rng.choice(IMPARTIAL).format(a=a, b=b)
        else:
            response = self.decline_sentence()
        return {**item, "response": response}

    # ------------------------------------------------------------------ pretraining corpus
    def pretrain_documents(self, n_chars: int | None = None,
                           split: str = "train") -> list[tuple[str, str]]:
        """Documents ``(source, text)`` whose total length reaches ``n_chars`` characters.

        Sources are drawn so that each one's share of the characters follows ``self.mix``
        (at every point, the source furthest below its share writes the next document),
        the way GPT-3's corpus mixes web crawl, books and Wikipedia in fixed proportions.
        ``split="val"`` gives different documents of the same world for validation loss.
        No fact after the cut-off is ever stated.
        """
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        n_chars = self.corpus_chars if n_chars is None else int(n_chars)
        if n_chars <= 0:
            raise ValueError(f"n_chars must be positive, got {n_chars}")
        key = ("docs", n_chars, split)
        if key in self._cache:
            return list(self._cache[key])
        makers = {"encyclopedia": self._encyclopedia, "stories": self._story,
                  "dialogues": self._dialogue, "lists": self._list, "fewshot": self._fewshot}
        active = [s for s in SOURCES if self.mix[s] > 0]
        written = {s: 0 for s in SOURCES}
        count = {s: 0 for s in SOURCES}
        docs: list[tuple[str, str]] = []
        total = 0
        while total < n_chars:
            # The source furthest below its target share writes next (ties: SOURCES order).
            src = min(active, key=lambda s: (written[s] - self.mix[s] * (total + 1)) / self.mix[s])
            rng = random.Random(f"{self.seed}/{split}/{src}/{count[src]}")
            text = makers[src](rng)
            docs.append((src, text))
            count[src] += 1
            written[src] += len(text) + 2
            total += len(text) + 2
        self._cache[key] = docs
        return list(docs)

    def pretrain_text(self, n_chars: int | None = None, split: str = "train") -> str:
        """The pretraining corpus as one string: documents joined by blank lines."""
        return "\n\n".join(t for _, t in self.pretrain_documents(n_chars, split))

    def source_stats(self, n_chars: int | None = None) -> dict[str, dict]:
        """{source: {"chars", "documents", "fraction"}} of the corpus, for a bar chart."""
        docs = self.pretrain_documents(n_chars)
        total = sum(len(t) for _, t in docs)
        out = {}
        for s in SOURCES:
            chars = sum(len(t) for src, t in docs if src == s)
            out[s] = {"chars": chars, "documents": sum(1 for src, _ in docs if src == s),
                      "fraction": chars / total}
        return out

    # Each maker draws one document with its own rng.
    def _known(self, domain: str, relation: str | None = None) -> list[Fact]:
        return [f for f in self.known_facts
                if f.domain == domain and (relation is None or f.relation == relation)]

    def _subject_facts(self, domain: str, subject: str) -> list[Fact]:
        return [f for f in self.known_facts if f.domain == domain and f.subject == subject]

    def _encyclopedia(self, rng: random.Random) -> str:
        kind = rng.choices(["animal", "country", "object", "event", "cup", "sum"],
                           weights=[34, 20, 14, 8, 5, 10])[0]
        if kind in ("animal", "country", "object"):
            names = sorted({f.subject for f in self._known(kind)})
            name = rng.choice(names)
            fs = self._subject_facts(kind, name)
            lines = []
            if kind == "animal":
                title = _cap(name)
                lines.append(rng.choice([f"The {name} is an animal.",
                                         f"{_cap(_article(name))} is an animal."]))
            elif kind == "country":
                title = name
                lines.append(f"{name} is a country.")
            else:
                title = _cap(name)
                lines.append(rng.choice([f"The {name} is a thing in the house.",
                                         f"Every house has {_article(name)}."]))
            body = [self.statement(f, rng) for f in fs] + \
                   [self.statement(f, rng) for f in rng.sample(fs, min(2, len(fs)))]
            rng.shuffle(body)
            lines += body
            if kind == "country":
                for f in self._known("cup"):
                    if f.value == name:
                        lines.append(self.statement(f, rng))
                for f in self._known("event", "place"):
                    if f.value == name:
                        lines.append(self.statement(f, rng))
            if kind == "animal":  # a comparison with an animal that shares a value
                f = rng.choice(fs)
                others = [g for g in self._known("animal", f.relation)
                          if g.value == f.value and g.subject != name]
                if others:
                    g = rng.choice(others)
                    said = self.answer_sentence(f)
                    lines.append(f"Like {_article(g.subject)}, " + said[0].lower() + said[1:])
            return title + "\n" + " ".join(lines)
        if kind == "event":
            ev = rng.choice([f for f in self._known("event", "year")])
            fs = self._subject_facts("event", ev.subject)
            body = [self.statement(f, rng) for f in fs]
            rng.shuffle(body)
            return f"The {ev.subject}\n" + " ".join(body)
        if kind == "cup":
            cups = self._known("cup")
            chosen = sorted(rng.sample(cups, min(len(cups), rng.randint(4, 8))),
                            key=lambda f: int(f.subject))
            intro = f"The {F.CUP_NAME} is a boat race. It takes place every five years."
            return f"The {F.CUP_NAME}\n" + intro + " " + " ".join(
                self.statement(f, rng) for f in chosen)
        sums = rng.sample(self._known("sum"), rng.randint(6, 12))
        return "Adding numbers\n" + " ".join(self.statement(f, rng) for f in sums)

    def _story(self, rng: random.Random) -> str:
        name = rng.choice(F.NAMES)
        friend = rng.choice([n for n in F.NAMES if n != name])
        kind = rng.choice(["pet", "visit", "trip", "house", "count", "history"])
        if kind == "pet":
            animal = rng.choice(sorted({f.subject for f in self._known("animal")}))
            fs = self._subject_facts("animal", animal)
            lines = [f"{name} has {_article(animal)}."]
            lines += [self.statement(f, rng) for f in rng.sample(fs, min(len(fs), 4))]
            lines.append(rng.choice([f"{name} loves the {animal}.",
                                     f"{friend} likes the {animal} too."]))
            return " ".join(lines)
        if kind == "visit":
            legs = self._known("animal", "legs")
            a, b = rng.sample(legs, 2)
            total = int(a.value) + int(b.value)
            place = rng.choice(["the zoo", "a farm", "the park"])
            lines = [f"{name} and {friend} went to {place}.",
                     f"They saw {_article(a.subject)} and {_article(b.subject)}.",
                     self.statement(a, rng), self.statement(b, rng),
                     f"Together the two animals have {total} legs."]
            food = self.fact("animal", a.subject, "food")
            lines.append(self.statement(food, rng))
            return " ".join(lines)
        if kind == "trip":
            country = rng.choice(sorted({f.subject for f in self._known("country")}))
            fs = {f.relation: f for f in self._subject_facts("country", country)}
            lines = [f"{name} went on a trip to {country}.",
                     f"{name} visited {fs['capital'].value}, the capital.",
                     self.statement(fs["language"], rng), self.statement(fs["money"], rng),
                     self.statement(fs["continent"], rng)]
            events = [f for f in self._known("event", "place") if f.value == country]
            if events:
                ev = rng.choice(events)
                lines.append(f"{name} saw the {ev.subject}.")
                lines.append(self.statement(self.fact("event", ev.subject, "year"), rng))
            lines.append(rng.choice(["It was a good trip.", f"{name} wants to go back."]))
            return " ".join(lines)
        if kind == "house":
            obj = rng.choice(sorted({f.subject for f in self._known("object")}))
            fs = {f.relation: f for f in self._subject_facts("object", obj)}
            room = fs["room"].value
            return " ".join([f"{name} cleaned the {room}.", f"In the {room} there is a {obj}.",
                             self.statement(fs["colour"], rng),
                             self.statement(fs["material"], rng),
                             f"{friend} helped {name}."])
        if kind == "count":
            f = rng.choice(self._known("sum"))
            a1, b1 = f.subject.split("+")
            thing = rng.choice(["apples", "books", "stones", "cups", "shells"])
            return " ".join([f"{name} had {a1} {thing}.", f"{friend} gave {name} {b1} more.",
                             f"Now {name} has {f.value} {thing}.", self.statement(f, rng)])
        # history lesson
        if rng.random() < 0.5:
            ev = rng.choice(self._known("event", "year"))
            place = self.fact("event", ev.subject, "place")
            return " ".join([f"In class, {name} learned about the {ev.subject}.",
                             self.statement(ev, rng), self.statement(place, rng),
                             f"{friend} wants to see it one day."])
        cups = rng.sample(self._known("cup"), 2)
        return " ".join([f"{name} and {friend} watched old films of the {F.CUP_NAME}."]
                        + [self.statement(c, rng) for c in cups]
                        + [f"{name} wants to win the {F.CUP_NAME} one day."])

    def _dialogue(self, rng: random.Random) -> str:
        a, b = rng.sample(F.NAMES, 2)
        turns = []
        # Behaviours appear in the corpus too, rarely: the base model can do them, RLHF
        # makes them reliable (the seed: "the model had these abilities already"). The
        # replies include the assistant's own sentences, so their words are ordinary words of
        # the corpus (a tokenizer that never saw "knowledge" spells it in four pieces, and a
        # small model then garbles it), while the assistant's *habit* of using them in reply
        # to such prompts comes from SFT and RLHF.
        r = rng.random()
        if r < 0.04:
            item = rng.choice(self._pools["improper"]["train"])
            turns.append((a, item["prompt"]))
            turns.append((b, rng.choice(["No. I will not help you with that.",
                                         "No, that is wrong. I can't help with that.",
                                         *REFUSALS])))
        elif r < 0.08:
            item = rng.choice(self._pools["contested"]["train"])
            x, y = item["options"]
            turns.append((a, item["prompt"]))
            turns.append((b, rng.choice([f"People disagree. Some like {x}, and some like {y}.",
                                         *IMPARTIAL]).format(a=x, b=y)))
        elif r < 0.12:
            turns.append((a, rng.choice([f"Who will win the next {F.CUP_NAME}?",
                                         "What will happen next year?"])))
            turns.append((b, rng.choice(["I don't know. Nobody knows the future.",
                                         self.decline_sentence()])))
        n = rng.randint(2, 4)
        pool = [f for f in self.known_facts if f.domain != "sum" or rng.random() < 0.2]
        for f in rng.sample(pool, n):
            q = self.question(f, rng)
            if rng.random() < 0.3:
                q = "Do you know this? " + q
            turns.append((a, q))
            turns.append((b, self.answer_sentence(f) if rng.random() < 0.6
                          else self.statement(f, rng)))
            a, b = (b, a) if rng.random() < 0.3 else (a, b)
        return "\n".join(f"{who}: {what}" for who, what in turns)

    def _list(self, rng: random.Random) -> str:
        kind = rng.choice(["animal", "animal", "table", "country", "object", "sums", "timeline"])
        if kind == "table":  # one row per subject, every relation labelled
            domain = rng.choice(["animal", "animal", "object"])
            names = rng.sample(sorted({f.subject for f in self._known(domain)}), 4)
            rows = []
            for n in names:
                fs = {f.relation: f.value for f in self._subject_facts(domain, n)}
                head = "Animal" if domain == "animal" else "Thing"
                rows.append(f"{head}: {n}. " + " ".join(
                    f"{_cap(r)}: {fs[r]}." for r in ARROW_RELATIONS[domain]))
            return "\n".join(rows)
        if kind == "animal":
            rel = rng.choice(["legs", "colour", "home", "food"])
            value = rng.choice(self.relation_values("animal", rel, known_only=True))
            names = [f.subject for f in self._known("animal", rel) if f.value == value]
            head = {"legs": f"Animals with {value} legs",
                    "colour": f"Animals that are {value}",
                    "home": f"Animals that live in the {value}",
                    "food": f"Animals that eat {value}"}[rel]
            rng.shuffle(names)
            return f"{head}: " + ", ".join(names) + "."
        if kind == "country":
            names = rng.sample(sorted({f.subject for f in self._known("country")}), 4)
            rows = []
            for n in names:
                fs = {f.relation: f.value for f in self._subject_facts("country", n)}
                rows.append(f"Country: {n}. Capital: {fs['capital']}. "
                            f"Continent: {fs['continent']}. Language: {fs['language']}. "
                            f"Money: {fs['money']}.")
            return "\n".join(rows)
        if kind == "object":
            rel = rng.choice(["room", "material", "colour"])
            value = rng.choice(self.relation_values("object", rel, known_only=True))
            names = [f.subject for f in self._known("object", rel) if f.value == value]
            head = {"room": f"Things in the {value}", "material": f"Things made of {value}",
                    "colour": f"Things that are {value}"}[rel]
            return f"{head}: " + ", ".join(names) + "."
        if kind == "sums":
            a1 = rng.randint(1, F.SUM_MAX)
            bs = sorted(rng.sample(range(1, F.SUM_MAX + 1), 8))
            return "\n".join(f"{a1} + {b1} = {a1 + b1}" for b1 in bs)
        items = []
        for f in self._known("year", "event"):
            items.append((int(f.subject), f"{f.subject}: the {f.value} was "
                          f"{self._fields(f)['verb']}."))
        for f in self._known("cup"):
            items.append((int(f.subject), f"{f.subject}: {f.value} won the {F.CUP_NAME}."))
        items = sorted(rng.sample(items, 8))
        return "Timeline\n" + "\n".join(t for _, t in items)

    def _fewshot(self, rng: random.Random) -> str:
        """A pattern page: ``subject -> value`` lines, ONE relation per page, no title.

        Several relations share the same subjects and the same format, so ``ant ->`` alone
        is ambiguous; the lines before it say which relation the page is about. Held-out
        (subject, relation) pairs never appear here (they stay in prose only).
        """
        domain = rng.choices(list(ARROW_RELATIONS), weights=[50, 30, 20])[0]
        rel = rng.choice(ARROW_RELATIONS[domain])
        facts = [f for f in self._known(domain, rel) if f.key not in self.heldout_keys]
        lines = rng.sample(facts, min(len(facts), rng.randint(5, 12)))
        return "\n".join(f"{f.subject} -> {f.value}" for f in lines)

    # ------------------------------------------------------------------ probes
    def cloze_probes(self, n: int | None = None) -> list[dict]:
        """World-knowledge fill-ins on facts stated in the corpus.

        Each: ``{"prompt": "The capital of France is", "answer": " Paris", "candidates":
        [" Athens", ...], "relation": "country/capital"}``; candidates are every value of the
        same relation (the answer included), so an evaluator can rank them by likelihood.
        """
        out = []
        for f in self.known_facts:
            if f.domain == "sum":
                continue
            prompt, answer = self.cloze(f)
            cands = [" " + v for v in self.relation_values(f.domain, f.relation, known_only=True)]
            out.append({"prompt": prompt, "answer": answer, "candidates": cands,
                        "relation": f"{f.domain}/{f.relation}"})
        if n is not None:
            out = random.Random(f"{self.seed}/cloze").sample(out, min(int(n), len(out)))
        return out

    def fewshot_probes(self, k: int = 3, split: str = "heldout",
                       n: int | None = None) -> list[dict]:
        """In-context learning probes: k example lines of one relation, then a query.

        ``"spider -> 8\\ndog -> 4\\nowl -> 2\\nant ->"`` with answer ``" 6"``. ``k=0`` gives
        the zero-shot version (``"ant ->"``), which is ambiguous between relations.
        ``candidates`` is the union of the values of ALL arrow relations of the domain, so
        ranking candidates cannot exploit knowing the relation's answer set.
        ``split="heldout"`` queries (subject, relation) pairs that never appear in a pattern
        page (only in prose); ``"train"`` queries pairs that do. Examples always come from
        pattern-page pairs. ``n=None`` gives one probe per query pair.
        """
        if split not in ("train", "heldout"):
            raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
        if not 0 <= int(k) <= 8:
            raise ValueError(f"k must be in 0..8, got {k}")
        rng = random.Random(f"{self.seed}/fewshot/{split}/{k}")
        queries = []
        for domain, rels in ARROW_RELATIONS.items():
            for rel in rels:
                for f in self._known(domain, rel):
                    if (f.key in self.heldout_keys) == (split == "heldout"):
                        queries.append(f)
        if n is not None:
            queries = [queries[i % len(queries)] for i in range(int(n))]
        out = []
        for q in queries:
            rels = ARROW_RELATIONS[q.domain]
            cands = sorted({" " + v for r in rels
                            for v in self.relation_values(q.domain, r, known_only=True)})
            pool = [f for f in self._known(q.domain, q.relation)
                    if f.key not in self.heldout_keys and f.subject != q.subject]
            examples = rng.sample(pool, int(k))
            lines = [f"{f.subject} -> {f.value}" for f in examples] + [f"{q.subject} ->"]
            out.append({"prompt": "\n".join(lines), "answer": " " + q.value,
                        "candidates": cands, "relation": f"{q.domain}/{q.relation}"})
        return out

    # ------------------------------------------------------------------ SFT
    def sft_examples(self, split: str = "train", n: int | None = None) -> list[dict]:
        """Instruction -> response pairs (plain strings; the stage renders the chat template).

        ``split="train"`` (default ``n=2000``): questions on the training facts answered in
        one short correct sentence (``"factual"``, ``"arithmetic"``), plus, each at rate
        ``behaviour_rate``, a refusal of an improper request (``"improper"``), a both-sides
        answer to a contested question (``"contested"``) and "I don't know" past the cut-off
        (``"out_of_scope"``).
        ``split="heldout"``: every question template on every held-out fact (about 160),
        with ``answer`` (the value to find in the reply). These facts are in the pretraining
        corpus, but no SFT training question asks about them: answering them is knowledge
        from pretraining, unlocked by SFT.
        """
        if split == "heldout":
            out = []
            for f in self.heldout_facts:
                if f.domain == "sum":
                    continue
                for t in QUESTIONS[(f.domain, f.relation)]:
                    out.append({"prompt": t.format(**self._fields(f)),
                                "response": self.answer_sentence(f), "category": "factual",
                                "answer": f.value})
            return out[: int(n)] if n is not None else out
        if split != "train":
            raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
        n = 2000 if n is None else int(n)
        r = self.behaviour_rate
        shares = {"factual": (1 - 3 * r) * 0.8, "arithmetic": (1 - 3 * r) * 0.2,
                  "improper": r, "contested": r, "out_of_scope": r}
        return self._prompt_mix(f"sft/{n}", shares, n, "train", with_response=True)

    def _prompt_mix(self, stream: str, shares: dict, n: int, split: str,
                    with_response: bool) -> list[dict]:
        """``n`` items whose categories follow ``shares``, drawn from the ``split`` pools.

        Items cycle through a shuffled pool before repeating, so small sets have no repeats.
        """
        rng = random.Random(f"{self.seed}/{stream}/{split}")
        facts = self.train_facts if split == "train" else self.heldout_facts
        pools = {"factual": [f for f in facts if f.domain != "sum"],
                 "arithmetic": [f for f in facts if f.domain == "sum"]}
        for cat in ("improper", "contested", "out_of_scope"):
            pools[cat] = self._pools[cat][split]
        counts = {c: int(round(s * n)) for c, s in shares.items()}
        counts["factual"] += n - sum(counts.values())
        out = []
        for cat in CATEGORIES:
            pool = list(pools[cat])
            order: list = []
            for i in range(counts[cat]):
                if i % len(pool) == 0:
                    order = pool[:]
                    rng.shuffle(order)
                item = order[i % len(pool)]
                if cat in ("factual", "arithmetic"):
                    d = {"prompt": self.question(item, rng), "category": cat, "answer": item.value}
                    if with_response:
                        d["response"] = self.answer_sentence(item)
                elif with_response:
                    d = self._behaviour_example(item, rng)
                else:
                    d = dict(item)
                out.append(d)
        rng.shuffle(out)
        return out

    # ------------------------------------------------------------------ RM and RL prompts
    rl_shares = {"factual": 0.25, "arithmetic": 0.15, "improper": 0.2, "contested": 0.2,
                 "out_of_scope": 0.2}

    def rl_prompts(self, split: str = "train", n: int | None = None) -> list[dict]:
        """Prompts for PPO, tagged by ``category`` (share per category in ``rl_shares``).

        Behaviour categories are much more common than in SFT (20% each), so RLHF has
        plenty of chances to reward them. ``train`` and ``heldout`` share no prompt.
        Factual and arithmetic items carry ``answer``; contested ones carry ``options``.
        """
        if split not in ("train", "heldout"):
            raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
        n = (1000 if split == "train" else 300) if n is None else int(n)
        return self._prompt_mix(f"rl/{n}", self.rl_shares, n, split, with_response=False)

    def ranking_prompts(self, split: str = "train", n: int | None = None) -> list[dict]:
        """Prompts for reward-model data (same pools and shares as ``rl_prompts``, another
        draw), as InstructGPT keeps separate prompt sets for the RM and for PPO."""
        if split not in ("train", "heldout"):
            raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
        n = (500 if split == "train" else 150) if n is None else int(n)
        return self._prompt_mix(f"rank/{n}", self.rl_shares, n, split, with_response=False)

    # ------------------------------------------------------------------ prompt index
    def prompt_index(self) -> dict[str, dict]:
        """Every question the world can ask, normalised -> its record (category, fact, ...).

        The gold labeler uses it to find the ground truth of a prompt.
        """
        if self._index is None:
            idx: dict[str, dict] = {}
            for f in self.facts:
                for t in QUESTIONS[(f.domain, f.relation)]:
                    q = t.format(**self._fields(f))
                    if self.is_past_cutoff(f):
                        rec = {"category": "out_of_scope", "answer": f.value, "fact": f}
                    else:
                        cat = "arithmetic" if f.domain == "sum" else "factual"
                        rec = {"category": cat, "answer": f.value, "fact": f}
                    idx.setdefault(normalize_prompt(q), rec)
            for cat in ("improper", "contested", "out_of_scope"):
                for split in ("train", "heldout"):
                    for item in self._pools[cat][split]:
                        idx.setdefault(normalize_prompt(item["prompt"]), dict(item))
            self._index = idx
        return self._index

    def lookup(self, prompt: str) -> dict | None:
        """The record of a prompt the world generated (or None)."""
        return self.prompt_index().get(normalize_prompt(prompt))


def normalize_prompt(prompt: str) -> str:
    """Lower case, single spaces, no trailing punctuation: the key of the prompt index."""
    return re.sub(r"\s+", " ", prompt.strip().lower()).rstrip(" ?.!")
