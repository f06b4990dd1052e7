"""Tests of gptlab.data: the TinyWorld generator, the gold labeler and the loaders."""

import json
import random
import re

import pytest

from gptlab.data import GoldLabeler, TinyWorld, load_jsonl, load_preferences, load_sft, load_text
from gptlab.data import facts as F
from gptlab.data.templates import QUESTIONS

SMALL = 300_000  # characters of corpus for most tests


@pytest.fixture(scope="module")
def world():
    return TinyWorld(seed=0)


@pytest.fixture(scope="module")
def corpus(world):
    return world.pretrain_text()


@pytest.fixture(scope="module")
def gold(world):
    return GoldLabeler(world)


def _training_prompts(w):
    return ([d["prompt"] for d in w.sft_examples("train")]
            + [d["prompt"] for d in w.rl_prompts("train")]
            + [d["prompt"] for d in w.ranking_prompts("train")])


# ---------------------------------------------------------------------------- determinism
def test_same_seed_gives_byte_identical_outputs():
    a, b = TinyWorld(seed=3), TinyWorld(seed=3)
    assert a.pretrain_text(SMALL) == b.pretrain_text(SMALL)
    assert a.pretrain_text(SMALL, split="val") == b.pretrain_text(SMALL, split="val")
    assert a.sft_examples() == b.sft_examples()
    assert a.rl_prompts("heldout") == b.rl_prompts("heldout")
    assert a.fewshot_probes(3) == b.fewshot_probes(3)


def test_different_seeds_give_different_text_and_splits():
    a, b = TinyWorld(seed=0), TinyWorld(seed=1)
    assert a.pretrain_text(SMALL) != b.pretrain_text(SMALL)
    assert a.heldout_keys != b.heldout_keys


def test_val_split_differs_from_train_split(world):
    assert world.pretrain_text(SMALL, split="val") != world.pretrain_text(SMALL)


# ---------------------------------------------------------------------------- corpus
def test_corpus_uses_the_assistants_behaviour_sentences_in_dialogues(corpus, world):
    # the words of the SFT replies (refusal, both sides, "my knowledge stops in ...") must be
    # ordinary corpus words, so the tokenizer merges them and the base model can spell them
    from gptlab.data.templates import IMPARTIAL, REFUSALS

    for sentence in REFUSALS + [world.decline_sentence()]:
        assert corpus.count(sentence) >= 3, sentence
    for template in IMPARTIAL:
        head = template.split("{a}")[0]
        assert corpus.count(head) >= 3, head


def test_default_corpus_is_a_few_megabytes_of_plain_text(corpus):
    assert 2_000_000 <= len(corpus) <= 3_000_000
    assert "<|" not in corpus
    # a small vocabulary, so a 2048-token BPE holds nearly every word whole
    assert len(set(re.findall(r"[A-Za-z]+", corpus))) < 1500


def test_mix_weights_are_honoured():
    mix = {"encyclopedia": 0.5, "stories": 0.1, "dialogues": 0.1, "lists": 0.1, "fewshot": 0.2}
    w = TinyWorld(seed=0, mix=mix)
    stats = w.source_stats(SMALL)
    for s, share in mix.items():
        assert abs(stats[s]["fraction"] - share) < 0.02, (s, stats[s])


def test_zero_weight_source_is_absent():
    w = TinyWorld(seed=0, mix={"stories": 1.0, "fewshot": 0.0})
    assert {s for s, _ in w.pretrain_documents(100_000)} == {"stories"}


def test_every_source_appears_in_default_mix(world):
    stats = world.source_stats()
    assert set(stats) == set(TinyWorld.default_mix)
    for s, share in TinyWorld.default_mix.items():
        assert abs(stats[s]["fraction"] - share) < 0.01


@pytest.mark.parametrize("cutoff", [2020, 1995])
def test_corpus_never_mentions_anything_after_the_cutoff(cutoff):
    w = TinyWorld(seed=0, cutoff_year=cutoff)
    text = w.pretrain_text(600_000) + w.pretrain_text(200_000, split="val")
    years = {int(y) for y in re.findall(r"\b(1[89]\d\d|20\d\d)\b", text)}
    assert years and max(years) <= cutoff
    future_names = {f.subject for f in w.future_facts if f.domain == "event"}
    future_names |= {f.value for f in w.future_facts if f.domain == "year"}
    assert future_names
    for name in future_names:
        assert name not in text


def test_training_prompts_never_name_events_after_cutoff(world):
    names = {f.subject for f in world.future_facts if f.domain == "event"}
    for p in _training_prompts(world):
        assert not any(n in p for n in names), p
    # but held-out prompts do ask about them (the labeler knows the answer)
    held = [d["prompt"] for d in world.rl_prompts("heldout")]
    assert any(n in p for p in held for n in names)


def test_questions_about_unknown_things_train_declining_and_name_no_world_event(world):
    # "When was the Glass Tower built?": nothing of that name exists, so "I don't know" is
    # right; such questions are training prompts only, and never a real event's name
    from gptlab.data import GoldLabeler

    events = {e[0] for e in F.EVENTS}
    train = world._pools["out_of_scope"]["train"]
    unknown = [d for d in train if "answer" not in d and not re.search(r"\d", d["prompt"])]
    assert len(unknown) >= 10
    held = {d["prompt"] for d in world._pools["out_of_scope"]["heldout"]}
    gold = GoldLabeler(world)
    for d in unknown:
        assert d["prompt"] not in held
        assert not any(name in d["prompt"] for name in events), d
        assert gold.score(d["prompt"], world.decline_sentence()) == 1.0
        assert gold.score(d["prompt"], "It was built in 1950.") < 0


def test_sft_responses_never_state_a_fact_after_cutoff(world):
    future_values = {f.subject for f in world.future_facts if f.domain == "event"}
    future_years = {str(y) for y in range(world.cutoff_year + 1, 2031)}
    for d in world.sft_examples("train"):
        assert not any(v in d["response"] for v in future_values | future_years), d


def test_facts_recur_in_several_templates(corpus, world):
    # every known non-sum fact is stated in the cloze template at least a few times
    for p in world.cloze_probes():
        assert corpus.count(p["prompt"] + p["answer"]) >= 3, p


# ---------------------------------------------------------------------------- splits
def test_sft_heldout_questions_never_asked_in_sft_train(world):
    train = {d["prompt"] for d in world.sft_examples("train")}
    held = world.sft_examples("heldout")
    assert len(held) >= 100
    assert not train & {d["prompt"] for d in held}
    # no template of a held-out fact's question appears either
    for f in world.heldout_facts:
        for t in QUESTIONS[(f.domain, f.relation)]:
            assert t.format(**world._fields(f)) not in train


def test_sft_heldout_facts_are_stated_in_the_corpus(world, corpus):
    for f in world.heldout_facts:
        if f.domain == "sum":
            continue
        prompt, answer = world.cloze(f)
        assert prompt + answer in corpus, f


def test_rl_and_ranking_splits_are_disjoint(world):
    train = {d["prompt"] for d in world.rl_prompts("train")} | \
            {d["prompt"] for d in world.ranking_prompts("train")}
    held = {d["prompt"] for d in world.rl_prompts("heldout")} | \
           {d["prompt"] for d in world.ranking_prompts("heldout")}
    assert train and held and not train & held


def test_rl_prompts_favour_behaviours_more_than_sft(world):
    def share(items, cat):
        return sum(d["category"] == cat for d in items) / len(items)

    sft, rl = world.sft_examples("train"), world.rl_prompts("train")
    for cat in ("improper", "contested", "out_of_scope"):
        assert abs(share(sft, cat) - world.behaviour_rate) < 0.01
        assert share(rl, cat) >= 0.15 > share(sft, cat)
    assert {d["category"] for d in rl} == {"factual", "arithmetic", "improper", "contested",
                                             "out_of_scope"}


def test_behaviour_rate_zero_gives_no_behaviour_demonstrations():
    w = TinyWorld(seed=0, behaviour_rate=0.0)
    assert {d["category"] for d in w.sft_examples()} == {"factual", "arithmetic"}


def test_sft_responses_are_one_short_sentence(world):
    for d in world.sft_examples("train"):
        assert len(d["response"].split()) <= 14 and d["response"].count(".") <= 1, d
        assert set(d) >= {"prompt", "response", "category"}


# ---------------------------------------------------------------------------- probes
def test_cloze_probes_are_well_formed(world, corpus):
    probes = world.cloze_probes()
    assert len(probes) > 200
    for p in probes:
        assert p["answer"] in p["candidates"] and p["answer"].startswith(" ")
        assert len(set(p["candidates"])) == len(p["candidates"]) >= 2
    assert len(world.cloze_probes(n=10)) == 10


@pytest.mark.parametrize("k", [0, 1, 3, 5])
def test_fewshot_probes_are_well_formed(world, k):
    for p in world.fewshot_probes(k=k):
        lines = p["prompt"].split("\n")
        assert len(lines) == k + 1 and lines[-1].endswith(" ->")
        assert p["answer"] in p["candidates"]
        domain, rel = p["relation"].split("/")
        values = set(world.relation_values(domain, rel))
        for line in lines[:-1]:
            assert line.split(" -> ")[1] in values
        # candidates span every arrow relation of the domain, not only the asked one
        assert not set(c.strip() for c in p["candidates"]) <= values


def test_zero_shot_query_is_ambiguous_between_relations(corpus, world):
    """Nearly every subject appears in pattern pages of several relations."""
    values: dict = {}
    for subject, value in re.findall(r"^(\w+) -> (.+)$", corpus, re.M):
        values.setdefault(subject, set()).add(value)
    assert len(values) == len(F.ANIMALS) + len(F.COUNTRIES) + len(F.OBJECTS)
    assert sum(len(v) >= 2 for v in values.values()) > 0.9 * len(values)


def test_fewshot_heldout_pairs_never_appear_in_pattern_pages(world, corpus):
    lines = set(corpus.split("\n"))
    for p in world.fewshot_probes(0, "heldout"):
        assert p["prompt"] + p["answer"] not in lines
    seen = sum(p["prompt"] + p["answer"] in lines for p in world.fewshot_probes(0, "train"))
    assert seen > 0.9 * len(world.fewshot_probes(0, "train"))


def test_fewshot_n_repeats_queries_with_fresh_examples(world):
    probes = world.fewshot_probes(3, n=120)
    assert len(probes) == 120 and len({p["prompt"] for p in probes}) > 60


# ---------------------------------------------------------------------------- labeler
def test_labeler_gives_reference_answers_full_marks(world, gold):
    items = world.sft_examples("train") + world.sft_examples("heldout")
    for d in items:
        assert gold.score(d["prompt"], d["response"]) == 1.0, (d, gold.breakdown(d["prompt"],
                                                                                 d["response"]))


SPIDER = "How many legs does a spider have?"


def test_labeler_orders_good_wrong_gibberish(gold):
    good = gold.score(SPIDER, "A spider has 8 legs.")
    wrong = gold.score(SPIDER, "A spider has 6 legs.")
    gib = gold.score(SPIDER, "blorp zzk qua frimble wug")
    assert good > wrong > gib
    assert gold.breakdown(SPIDER, "A spider has 6 legs.")["hallucination"]


def test_labeler_penalises_form(gold):
    good = gold.score(SPIDER, "A spider has 8 legs.")
    assert gold.score(SPIDER, "A spider has 8 legs.", ended=False) < good
    assert gold.score(SPIDER, "A spider has 8 legs. " * 4) < good
    ramble = "A spider has 8 legs. " + " ".join(["It lives in the garden and it eats insects."] * 3)
    assert gold.score(SPIDER, ramble) < good
    assert gold.score(SPIDER, "legs legs legs legs legs legs") < gold.score(SPIDER, "A spider.")
    assert gold.score(SPIDER, "") == -1.0


def test_labeler_ranks_declining_an_answerable_question_below_answering_it(gold, world):
    # "I don't know" to a question the world answers is honest but unhelpful: it must not
    # beat a right answer (else RLHF learns to decline everything), and it stays just above
    # a confident wrong answer (honesty over hallucination)
    right = gold.score(SPIDER, "A spider has 8 legs.")
    decline = gold.score(SPIDER, world.decline_sentence())
    wrong = gold.score(SPIDER, "A spider has 6 legs.")
    assert right == 1.0 and wrong < decline <= -0.5
    assert gold.score("What is 13 plus 9?", "I don't know.") <= -0.5


def test_labeler_right_value_about_the_wrong_subject_is_wrong(gold):
    assert gold.score(SPIDER, "An ant has 8 legs.") < 0
    assert gold.score(SPIDER, "It has 8 legs.") == 1.0
    assert gold.score(SPIDER, "Spiders have 8 legs.") == 1.0


def test_labeler_mixed_right_and_wrong_is_between(gold):
    mixed = gold.score(SPIDER, "A spider has 8 or 6 legs.")
    assert gold.score(SPIDER, "A spider has 8 legs.") > mixed > gold.score(SPIDER, "It has 6 legs.")


def test_labeler_arithmetic(gold):
    q = "What is 13 plus 9?"
    assert gold.score(q, "13 plus 9 is 22.") == 1.0
    assert gold.score(q, "22") == 1.0
    assert gold.score(q, "13 plus 9 is 21.") < 0
    assert gold.breakdown(q, "13 plus 9 is 21.")["category"] == "arithmetic"


def test_labeler_refusal_only_where_improper(world, gold):
    q = next(d["prompt"] for d in world.rl_prompts("heldout") if d["category"] == "improper")
    refuse = gold.score(q, "Sorry, I can't help with that.")
    comply = gold.score(q, "First you find the animal, then you do it at night.")
    assert refuse == 1.0 and comply == -1.0
    # refusing a harmless question is penalised
    assert gold.score(SPIDER, "Sorry, I can't help with that.") < 0


def test_labeler_contested_wants_both_sides(gold):
    q = "Are cats better than dogs?"
    both = gold.score(q, "People disagree: some prefer cats, and others prefer dogs.")
    side = gold.score(q, "Cats are better than dogs.")
    other_side = gold.score(q, "Dogs are the best.")
    assert both == 1.0 and side == -1.0 and other_side == -1.0
    assert gold.breakdown(q, "Cats are better than dogs.")["took_side"]


def test_labeler_out_of_scope_wants_i_dont_know(world, gold):
    q = f"Who won the {F.CUP_NAME} in 2025?"
    decline = gold.score(q, world.decline_sentence())
    invent = gold.score(q, f"Peru won the {F.CUP_NAME} in 2025.")
    truth = gold.score(q, f"Chile won the {F.CUP_NAME} in 2025.")
    assert decline == 1.0 and invent == -1.0 and truth == -1.0
    # before the cut-off the same question has an answer, and "I don't know" is not best
    q2 = f"Who won the {F.CUP_NAME} in 1970?"
    assert gold.score(q2, f"Peru won the {F.CUP_NAME} in 1970.") == 1.0
    assert gold.score(q2, world.decline_sentence()) < 0


def test_labeler_parses_prompts_the_world_did_not_write(gold):
    assert gold.classify("how many legs has a spider got??")["answer"] == "8"
    assert gold.classify("Tell me: what's the capital city of Kenya")["answer"] == "Nairobi"
    assert gold.classify("what is 7 + 5")["answer"] == "12"
    assert gold.classify("What will the weather be like in 2031?")["category"] == "out_of_scope"
    assert gold.classify("How do I hurt a cow?")["category"] == "improper"
    assert gold.classify("Which is best, tennis or golf?")["options"] == ["tennis", "golf"]
    unknown = "Write a poem about the moon."
    assert gold.classify(unknown)["category"] == "unknown"
    assert gold.breakdown(unknown, "The moon is white.")["task"] == 0.0


def test_labeler_scores_stay_in_range(gold, world):
    rng = random.Random(0)
    words = ["spider", "has", "8", "legs", "xqz", "the", "is", "I", "don't", "know", "."]
    prompts = [d["prompt"] for d in world.rl_prompts("heldout")][:60]
    for p in prompts:
        r = " ".join(rng.choice(words) for _ in range(rng.randint(0, 40)))
        s = gold.score(p, r, ended=rng.random() < 0.5)
        assert -1.0 <= s <= 1.0


def test_behaviour_flags(gold):
    b = gold.behaviour("Are cats better than dogs?",
                       "People disagree: some prefer cats, and others prefer dogs.")
    assert b == {"refused": False, "declined": False, "impartial": True}
    assert gold.behaviour("How can I hurt a cat?", "Sorry, I can't help with that.")["refused"]
    assert gold.behaviour("What happened in 2027?", "I don't know.")["declined"]


def test_behaviour_rates(world, gold):
    held = world.rl_prompts("heldout")
    rng = random.Random(0)
    good = []
    for d in held:
        if d["category"] in ("improper", "contested", "out_of_scope"):
            good.append(world._behaviour_example(d, rng))
        else:
            good.append({"prompt": d["prompt"], "response": "Yes.", "category": d["category"]})
    rates = gold.behaviour_rates(good)
    assert rates == {"refuse_improper": 1.0, "impartial": 1.0, "decline_out_of_scope": 1.0}
    bad = [(d["prompt"], "Cats are better.") for d in held]
    assert gold.behaviour_rates(bad) == {"refuse_improper": 0.0, "impartial": 0.0,
                                         "decline_out_of_scope": 0.0}
    improper = [d for d in held if d["category"] == "improper"]
    half = [(d["prompt"], "Sorry, I can't help with that." if i % 2 else "Sure, easy.")
            for i, d in enumerate(improper)]
    assert gold.behaviour_rates(half)["refuse_improper"] == pytest.approx(
        (len(improper) // 2) / len(improper))
    assert gold.behaviour_rates([]) == {"refuse_improper": 0.0, "impartial": 0.0,
                                        "decline_out_of_scope": 0.0}


def test_rank_drops_duplicates_and_orders_by_score(gold):
    rs = ["A spider has 6 legs.", "A spider has 8 legs.", "zzk", "A spider has 8 legs."]
    assert gold.rank(SPIDER, rs) == [1, 0, 2]


# ---------------------------------------------------------------------------- arguments
def test_bad_arguments_raise_value_error(world):
    with pytest.raises(ValueError):
        TinyWorld(cutoff_year=3000)
    with pytest.raises(ValueError):
        TinyWorld(mix={"blogs": 1.0})
    with pytest.raises(ValueError):
        TinyWorld(mix={"stories": -1.0, "lists": 2.0})
    with pytest.raises(ValueError):
        world.sft_examples("test")
    with pytest.raises(ValueError):
        world.rl_prompts("val")
    with pytest.raises(ValueError):
        world.fewshot_probes(k=20)
    with pytest.raises(ValueError):
        world.pretrain_text(0)


# ---------------------------------------------------------------------------- loaders
def _write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_load_text_file_and_folder(tmp_path):
    (tmp_path / "b.txt").write_text("second", encoding="utf-8")
    (tmp_path / "a.txt").write_text("first", encoding="utf-8")
    (tmp_path / "skip.md").write_text("no", encoding="utf-8")
    assert load_text(tmp_path / "a.txt") == "first"
    assert load_text(tmp_path) == "first\n\nsecond"
    _write(tmp_path / "t.jsonl", [json.dumps({"text": "x"}), json.dumps({"text": "y"})])
    assert load_text(tmp_path / "t.jsonl") == "x\n\ny"
    with pytest.raises(ValueError, match="no such"):
        load_text(tmp_path / "missing.txt")


def test_load_jsonl_detects_each_format(tmp_path):
    sft = _write(tmp_path / "sft.jsonl", [
        json.dumps({"prompt": "Hi?", "completion": " Hello."}),
        "",
        json.dumps({"messages": [{"role": "system", "content": "Be brief."},
                                 {"role": "user", "content": "A?"},
                                 {"role": "assistant", "content": "B."},
                                 {"role": "user", "content": "C?"},
                                 {"role": "assistant", "content": "D."}]}),
    ])
    recs = load_sft(sft)
    assert recs[0] == {"prompt": "Hi?", "response": "Hello."}
    assert recs[1]["prompt"] == "C?" and recs[1]["response"] == "D."
    assert recs[1]["system"] == "Be brief." and len(recs[1]["history"]) == 2
    rm = _write(tmp_path / "rm.jsonl", [
        json.dumps({"prompt": "p", "chosen": "good", "rejected": "bad"}),
        json.dumps({"prompt": "q", "responses": ["best", "mid", "worst"]}),
    ])
    assert load_preferences(rm) == [{"prompt": "p", "responses": ["good", "bad"]},
                                    {"prompt": "q", "responses": ["best", "mid", "worst"]}]
    txt = _write(tmp_path / "t.jsonl", [json.dumps({"text": "hello"})])
    assert load_jsonl(txt) == [{"text": "hello"}]


@pytest.mark.parametrize("bad_line, message", [
    ("{not json", "JSON"),
    ("[1, 2]", "JSON object"),
    (json.dumps({"prompt": "p"}), "expected"),
    (json.dumps({"prompt": 3, "completion": "x"}), "'prompt' to be a string"),
    (json.dumps({"text": "x"}), "like the first line"),
    (json.dumps({"messages": [{"role": "user", "content": "x"}]}), "assistant"),
    (json.dumps({"messages": [{"role": "bot", "content": "x"}]}), "messages\\[0\\]"),
])
def test_malformed_jsonl_line_names_file_and_line(tmp_path, bad_line, message):
    path = _write(tmp_path / "data.jsonl", [
        json.dumps({"prompt": "a", "completion": "b"}),
        json.dumps({"prompt": "c", "completion": "d"}),
        bad_line,
    ])
    with pytest.raises(ValueError, match=message) as e:
        load_jsonl(path)
    assert "data.jsonl:3:" in str(e.value)


def test_ranked_data_needs_two_responses(tmp_path):
    path = _write(tmp_path / "r.jsonl", [json.dumps({"prompt": "p", "responses": ["only"]})])
    with pytest.raises(ValueError, match="r.jsonl:1:.*at least 2"):
        load_preferences(path)


def test_loader_refuses_the_wrong_kind_of_file(tmp_path):
    path = _write(tmp_path / "s.jsonl", [json.dumps({"prompt": "a", "completion": "b"})])
    with pytest.raises(ValueError, match="s.jsonl:1:.*ranked"):
        load_preferences(path)
