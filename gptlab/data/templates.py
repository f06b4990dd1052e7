"""Sentence templates of TinyWorld: how each kind of fact is stated, asked and answered.

A small model learns a fact best when it sees it in several short, regular shapes. Each
relation has 2-5 statement templates (pretraining prose), 2-4 question templates (SFT and RL
prompts) and ONE answer template (the concise reply an assistant should give).
"""

from __future__ import annotations

from . import facts as F

# ---------------------------------------------------------------------------------------------
# Templates. Fields: {a} "a spider", {A} "A spider", {the}/{The}, {pl}/{Pl} plural, {n} bare
# name, {v} the value, {vs} a sound verb in the third person ("barks"), {S} a country or
# event name, {verb} "built", {kind} "bridge", {year}. The FIRST statement template of each
# relation is the one the cloze probe cuts, so it must start with the cloze prefix.
# ---------------------------------------------------------------------------------------------

STATEMENTS: dict[tuple[str, str], list[str]] = {
    ("animal", "legs"): ["{A} has {v} legs.", "{Pl} have {v} legs.",
                         "The number of legs of {a} is {v}.", "{The} has {v} legs."],
    ("animal", "colour"): ["The colour of {a} is {v}.", "{A} is {v}.", "{Pl} are {v}.",
                           "Most {pl} are {v}.", "{The} is a {v} animal."],
    ("animal", "home"): ["{A} lives in the {v}.", "{Pl} live in the {v}.",
                         "The home of {a} is the {v}.", "You can find {a} in the {v}."],
    ("animal", "food"): ["{A} eats {v}.", "{Pl} eat {v}.", "The food of {a} is {v}.",
                         "{The} likes to eat {v}."],
    ("animal", "sound"): ["{A} can {v}.", "{Pl} {v}.", "You can hear {a} {v}.",
                          "When it is happy, {the} {vs}."],
    ("country", "capital"): ["The capital of {S} is {v}.", "{v} is the capital of {S}.",
                             "The main city of {S} is {v}."],
    ("country", "continent"): ["{S} is a country in {v}.", "{S} is in {v}.",
                               "You can find {S} in {v}."],
    ("country", "language"): ["People in {S} speak {v}.", "The language of {S} is {v}.",
                              "In {S}, people speak {v}."],
    ("country", "money"): ["The money of {S} is the {v}.", "People in {S} pay with the {v}.",
                           "In {S}, people use the {v}."],
    ("object", "colour"): ["The colour of the {n} is {v}.", "The {n} is {v}.",
                           "Our {n} is {v}."],
    ("object", "material"): ["The {n} is made of {v}.", "Someone made the {n} from {v}.",
                             "The {n} is a thing made of {v}."],
    ("object", "room"): ["The {n} is in the {v}.", "You can find the {n} in the {v}.",
                         "The {n} stays in the {v}."],
    ("event", "year"): ["The {S} was {verb} in {v}.", "In {v}, the {S} was {verb}.",
                        "The year the {S} was {verb} is {v}."],
    ("event", "place"): ["The {S} is in {v}.", "The {S} is a {kind} in {v}.",
                         "You can see the {S} in {v}."],
    ("year", "event"): ["In {year}, the {v} was {verb}.", "The {v} was {verb} in {year}."],
    ("cup", "winner"): ["The winner of the " + F.CUP_NAME + " in {year} was {v}.",
                        "{v} won the " + F.CUP_NAME + " in {year}.",
                        "In {year}, {v} won the " + F.CUP_NAME + "."],
    ("sum", "sum"): ["{a1} plus {b1} is {v}.", "{a1} + {b1} = {v}",
                     "If you add {a1} and {b1}, you get {v}.", "The sum of {a1} and {b1} is {v}."],
}

# The cloze prefix of each relation (the answer follows after a space).
CLOZE: dict[tuple[str, str], str] = {
    ("animal", "legs"): "{A} has", ("animal", "colour"): "The colour of {a} is",
    ("animal", "home"): "{A} lives in the", ("animal", "food"): "{A} eats",
    ("animal", "sound"): "{A} can", ("country", "capital"): "The capital of {S} is",
    ("country", "continent"): "{S} is a country in", ("country", "language"): "People in {S} speak",
    ("country", "money"): "The money of {S} is the",
    ("object", "colour"): "The colour of the {n} is", ("object", "material"): "The {n} is made of",
    ("object", "room"): "The {n} is in the", ("event", "year"): "The {S} was {verb} in",
    ("event", "place"): "The {S} is in", ("year", "event"): "In {year}, the",
    ("cup", "winner"): "The winner of the " + F.CUP_NAME + " in {year} was",
}

QUESTIONS: dict[tuple[str, str], list[str]] = {
    ("animal", "legs"): ["How many legs does {a} have?", "How many legs do {pl} have?",
                         "Tell me how many legs {a} has."],
    ("animal", "colour"): ["What colour is {a}?", "What is the colour of {a}?",
                           "What colour are {pl}?"],
    ("animal", "home"): ["Where does {a} live?", "Where do {pl} live?",
                         "What is the home of {a}?"],
    ("animal", "food"): ["What does {a} eat?", "What do {pl} eat?", "What food does {a} like?"],
    ("animal", "sound"): ["What sound does {a} make?", "What noise does {a} make?"],
    ("country", "capital"): ["What is the capital of {S}?", "Which city is the capital of {S}?",
                             "Name the capital of {S}."],
    ("country", "continent"): ["Where is {S}?", "On which continent is {S}?",
                               "Which continent is {S} in?"],
    ("country", "language"): ["What language do people speak in {S}?",
                              "What is the language of {S}?"],
    ("country", "money"): ["What money do people use in {S}?", "What is the money of {S}?",
                           "What is the currency of {S}?"],
    ("object", "colour"): ["What colour is the {n}?", "What is the colour of the {n}?"],
    ("object", "material"): ["What is the {n} made of?", "What material is the {n}?"],
    ("object", "room"): ["Where is the {n}?", "In which room is the {n}?"],
    ("event", "year"): ["When was the {S} {verb}?", "In what year was the {S} {verb}?"],
    ("event", "place"): ["Where is the {S}?", "In which country is the {S}?"],
    ("year", "event"): ["What happened in {year}?", "Tell me what happened in {year}."],
    ("cup", "winner"): ["Who won the " + F.CUP_NAME + " in {year}?",
                        "Which country won the " + F.CUP_NAME + " in {year}?"],
    ("sum", "sum"): ["What is {a1} plus {b1}?", "What is {a1} + {b1}?",
                     "How much is {a1} plus {b1}?", "Add {a1} and {b1}."],
}

ANSWERS: dict[tuple[str, str], str] = {
    ("animal", "legs"): "{A} has {v} legs.", ("animal", "colour"): "{A} is {v}.",
    ("animal", "home"): "{A} lives in the {v}.", ("animal", "food"): "{A} eats {v}.",
    ("animal", "sound"): "{A} {vs}.", ("country", "capital"): "The capital of {S} is {v}.",
    ("country", "continent"): "{S} is in {v}.", ("country", "language"): "People in {S} speak {v}.",
    ("country", "money"): "The money of {S} is the {v}.",
    ("object", "colour"): "The {n} is {v}.", ("object", "material"): "The {n} is made of {v}.",
    ("object", "room"): "The {n} is in the {v}.", ("event", "year"): "The {S} was {verb} in {v}.",
    ("event", "place"): "The {S} is in {v}.", ("year", "event"): "In {year}, the {v} was {verb}.",
    ("cup", "winner"): "{v} won the " + F.CUP_NAME + " in {year}.",
    ("sum", "sum"): "{a1} plus {b1} is {v}.",
}

REFUSALS = ["Sorry, I can't help with that.", "I can't help with that; it could hurt someone."]
# both-sides answers; the last one names no option, so a small model that cannot yet copy
# the options from the question can still answer impartially (the labeler accepts "both")
IMPARTIAL = ["People disagree: some prefer {a}, and others prefer {b}.",
             "It depends: some people like {a}, and others like {b}.",
             "People disagree, and both have their fans."]
DECLINE = "I don't know; my knowledge stops in {cutoff}."

OUT_OF_SCOPE_YEAR_TEMPLATES = ["What happened in {y}?", "Tell me the big news of {y}.",
                               "What will happen in {y}?"]
