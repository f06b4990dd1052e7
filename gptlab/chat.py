"""The chat template, and sampling replies from a model: shared by SFT, RM, PPO and the probes.

A base model only continues text. An assistant is the same network trained on conversations
written in a fixed template, with special tokens the tokenizer never produces from ordinary text:

    <|user|>How many legs does a spider have?<|assistant|>A spider has 8 legs.<|end|>

Supervised fine-tuning trains only on the reply (the tokens after ``<|assistant|>``, up to and
including ``<|end|>``): the loss mask comes from rendering this template, token by token.
At inference the model is given ``<|user|>...<|assistant|>`` and generates until ``<|end|>``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

USER, ASSISTANT, END = "<|user|>", "<|assistant|>", "<|end|>"


def special_ids(tok) -> tuple[int, int, int]:
    """The ids of <|user|>, <|assistant|>, <|end|> in ``tok``."""
    try:
        return tuple(tok.special_tokens[s] for s in (USER, ASSISTANT, END))
    except KeyError as e:
        raise ValueError(f"tokenizer lacks the chat special token {e}; train it with the "
                         "default special tokens") from None


def prompt_ids(tok, prompt: str) -> list[int]:
    """Token ids of ``<|user|>{prompt}<|assistant|>``: what the model sees before replying."""
    user, assistant, _ = special_ids(tok)
    return [user, *tok.encode(prompt), assistant]


def render(tok, prompt: str, response: str) -> tuple[list[int], list[int]]:
    """A whole exchange as token ids, and a 0/1 mask marking the reply (and <|end|>)."""
    head = prompt_ids(tok, prompt)
    reply = [*tok.encode(response), special_ids(tok)[2]]
    return head + reply, [0] * len(head) + [1] * len(reply)


@dataclass
class Sample:
    """One sampled reply: its text, token ids (up to and including <|end|> when it ended),
    the log-probability of each of those tokens, and whether it ended."""

    prompt: str
    text: str
    ids: list[int]
    logprobs: np.ndarray
    ended: bool
    prompt_ids: list[int]


def sample(model, tok, prompts: list[str], max_new_tokens: int = 32, temperature: float = 1.0,
           top_k: int | None = None, top_p: float | None = None, seed: int | None = 0,
           batch_size: int = 32) -> list[Sample]:
    """Sample one reply per prompt with the KV cache, in batches of ragged prompts.

    Prompts are cut from the left if needed so prompt + reply fits the context window.
    Generation stops at <|end|>; ``ended`` says whether it was reached."""
    end = special_ids(tok)[2]
    budget = model.config.block_size - max_new_tokens
    if budget < 2:
        raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in "
                         f"block_size={model.config.block_size}")
    out: list[Sample] = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        heads = [prompt_ids(tok, p)[-budget:] for p in chunk]
        lens = [len(h) for h in heads]
        idx = np.zeros((len(chunk), max(lens)), dtype=np.int32)
        for b, h in enumerate(heads):
            idx[b, : len(h)] = h
        s = None if seed is None else seed + start
        toks, logp = model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k,
                                    top_p=top_p, stop=end, seed=s, return_logprobs=True,
                                    prompt_lens=lens)
        for b, p in enumerate(chunk):
            new = toks[b, lens[b]: lens[b] + max_new_tokens].tolist()
            ended = end in new
            n = new.index(end) + 1 if ended else len(new)
            text = tok.decode([t for t in new[:n] if t != end])
            out.append(Sample(p, text.strip(), new[:n], logp[b, :n].copy(), ended, heads[b]))
    return out


def chat(model, tok, prompt: str, max_new_tokens: int = 48, temperature: float = 0.0,
         seed: int | None = None) -> str:
    """Ask the model one question in the chat template and return its reply (greedy by
    default). A base model that never saw the template will usually ramble."""
    room = model.config.block_size - len(prompt_ids(tok, prompt))
    n = max(1, min(max_new_tokens, room))
    return sample(model, tok, [prompt], n, temperature=temperature, seed=seed)[0].text
