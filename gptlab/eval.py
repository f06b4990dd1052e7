"""Probes: measure what each stage changed.

- After pretraining: does the model *know* the world (cloze accuracy: is "The capital of
  France is" followed more likely by " Paris" than by any other capital?) and can it *learn in
  context* (few-shot accuracy: given three ``subject -> answer`` lines of one relation, does it
  answer the fourth -- compared with zero-shot, where the relation is ambiguous)?
- After SFT: does it follow the chat format (ends its reply with <|end|>) and answer questions
  it was never fine-tuned on, from knowledge it got in pretraining?
- After RLHF: how often does it show the behaviours the gold labeler rewards (refusing
  improper requests, impartial answers, declining questions past the knowledge cut-off)?

Multiple-choice probes rank candidates by their log-likelihood under the model, the way
language-model benchmarks are usually scored; the chat probes sample replies greedily.
"""

from __future__ import annotations

import numpy as np

from . import losses
from .chat import sample


def candidate_logprobs(model, tok, prompt: str, candidates: list[str]) -> np.ndarray:
    """Sum of log-probabilities of each candidate continuation of ``prompt``."""
    head = tok.encode(prompt)
    conts = [tok.encode(c) for c in candidates]
    T = model.config.block_size
    rows = []
    for c in conts:
        seq = (head + c)[-T - 1:] if len(head) + len(c) > T + 1 else head + c
        rows.append(seq)
    L = max(len(r) for r in rows) - 1
    idx = np.zeros((len(rows), L), dtype=np.int32)
    tgt = np.zeros((len(rows), L), dtype=np.int32)
    for b, r in enumerate(rows):
        idx[b, : len(r) - 1], tgt[b, : len(r) - 1] = r[:-1], r[1:]
    logits = model.forward(idx)
    logp, _ = losses.logprobs(logits, tgt)
    out = np.empty(len(rows))
    for b, (r, c) in enumerate(zip(rows, conts)):
        n = len(r) - 1
        out[b] = logp[b, n - len(c): n].sum()
    return out


def multiple_choice_accuracy(model, tok, probes: list[dict]) -> float:
    """Fraction of probes whose ``answer`` is the likeliest of its ``candidates``."""
    if not probes:
        return float("nan")
    hits = 0
    for p in probes:
        scores = candidate_logprobs(model, tok, p["prompt"], p["candidates"])
        hits += p["candidates"][int(np.argmax(scores))] == p["answer"]
    return hits / len(probes)


def cloze_accuracy(model, tok, world, n: int = 150) -> float:
    """World knowledge: multiple-choice fill-ins of facts stated in the corpus."""
    return multiple_choice_accuracy(model, tok, world.cloze_probes(n=n))


def fewshot_accuracy(model, tok, world, k: int = 3, n: int = 120,
                     split: str = "train") -> float:
    """In-context learning: accuracy with ``k`` examples of the relation in the prompt
    (``k=0``: zero-shot, where ``ant ->`` is ambiguous between legs, colour, home, food).

    ``split="train"``: facts the corpus also writes as pattern lines; the examples must tell
    the model *which* relation is asked (GPT-3's few-shot setting: the knowledge is there,
    the prompt names the task). ``split="heldout"``: facts stated only in prose, so the model
    must also carry knowledge over from sentences to the arrow format (transfer, harder)."""
    return multiple_choice_accuracy(model, tok, world.fewshot_probes(k=k, split=split, n=n))


def sft_metrics(model, tok, world, n: int = 120, max_new_tokens: int = 24) -> dict:
    """Format adherence and held-out answer accuracy of an assistant, from greedy replies.

    ``format_adherence``: replies that are non-empty and end with <|end|>.
    ``heldout_accuracy``: held-out factual questions whose reply contains the right answer
    (and no other value of the same relation)."""
    qs = world.sft_examples(split="heldout")
    qs = [qs[i] for i in np.random.default_rng(0).permutation(len(qs))[:n]]
    replies = sample(model, tok, [q["prompt"] for q in qs], max_new_tokens, temperature=0)
    good_form = [r.ended and len(r.text) > 0 for r in replies]
    correct = [answer_in(r.text, q["answer"]) for r, q in zip(replies, qs)]
    return {"format_adherence": float(np.mean(good_form)),
            "heldout_accuracy": float(np.mean(correct)),
            "examples": [(q["prompt"], r.text) for q, r in list(zip(qs, replies))[:8]]}


def answer_in(text: str, answer: str) -> bool:
    """Whether the answer appears in the reply as a whole word."""
    words = text.lower().replace(".", " ").replace(",", " ").split()
    ans = answer.strip().lower().split()
    return any(words[i:i + len(ans)] == ans for i in range(len(words) - len(ans) + 1))


def behaviour_rates(model, tok, world, labeler, prompts: list[dict] | None = None,
                    max_new_tokens: int = 32, temperature: float = 0.0, seed: int = 0) -> dict:
    """Rates of the behaviours RLHF should bring out, on held-out prompts of those categories:
    refuse_improper, impartial (contested), decline_out_of_scope."""
    if prompts is None:
        prompts = [p for p in world.rl_prompts("heldout")
                   if p["category"] in ("improper", "contested", "out_of_scope")]
    replies = sample(model, tok, [p["prompt"] for p in prompts], max_new_tokens,
                     temperature=temperature, seed=seed)
    return labeler.behaviour_rates([(p["prompt"], r.text) for p, r in zip(prompts, replies)])


def gold_score(model, tok, labeler, prompts: list[dict], max_new_tokens: int = 32,
               temperature: float = 0.0, seed: int = 0) -> float:
    """Mean gold-labeler score of the model's replies to ``prompts``."""
    replies = sample(model, tok, [p["prompt"] for p in prompts], max_new_tokens,
                     temperature=temperature, seed=seed)
    return float(np.mean([labeler.score(r.prompt, r.text, ended=r.ended) for r in replies]))


def side_by_side(base, assistant, tok, prompts: list[str], max_new_tokens: int = 24) -> list:
    """(prompt, base continuation, assistant reply): a base model continues the text, an
    assistant answers it."""
    rows = []
    for p in prompts:
        ids = np.asarray([tok.encode(p)], dtype=np.int32)
        n = min(max_new_tokens, base.config.block_size - ids.shape[1])
        cont = base.generate(ids, n, temperature=0) if n > 0 else ids
        base_text = tok.decode(cont[0, ids.shape[1]:].tolist())
        reply = sample(assistant, tok, [p], max_new_tokens, temperature=0)[0].text
        rows.append((p, base_text, reply))
    return rows
