"""Pretraining and SFT stages, the chat template, the batching helper and the probes."""

from __future__ import annotations

import numpy as np
import pytest

import gptlab as gl
from gptlab import eval as ev
from gptlab.batching import Batches, windows
from gptlab.chat import prompt_ids, render, sample, special_ids


@pytest.fixture(scope="module")
def world():
    return gl.data.TinyWorld(seed=0, corpus_chars=200_000)


@pytest.fixture(scope="module")
def tok(world):
    return gl.Tokenizer.train(world.pretrain_text(), vocab_size=512)


def tiny(tok, seed=0) -> gl.GPT:
    return gl.GPT(gl.GPTConfig.preset("tiny", vocab_size=tok.vocab_size), seed=seed)


def test_chat_template_masks_exactly_the_reply_and_end_marker(tok):
    ids, mask = render(tok, "How many legs does a spider have?", "A spider has 8 legs.")
    user, assistant, end = special_ids(tok)
    assert ids[0] == user and ids[-1] == end
    a = ids.index(assistant)
    assert mask[: a + 1] == [0] * (a + 1)  # the user turn and the <|assistant|> marker
    assert all(mask[a + 1:])
    assert tok.decode(ids[a + 1: -1]) == "A spider has 8 legs."
    assert ids[: a + 1] == prompt_ids(tok, "How many legs does a spider have?")


def test_special_token_text_in_a_prompt_is_not_a_control_token(tok):
    ids = prompt_ids(tok, "say <|end|> now")
    assert ids.count(special_ids(tok)[2]) == 0


def test_batches_shift_targets_pad_and_mask():
    seqs = [[1, 2, 3, 4], [5, 6], [7, 8, 9]]
    masks = [[0, 0, 1, 1], [0, 1], [1, 1, 1]]
    b = Batches(seqs, batch_size=3, max_len=8, masks=masks, seed=0, pad_id=0)
    idx, tgt, mask = b.collate([0, 1, 2])
    np.testing.assert_array_equal(idx, [[1, 2, 3], [5, 0, 0], [7, 8, 0]])
    np.testing.assert_array_equal(tgt, [[2, 3, 4], [6, 0, 0], [8, 9, 0]])
    np.testing.assert_array_equal(mask, [[0, 1, 1], [1, 0, 0], [1, 1, 0]])


def test_batches_visit_every_sequence_once_per_epoch_and_resume_exactly():
    seqs = [[i, i + 1, i + 2] for i in range(10)]
    b = Batches(seqs, batch_size=5, max_len=4, seed=1)
    first = np.concatenate([b.next()[0][:, 0] for _ in range(2)])
    assert sorted(first.tolist()) == list(range(10))
    state = b.state_dict()
    nxt = b.next()
    c = Batches(seqs, batch_size=5, max_len=4, seed=99)
    c.load_state_dict(state)
    for x, y in zip(nxt, c.next()):
        np.testing.assert_array_equal(x, y)


def test_windows_overlap_by_one_token_for_shifted_targets():
    w = windows(np.arange(10), 4)
    assert [list(x) for x in w] == [[0, 1, 2, 3, 4], [4, 5, 6, 7, 8]]


def test_pretraining_lowers_the_loss_and_is_deterministic(world, tok):
    runs = []
    for _ in range(2):
        model = tiny(tok)
        pre = gl.Pretrainer(model, tok, world.pretrain_documents(n_chars=100_000), batch_size=8,
                            max_steps=40, warmup=5, eval_every=20)
        pre.train(40, progress=False)
        runs.append((model, pre))
    (m1, p1), (m2, p2) = runs
    assert m1._param_flat.tobytes() == m2._param_flat.tobytes()
    assert p1.history[-1]["val_loss"] < p1.history[19]["val_loss"] < np.log(tok.vocab_size)
    assert {"loss", "lr", "grad_norm", "tokens_per_s"} <= set(p1.history[0])


def test_sft_trains_on_replies_only(world, tok):
    model = tiny(tok)
    examples = world.sft_examples(n=64)
    sft = gl.SFTTrainer(model, tok, examples, batch_size=8, max_steps=30, lr=3e-3)
    idx, tgt, mask = sft.batches.collate([0])
    assert 0 < mask.sum() < mask.size  # prompt tokens are not trained
    before = sft.step()["loss"]
    sft.train(29, progress=False)
    assert sft.history[-1]["loss"] < before


def test_sft_packing_fills_rows(tok, world):
    from gptlab.stages.sft import render_examples
    ex = world.sft_examples(n=20)
    plain, _ = render_examples(tok, ex, 64, pack=False)
    packed, masks = render_examples(tok, ex, 64, pack=True)
    assert len(packed) < len(plain)
    assert sum(map(len, packed)) == sum(map(len, plain))
    assert all(len(s) <= 65 for s in packed)
    assert all(len(s) == len(m) for s, m in zip(packed, masks))


def test_sampler_stops_at_end_marker_and_reports_it(tok):
    model = tiny(tok)
    end = special_ids(tok)[2]
    # make <|end|> overwhelmingly likely: the tied head reads wte, so bias the final LayerNorm
    model.params["ln_f.weight"][...] = 0
    model.params["ln_f.bias"][...] = model.params["wte.weight"][end] * 50
    out = sample(model, tok, ["hi", "a longer prompt here"], max_new_tokens=5, temperature=0)
    assert all(s.ended and s.ids == [end] and s.text == "" for s in out)


def test_probes_score_candidates_by_likelihood(tok):
    model = tiny(tok)
    probe = {"prompt": "The capital of France is", "answer": " Paris",
             "candidates": [" Paris", " Rome"]}
    scores = ev.candidate_logprobs(model, tok, probe["prompt"], probe["candidates"])
    assert scores.shape == (2,) and np.all(scores < 0)
    acc = ev.multiple_choice_accuracy(model, tok, [probe])
    assert acc == float(scores[0] > scores[1])
    assert ev.answer_in("A spider has 8 legs.", "8") and not ev.answer_in("It has 18 legs", "8")
