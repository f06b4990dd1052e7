# ruff: noqa: E501  (the cells hold Markdown tables, which cannot be wrapped)
"""Write (and optionally execute) the four notebooks of the lab from the cells below.

    python tools/make_notebooks.py              # write notebooks/0*.ipynb without outputs
    python tools/make_notebooks.py --execute    # ... and run them in order, saving outputs

The notebooks are generated so they stay easy to edit: change a cell here, not in the JSON.
Executing uses nbclient with the notebooks folder as working directory; set GPTLAB_FAST=1
for the tiny budgets CI uses. Checkpoints go to notebooks/_runs/{full,fast}/ (or
$GPTLAB_RUNS), where each notebook finds what the previous one saved.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NB_DIR = os.path.join(ROOT, "notebooks")


def md(text: str):
    return new_markdown_cell(text.strip("\n"))


def code(text: str):
    return new_code_cell(text.strip("\n"))


SETUP = '''
import os
import time
import warnings

import numpy as np
from IPython.display import Markdown, display

import gptlab as gl
from gptlab import eval as ev
from gptlab import pipeline, plot
from gptlab.data import GoldLabeler, TinyWorld

FAST = os.environ.get("GPTLAB_FAST", "0") == "1"   # CI sets GPTLAB_FAST=1: tiny budgets
RUNS = os.path.join(os.environ.get("GPTLAB_RUNS", "_runs"), "fast" if FAST else "full")
S = pipeline.settings_for(FAST)                     # every hyperparameter, in one dict
SEED = 0
warnings.filterwarnings("ignore", message="IProgress not found")  # text progress bars are fine


def table(rows, header):
    """Show rows as a Markdown table."""
    def cell(x):
        if isinstance(x, float):
            x = f"{x:.3f}"
        return str(x).replace("|", "\\\\|").replace("<", "&lt;").replace("\\n", " ")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    display(Markdown("\\n".join(lines)))


print(f"gptlab {gl.__version__}: {gl.get_num_threads()} threads, "
      f"{'FAST' if FAST else 'full'} settings, checkpoints in {RUNS}/")
'''

# ---------------------------------------------------------------------------------------------
NB1 = [
    md("""
# 1. Pretraining: a GPT learns a world from text

ChatGPT is made in four stages (Karpathy, *State of GPT*, 2023). This lab runs each of them on
a laptop CPU, one notebook per stage, on a GPT-2 of about a million parameters:

| stage | data | what the model learns | notebook |
|---|---|---|---|
| **1. pretraining** | a large pile of raw text | to predict the next token, and with it facts about the world and in-context learning | **this one** |
| 2. supervised fine-tuning (SFT) | prompts with ideal responses written by people | to answer as an assistant | `02_sft` |
| 3. reward modeling | several responses per prompt, ranked by people | a number that says how good a response is | `03_reward_model` |
| 4. RLHF with PPO | prompts only; the reward model scores the answers | behaviours the rankings favour | `04_rlhf_ppo` |

Pretraining takes about 99% of the compute. The model reads text and, at every position,
predicts the next token; nothing else. Everything the later stages bring out must already be
learned here.

Set `GPTLAB_FAST=1` in the environment for a quick run with tiny budgets (the numbers are then
poor). Checkpoints are saved for the next notebook.
"""),
    code(SETUP),
    md("""
## The data: a mix of sources

GPT-3 read 300 billion tokens drawn from a fixed mix of sources: filtered Common Crawl (60%),
WebText2 (22%), books (16%) and Wikipedia (3%). Our data is **TinyWorld**: a generated world of
animals, countries, household things, sums and a dated history, written as text from five
sources. The world is small and regular enough that a tiny model can learn it in minutes, and
because it is generated we know the truth of every statement: we can measure what the model
learned.
"""),
    code("""
world = TinyWorld(seed=SEED, **S["world"])
docs = world.pretrain_documents()
stats = world.source_stats()
table([(s, d["documents"], f"{d['chars']:,}", f"{d['fraction']:.0%}") for s, d in stats.items()],
      ["source", "documents", "characters", "share"])
"""),
    code("""
GPT3_MIX = {"Common Crawl": 0.60, "WebText2": 0.22, "Books": 0.16, "Wikipedia": 0.03}
fig = plot.data_mix(stats, reference=GPT3_MIX, title="TinyWorld's mix and GPT-3's")
"""),
    code("""
seen = set()
for source, text in docs:
    if source not in seen:
        seen.add(source)
        print(f"--- {source} ---\\n{text[:260]}\\n")
"""),
    md("""
## The tokenizer: text to integers

A GPT reads integers (*tokens*), not characters. Byte-pair encoding (BPE), the scheme of
GPT-2, starts from the 256 bytes and repeatedly merges the most frequent adjacent pair into a
new token, until the vocabulary has the size we ask for. Frequent words become one token; rare
words are spelled from pieces. A few special tokens are reserved for later stages (the chat
template of SFT and the end-of-text marker).
"""),
    code("""
t0 = time.perf_counter()
tok = gl.Tokenizer.train([text for _, text in docs], vocab_size=S["tokenizer"]["vocab_size"])
print(f"vocabulary: {tok.vocab_size} tokens, trained in {time.perf_counter() - t0:.1f} s")
print("special tokens:", tok.special_tokens)
"""),
    code("""
sentence = "The capital of France is Paris. A spider has 8 legs. Zanzibarians juggle."
ids = tok.encode(sentence)
print(ids)
print(" | ".join(tok.decode([i]) for i in ids))
sample_text = "".join(text for _, text in docs[:200])
print(f"{len(sentence)} characters -> {len(ids)} tokens; on the corpus, "
      f"{len(sample_text) / len(tok.encode(sample_text)):.2f} characters per token")
"""),
    md("""
## The model: GPT-2

A GPT-2 is a stack of identical blocks. Each token's id selects a row of the token embedding
`wte`, a position embedding `wpe` is added, and every block then lets each position look at the
earlier ones (causal self-attention) and think on its own (an MLP), both with a residual
connection and a LayerNorm in front. A final LayerNorm and the transposed `wte` turn the last
hidden state into one score (*logit*) per vocabulary entry: the prediction of the next token.

The forward and backward passes run in gptlab's C core; the parameters are NumPy arrays named
exactly as in Hugging Face's `GPT2Model`, so you can print, plot and even edit them.
"""),
    code("""
cfg = gl.GPTConfig.preset("small", vocab_size=tok.vocab_size)
model = gl.GPT(cfg, seed=SEED)
print(cfg)
print(f"{model.num_params:,} parameters")
"""),
    code("""
rows = []
for name, p in model.params.items():
    if name.startswith("h.") and not name.startswith("h.0."):
        continue  # the other blocks are the same shapes as block 0
    rows.append((name, str(tuple(p.shape)), f"{p.size:,}"))
rows.append((f"... blocks h.1 to h.{cfg.n_layer - 1}", "same as h.0",
             f"{sum(p.size for n, p in model.params.items() if n.startswith('h.') and not n.startswith('h.0.')):,}"))
table(rows, ["parameter", "shape", "count"])
"""),
    md("""
## The training loop

One optimizer step: take a batch of random windows of the text, run the model on each window,
and measure with the cross-entropy how surprised it was by every actual next token. The
backward pass gives the gradient of that loss for every parameter, and AdamW moves the
parameters a little against it (with a warmup and cosine learning-rate schedule, and gradient
clipping).

Before training the model guesses uniformly, so the loss should be about ln(vocabulary size).
"""),
    code("""
from gptlab.stages.pretrain import Pretrainer

p = dict(S["pretrain"])
steps = p.pop("steps")
pre = Pretrainer(model, tok, docs, max_steps=steps, seed=SEED, **p)
print(f"{len(pre.train_tokens):,} training tokens, {len(pre.val_tokens):,} held out; "
      f"{steps} steps of {p['batch_size']} x {cfg.block_size} tokens")
print(f"loss before training: {pre.evaluate():.3f}   ln(V) = {np.log(tok.vocab_size):.3f}")
"""),
    code("""
stats0 = pre.step()  # one optimizer step; every stage's trainer has step() -> dict of metrics
stats0
"""),
    md("""
Now the remaining steps, in a few chunks. After each chunk we let the model continue a few
prompts (greedy decoding) to watch it learn: first gibberish, then English, then facts.
(In Jupyter, *interrupt* stops training cleanly at a step boundary; run the cell again to go on.)
"""),
    code("""
prompts = ["The capital of France is", "A spider has", "Sam and Max went to the"]
snapshots = []
chunks = 4
t0 = time.perf_counter()
for c in range(chunks):
    pre.train((steps - pre.t) // (chunks - c))
    for q in prompts:
        ids = np.asarray([tok.encode(q)])
        out = model.generate(ids, 10, temperature=0)
        snapshots.append((pre.t, q, tok.decode(out[0, ids.shape[1]:].tolist())))
train_seconds = time.perf_counter() - t0
print(f"{pre.t} steps in {train_seconds:.0f} s, {pre.tokens_seen / train_seconds:,.0f} tokens/s")
"""),
    code("""
fig = plot.curves(pre.history, ["loss", "val_loss"], title="pretraining: next-token loss")
"""),
    code("""
table(snapshots, ["after step", "prompt", "greedy continuation"])
"""),
    md("""
## What did it learn? World knowledge

A *cloze* probe states a fact with a blank at the end ("The capital of Japan is ___") and asks
which candidate (every capital of the world) the model finds most likely, by the total
log-probability of its tokens. This is how language-model benchmarks are usually scored.
"""),
    code("""
probes = world.cloze_probes(n=S["eval"]["cloze"])
for q in probes[:3]:
    lp = ev.candidate_logprobs(model, tok, q["prompt"], q["candidates"])
    top = np.argsort(-lp)[:3]
    print(f"{q['prompt']!r}: answer {q['answer']!r}; model's top 3:",
          ", ".join(f"{q['candidates'][i]!r} ({lp[i]:.1f})" for i in top))
cloze = ev.multiple_choice_accuracy(model, tok, probes)
chance = np.mean([1 / len(q["candidates"]) for q in probes])
print(f"\\ncloze accuracy: {cloze:.1%}  (chance: {chance:.1%})")
"""),
    md("""
## In-context learning: few-shot against zero-shot

GPT-3's surprise was that a large pretrained model can pick up a task from examples in its
prompt, with no training: after `spider -> 8`, `dog -> 4`, `owl -> 2` it completes `ant ->`
with a number of legs. TinyWorld's pattern pages use the same arrow for several relations
(legs, colour, home, food), so `ant ->` alone is ambiguous; the examples say which relation is
meant. The candidates are the values of all those relations together.

Two query sets: facts the corpus also writes as arrows (the model knows `ant -> 6` from legs
pages; the examples must tell it that legs are asked), and facts it met only in prose
("An ant has 6 legs."), where it must also carry the knowledge over to a new format: a much
harder step for a 2M-parameter model.
"""),
    code("""
n = S["eval"]["fewshot"]
q3 = world.fewshot_probes(k=3, split="train", n=n)
q0 = world.fewshot_probes(k=0, split="train", n=n)
print(q3[0]["prompt"], "  <- answer:", q3[0]["answer"])
for name, q in (("3-shot", q3[0]), ("0-shot", q0[0])):
    lp = ev.candidate_logprobs(model, tok, q["prompt"], q["candidates"])
    print(f"{name}: model picks {q['candidates'][int(np.argmax(lp))]!r}")
few = ev.multiple_choice_accuracy(model, tok, q3)
zero = ev.multiple_choice_accuracy(model, tok, q0)
print(f"\\nfew-shot accuracy {few:.1%} vs zero-shot {zero:.1%}")
few_t = ev.fewshot_accuracy(model, tok, world, k=3, n=n, split="heldout")
zero_t = ev.fewshot_accuracy(model, tok, world, k=0, n=n, split="heldout")
print(f"facts met only in prose: few-shot {few_t:.1%} vs zero-shot {zero_t:.1%}")
"""),
    md("""
## GPT-3 against LLaMA, in miniature

| | GPT-3 (2020) | LLaMA (2023) |
|---|---|---|
| training tokens | 300B | 1.4T |
| parameters | 175B | 65B |
| quality | worse | better |

Training compute is about 6 x parameters x tokens (a forward and a backward pass over every
token). GPT-3 spent it on a huge model that read relatively little; LLaMA, following the
Chinchilla scaling laws, on a smaller model that read far more, and came out better. For a
fixed budget there is a best model size, and it is smaller than GPT-3 assumed.

We repeat the experiment at our scale with the **same compute**: a larger model trained on
fewer tokens against a smaller one trained on proportionally more tokens, both measured on
the same held-out text.
"""),
    code("""
from gptlab.stages.pretrain import tokenize_corpus

tokens = np.concatenate([pre.train_tokens, pre.val_tokens])
big_steps = 12 if FAST else 100
T, B = 64, 16
runs, facts = {}, []
for label, shape in (("larger model, fewer tokens", dict(n_layer=4, n_head=4, n_embd=128)),
                     ("smaller model, more tokens", dict(n_layer=2, n_head=2, n_embd=48))):
    c = gl.GPTConfig(vocab_size=tok.vocab_size, block_size=T, **shape)
    n = c.num_params()
    if not runs:
        budget = 6 * n * big_steps * B * T          # FLOPs of the larger model's run
    n_steps = int(round(budget / (6 * n * B * T)))
    m = gl.GPT(c, seed=SEED)
    tr = Pretrainer(m, tok, tokens, batch_size=B, seq_len=T, max_steps=n_steps, lr=3e-3,
                    warmup=max(1, n_steps // 20), eval_every=max(1, n_steps // 10),
                    eval_windows=64, seed=SEED)
    t0 = time.perf_counter()
    tr.train(n_steps, progress=False)
    for row in tr.history:
        row["flops"] = 6 * n * row["step"] * B * T
    runs[label] = tr.history
    facts.append((label, f"{n:,}", f"{n_steps * B * T:,}", f"{budget:.2e}", tr.evaluate(),
                  f"{time.perf_counter() - t0:.0f} s"))
table(facts, ["run", "parameters", "tokens", "FLOPs", "final val loss", "time"])
"""),
    code("""
fig = plot.compare_curves(runs, key="val_loss", x="flops", xlabel="training compute (FLOPs)",
                          title="equal compute: model size vs training tokens")
"""),
    code("""
(l1, v1), (l2, v2) = [(f[0], f[4]) for f in facts]   # final held-out loss of each run
winner = l1 if v1 < v2 else l2
print(f"at equal compute the winner is: {winner} ({min(v1, v2):.3f} vs {max(v1, v2):.3f})")
"""),
    md("""
At this tiny budget the compute-optimal model is small, so reading more tokens usually beats
having more parameters, the LLaMA lesson. (With much more compute the best size grows: the
Chinchilla rule of thumb is about 20 tokens per parameter.)

## Save the pretrained model for the next notebook

The model, its tokenizer, the training history (`metrics.jsonl`) and the headline figures go
into one folder; `02_sft` starts from it.
"""),
    code("""
summary = {"val_loss": pre.evaluate(), "cloze_accuracy": cloze, "fewshot_accuracy": few,
           "zeroshot_accuracy": zero, "fewshot_transfer_accuracy": few_t,
           "zeroshot_transfer_accuracy": zero_t, "steps": pre.t, "tokens": pre.tokens_seen,
           "params": model.num_params, "tokens_per_s": pre.tokens_seen / train_seconds}
stage = pipeline.Stage("pretrain", os.path.abspath(os.path.join(RUNS, "pretrain")), summary,
                       model, tok, pre, S, None, SEED, "small")
pipeline.save_stage(stage)
print("saved to", os.path.relpath(stage.dir), sorted(os.listdir(stage.dir)))
"""),
]

# ---------------------------------------------------------------------------------------------
NB2 = [
    md("""
# 2. Supervised fine-tuning: from document completer to assistant

The pretrained model knows a lot, but it is not an assistant: given a question it *continues
the document*, perhaps with more questions. Supervised fine-tuning (SFT) trains the same model,
with the same next-token loss, on a small set of **demonstrations**: prompts written by people
with the ideal response (OpenAI used about 10K-100K). Only the response's tokens are trained:
the model learns to answer, not to imitate users.

This notebook starts from the checkpoint of `01_pretraining` (or rebuilds it quickly).
"""),
    code(SETUP),
    code("""
pre = pipeline.ensure_stage("pretrain", RUNS, FAST, S, SEED)
tok, base = pre.tok, pre.model
world = TinyWorld(seed=pre.seed, **S["world"])
print(f"base model from {os.path.relpath(pre.dir)}: val loss {pre.summary['val_loss']:.3f}")
"""),
    md("""
## Ask the base model

We wrap a question in the chat template (below) and let the base model go on. It has never
seen the template, so it rambles on as if in a document.
"""),
    code("""
from gptlab.chat import chat

questions = ["How many legs does a spider have?", "What is the capital of France?",
             "Add 3 and 4."]
for q in questions:
    print(f"{q}\\n  base model: {chat(base, tok, q, max_new_tokens=24)!r}")
"""),
    md("""
## The demonstrations

TinyWorld's SFT set is a few thousand questions about the world, each with a one-sentence
correct answer. A few (5% each) show the behaviours we want in the end: refusing improper
requests, answering contested questions impartially, and declining questions past the
knowledge cut-off (2020). They are rare on purpose: RLHF will make them reliable.
"""),
    code("""
p = dict(S["sft"])
steps, n_examples = p.pop("steps"), p.pop("examples")
examples = world.sft_examples(n=n_examples)
cats = {}
for e in examples:
    cats[e["category"]] = cats.get(e["category"], 0) + 1
table(sorted(cats.items(), key=lambda kv: -kv[1]), ["category", "demonstrations"])
table([(e["category"], e["prompt"], e["response"]) for e in examples[:8]],
      ["category", "prompt", "response"])
"""),
    md("""
## The chat template and the loss mask

A conversation is rendered with special tokens the tokenizer never produces from ordinary
text: `<|user|>` prompt `<|assistant|>` response `<|end|>`. The loss mask is 1 on the tokens the
model must learn to produce, the response and the `<|end|>` marker (so it learns to stop), and
0 on the prompt.
"""),
    code("""
from gptlab.chat import render

ex = next(e for e in examples if e["category"] == "factual")
ids, mask = render(tok, ex["prompt"], ex["response"])
print(repr(tok.decode(ids)))
fig = plot.loss_mask(tok, ids, mask)
"""),
    md("""
## SFT steps

The loop is pretraining's, with the mask: `loss = model.forward(idx, targets, mask=mask)`.
A small learning rate and a few hundred steps are enough: the knowledge is already there.
"""),
    code("""
from gptlab.stages.sft import SFTTrainer

model = base.copy()                     # the base model stays as it was, for comparison
sft = SFTTrainer(model, tok, examples, max_steps=steps, seed=SEED, **p)
sft.step()
"""),
    code("""
t0 = time.perf_counter()
sft.train(steps - sft.t)
print(f"{sft.t} steps in {time.perf_counter() - t0:.0f} s")
fig = plot.curves(sft.history, ["loss"], title="SFT: loss on the response tokens")
"""),
    md("""
## Base and SFT side by side

The same questions (held out: never in the SFT data), to the base model as plain text and to
the fine-tuned model in the chat template.
"""),
    code("""
held = world.sft_examples(split="heldout")
picked = [held[i] for i in np.random.default_rng(SEED).permutation(len(held))[:6]]
rows = ev.side_by_side(base, model, tok, [q["prompt"] for q in picked])
table([(q, b, a, x["answer"]) for (q, b, a), x in zip(rows, picked)],
      ["prompt", "base model continues", "SFT model answers", "truth"])
"""),
    md("""
## Format adherence and accuracy

- **format adherence**: the reply ends with `<|end|>` (the model knows when to stop);
- **held-out accuracy**: the reply to a question never seen in SFT contains the right answer.
  These facts were only in the pretraining text: SFT unlocked knowledge, it did not teach it.
"""),
    code("""
m_base = ev.sft_metrics(base, tok, world, n=S["eval"]["sft"])
m_sft = ev.sft_metrics(model, tok, world, n=S["eval"]["sft"])
table([("format adherence", m_base["format_adherence"], m_sft["format_adherence"]),
       ("held-out accuracy", m_base["heldout_accuracy"], m_sft["heldout_accuracy"])],
      ["measure", "base", "SFT"])
"""),
    md("""
The behaviours were rare in the demonstrations, so the SFT model shows them only sometimes.
The gold labeler (TinyWorld's stand-in for a human judge) measures them on held-out prompts:
"""),
    code("""
labeler = GoldLabeler(world)
rates = ev.behaviour_rates(model, tok, world, labeler, max_new_tokens=32)
table([(k, f"{v:.0%}") for k, v in rates.items()], ["behaviour (SFT model)", "rate"])
"""),
    md("""
## Save the SFT model for the next notebook
"""),
    code("""
summary = {"format_adherence": m_sft["format_adherence"],
           "heldout_accuracy": m_sft["heldout_accuracy"],
           "base_format_adherence": m_base["format_adherence"],
           "base_heldout_accuracy": m_base["heldout_accuracy"], "steps": sft.t,
           "examples": len(examples)}
stage = pipeline.Stage("sft", os.path.abspath(os.path.join(RUNS, "sft")), summary, model, tok,
                       sft, S, pre.dir, pre.seed, pre.preset)
pipeline.save_stage(stage)
print("saved to", os.path.relpath(stage.dir))
"""),
]

# ---------------------------------------------------------------------------------------------
NB3 = [
    md("""
# 3. Reward modeling: learning what "better" means

Writing ideal answers is slow; **comparing** answers is quick and consistent. So the third
stage asks people to *rank* several answers of the SFT model to the same prompt, and trains a
**reward model** to agree with the rankings: a network that reads a prompt and a response and
outputs one number, the reward. PPO (notebook 04) then optimises the SFT model against it.

Our "people" are TinyWorld's **gold labeler**, a coded judge that knows the truth of the world
and the behaviours we want. This notebook starts from `02_sft`'s checkpoint (or rebuilds it).
"""),
    code(SETUP),
    code("""
sft = pipeline.ensure_stage("sft", RUNS, FAST, S, SEED)
tok, policy = sft.tok, sft.model
world = TinyWorld(seed=sft.seed, **S["world"])
labeler = GoldLabeler(world)
r = dict(S["reward"])
K = r["k"]
print(f"SFT model from {os.path.relpath(sft.dir)}; K = {K} replies per prompt")
"""),
    md("""
## Sampling K responses

For each prompt the SFT model samples K replies at temperature 1, so they differ.
"""),
    code("""
from gptlab.chat import sample

prompts = world.ranking_prompts("train", n=r["prompts"])
for q in prompts[:20]:  # a prompt on which the K samples differ (often they all agree)
    replies = sample(policy, tok, [q["prompt"]] * K, r["max_new_tokens"], temperature=1.0,
                     seed=SEED)
    if len({s.text for s in replies}) >= 3:
        break
print(f"prompt ({q['category']}): {q['prompt']}")
for s in replies:
    print("  -", repr(s.text), "" if s.ended else "(no end marker)")
"""),
    md("""
## The labeler ranks them

The labeler scores each reply in [-1, 1] (right answer +1, wrong answer -0.6, gibberish and
rambling penalised, ...) and ranks them best first; identical replies are dropped.
"""),
    code("""
order = labeler.rank(q["prompt"], [s.text for s in replies], [s.ended for s in replies])
ranked = [replies[i].text for i in order]
gold = [labeler.score(q["prompt"], replies[i].text, replies[i].ended) for i in order]
table([(i + 1, t, g) for i, (t, g) in enumerate(zip(ranked, gold))],
      ["rank", "reply", "gold score"])
"""),
    md("""
## The dataset

The same for a few hundred prompts (with 20% each of improper, contested and out-of-scope
questions, so the behaviours get ranked often), plus a held-out set of prompts to measure the
reward model on rankings it never saw.

One addition to InstructGPT's recipe: each training ranking also gets a reply the SFT model
gave to a prompt of *another* category (`off_prompt=1`), which the labeler ranks low. The SFT
model only ever says "I can't help with that" to improper requests, so without such replies
the reward model never sees that sentence lose, learns that it is simply a good reply, and
PPO then answers every question with it. Off-prompt replies teach that a reply must fit its
prompt. The held-out rankings stay purely on-policy: that is the honest accuracy.
"""),
    code("""
from gptlab.stages.reward import RewardModel, RewardTrainer, build_preferences

t0 = time.perf_counter()
prefs = build_preferences(policy, tok, prompts, labeler, k=K, max_new_tokens=r["max_new_tokens"],
                          temperature=r["temperature"], seed=SEED, off_prompt=r["off_prompt"])
val = build_preferences(policy, tok, world.ranking_prompts("heldout", n=r["val_prompts"]),
                        labeler, k=K, max_new_tokens=r["max_new_tokens"],
                        temperature=r["temperature"], seed=SEED + 1)
pairs = sum(len(x["responses"]) * (len(x["responses"]) - 1) // 2 for x in prefs)
print(f"{len(prefs)} ranked prompts ({pairs} pairs), {len(val)} held out, "
      f"in {time.perf_counter() - t0:.0f} s")
"""),
    md("""
## The reward model

It is the SFT transformer with the language-model head replaced by a **scalar head**: the
whole exchange goes in, and the hidden state at the *last* token, the only position that has
read the entire response, is mapped to one number. This is the seed's picture: prompt tokens
(blue), completion tokens (yellow), the prediction read at the end (green).
"""),
    code("""
from gptlab.chat import prompt_ids

rm = RewardModel.from_gpt(policy, seed=SEED)      # a copy of the SFT trunk + a fresh head
best = prefs[0]
reward0 = float(rm.score_texts(tok, [best["prompt"]], [best["responses"][0]])[0])
reply_ids = tok.encode(best["responses"][0]) + [tok.special_tokens["<|end|>"]]
fig = plot.reward_tokens(tok, prompt_ids(tok, best["prompt"]), reply_ids, reward0,
                         title="the reward model reads the whole exchange (untrained head)")
"""),
    md("""
## The ranking loss

A ranking of K replies gives C(K,2) pairs (better, worse). For each pair the loss is
`-log sigmoid(r_better - r_worse)`: small when the model already scores the better reply
higher, large when it does not. InstructGPT averages the pairs of one prompt, so a prompt
counts once however many pairs it has. Green arcs: pairs the (untrained) model gets right;
red: pairs it gets wrong; the number is each pair's loss.
"""),
    code("""
example = max(prefs, key=lambda x: len(x["responses"]))
def rewards_of(rec):
    return rm.score_texts(tok, [rec["prompt"]] * len(rec["responses"]), rec["responses"],
                          rec["ended"])
fig = plot.ranking(example["responses"], rewards=rewards_of(example), scores=example["scores"],
                   prompt=example["prompt"])
"""),
    code("""
rw = rewards_of(example)[None, :]
loss, grad, _ = gl.losses.ranking_loss(rw, np.asarray([rw.shape[1]]))
print(f"ranking loss of this prompt: {loss:.4f}")
print("gradient on each reward (push up the better, down the worse):", np.round(grad[0], 4))
"""),
    md("""
## Training

Each step scores all K replies of a batch of prompts in one forward pass, applies the ranking
loss, and back-propagates through the head into the whole transformer. Pairwise accuracy: the
share of pairs ranked as the labeler ranked them (50% is chance).
"""),
    code("""
steps = r["steps"]
kw = {k: v for k, v in r.items()
      if k not in ("steps", "prompts", "val_prompts", "k", "off_prompt", "max_new_tokens",
                   "temperature", "normalize")}
rt = RewardTrainer(rm, tok, prefs, val_data=val, max_steps=steps, seed=SEED, **kw)
before = rt.evaluate()
t0 = time.perf_counter()
rt.train(steps)
print(f"{steps} steps in {time.perf_counter() - t0:.0f} s")
"""),
    code("""
fig = plot.curves(rt.history, ["loss", "accuracy", "val_accuracy"], separate=True,
                  title="reward model training")
"""),
    md("""
The loss only sees differences of rewards, so their level is arbitrary. We shift the bias so
that an average SFT reply scores 0: a positive reward then means "better than the SFT model
usually does", which keeps PPO's rewards centred.
"""),
    code("""
norm = sample(policy, tok, [x["prompt"] for x in world.rl_prompts("train", n=max(8, r["normalize"]))],
              r["max_new_tokens"], temperature=1.0, seed=SEED + 2)
shift = rm.normalize(tok, norm)
after = rt.evaluate()
table([("held-out pairwise accuracy", before["accuracy"], after["accuracy"]),
       ("held-out loss", before["loss"], after["loss"])], ["measure", "before", "after"])
print(f"bias shifted by {shift:+.3f}")
"""),
    code("""
fig = plot.ranking(example["responses"], rewards=rewards_of(example), scores=example["scores"],
                   prompt=example["prompt"])
"""),
    md("""
Across held-out rankings: the reward of the best reply against the worst. A good reward model
pulls the two distributions apart.
"""),
    code("""
prompts_v = [x["prompt"] for x in val]
chosen = rm.score_texts(tok, prompts_v, [x["responses"][0] for x in val], [x["ended"][0] for x in val])
rejected = rm.score_texts(tok, prompts_v, [x["responses"][-1] for x in val],
                          [x["ended"][-1] for x in val])
fig = plot.reward_histogram(chosen, rejected)
"""),
    md("""
Where does it agree with the labeler? Pairwise accuracy per prompt category on the held-out
rankings. The reward model is only a proxy of the labeler, with blind spots; PPO will find them.
"""),
    code("""
rows = []
for cat in ("factual", "arithmetic", "improper", "contested", "out_of_scope"):
    # records whose replies all scored the same hold no preference (the trainer drops them)
    sub = [x for x in val if x.get("category") == cat and len(set(x["scores"])) > 1]
    if sub:
        rows.append((cat, len(sub), rt.evaluate(sub)["accuracy"]))
table(rows, ["category", "held-out prompts", "pairwise accuracy"])
"""),
    md("""
## Save the reward model for the next notebook
"""),
    code("""
summary = {"heldout_pairwise_accuracy": after["accuracy"],
           "heldout_pairwise_accuracy_before": before["accuracy"], "prompts": len(prefs),
           "pairs": pairs, "k": K, "steps": rt.t}
stage = pipeline.Stage("reward", os.path.abspath(os.path.join(RUNS, "reward")), summary, rm, tok,
                       rt, S, sft.dir, sft.seed, sft.preset)
pipeline.save_stage(stage)
pipeline.write_jsonl(os.path.join(stage.dir, "preferences.jsonl"), prefs)
print("saved to", os.path.relpath(stage.dir))
"""),
]

# ---------------------------------------------------------------------------------------------
NB4 = [
    md("""
# 4. RLHF with PPO: practising against the reward model

The last stage is reinforcement learning. The SFT model, now called the **policy**, answers a
batch of prompts; the reward model scores every answer; and the policy is nudged to make
high-scoring answers more likely and low-scoring ones less likely. Nobody writes answers any
more: the model learns from its own attempts. This is what brought out, in ChatGPT, the
behaviours the seed lists: **impartial answers** on contested questions, **refusing improper
requests**, and **declining questions beyond its knowledge**.

This notebook starts from `03_reward_model`'s checkpoint (or rebuilds everything before it).
"""),
    code(SETUP),
    code("""
rst = pipeline.ensure_stage("reward", RUNS, FAST, S, SEED)
sst = pipeline.load_stage(rst.parent)
tok, rm, sft_model = rst.tok, rst.model, sst.model
world = TinyWorld(seed=rst.seed, **S["world"])
labeler = GoldLabeler(world)
print(f"SFT model from {os.path.relpath(sst.dir)}\\nreward model from {os.path.relpath(rst.dir)} "
      f"(held-out pairwise accuracy "
      f"{rst.summary['heldout_pairwise_accuracy']:.1%})")
"""),
    md("""
## The idea in one picture

Three completions of one prompt, scored **great**, **ok** and **bad**. Reinforcement learning
raises the probability of completions that scored better than average and lowers it for those
that scored worse. Below: the log-probability of each completion under the policy, one
policy-gradient update (the loss is `-advantage x log p(completion)`, advantage = score minus
the mean score), and the log-probabilities again.
"""),
    code("""
from gptlab.chat import render

fact = next(f for f in world.train_facts if f.domain == "animal" and f.relation == "legs")
prompt = world.question(fact)
wrong = next(v for v in world.relation_values("animal", "legs") if v != fact.value)
completions = {"great": world.answer_sentence(fact), "ok": "I don't know.",
               "bad": world.answer_sentence(fact).replace(fact.value, wrong)}
scores = np.array([labeler.score(prompt, c) for c in completions.values()])
print("prompt:", prompt)
for (name, c), s in zip(completions.items(), scores):
    print(f"  {name:5s} {s:+.2f}  {c}")


def completion_logprob(model, text):
    ids, mask = render(tok, prompt, text)
    idx, tgt, m = np.asarray([ids[:-1]]), np.asarray([ids[1:]]), np.asarray([mask[1:]], float)
    logits = model.forward(idx)
    logp, _ = gl.losses.logprobs(logits, tgt)
    return float((logp * m).sum()), logits, tgt, m
"""),
    code("""
toy = sft_model.copy()
opt = gl.AdamW(toy, lr=3e-4, weight_decay=0.0)
advantages = scores - scores.mean()
before = [completion_logprob(toy, c)[0] for c in completions.values()]
toy.zero_grad()
for a, c in zip(advantages, completions.values()):
    _, logits, tgt, m = completion_logprob(toy, c)           # forward, then backward at once
    dlogp = (-a / len(completions) * m).astype(np.float32)  # d(-A log p)/d(token log-probs)
    toy.backward(dlogits=gl.losses.logprobs_backward(logits, tgt, dlogp))
opt.step()
after = [completion_logprob(toy, c)[0] for c in completions.values()]
fig = plot.logprob_shift(list(completions), before, after, scores)
"""),
    md("""
## The four models

| model | starts as | trained? | role |
|---|---|---|---|
| policy | the SFT model | yes | writes the answers |
| reference | the SFT model | no (frozen) | the KL penalty keeps the policy near it |
| reward model | notebook 03 | no (frozen) | scores each finished answer |
| value model | the reward model | yes | predicts, at every token, the reward still to come |

The reward of an answer is the reward model's score minus `beta x KL(policy || reference)`
(summed over its tokens): without the penalty the policy would drift into text the reward
model never saw and learn to fool it. The value model turns one score per answer into a
per-token signal: each token's **advantage** says whether things went better or worse than
expected after it (generalised advantage estimation, GAE).
"""),
    code("""
from gptlab.stages.ppo import PPOTrainer, evaluate_policy

p = dict(S["ppo"])
steps, n_prompts = p.pop("steps"), p.pop("prompts")
policy = sft_model.copy()
ppo = PPOTrainer(policy, sft_model, rm, tok, world.rl_prompts("train", n=n_prompts),
                 labeler=labeler, seed=SEED, **p)
table([("policy", f"{policy.num_params:,}", "yes"), ("reference", f"{sft_model.num_params:,}", "no"),
       ("reward model", f"{rm.trunk.num_params + rm.config.n_embd + 1:,}", "no"),
       ("value model", f"{ppo.value_model.trunk.num_params + rm.config.n_embd + 1:,}", "yes")],
      ["model", "parameters", "trained"])
"""),
    md("""
## One rollout, token by token

One PPO step samples answers to a batch of prompts (the *rollout*) and then takes a few
gradient steps on them. Here is one answer of the first rollout as PPO sees it: each token's
log-probability under the policy and the reference, the KL penalty, the reward (the score
arrives on the last token), the value estimate, the advantage and the return.
"""),
    code("""
first = ppo.step()
i = int(np.argmax([len(s.ids) for s in ppo._last["samples"]][:8]))
print("prompt:", ppo._last["samples"][i].prompt)
print("reply: ", ppo._last["samples"][i].text)
rows = ppo.last_rollout_table(i)
table([(repr(x["token"]), x["logp"], x["ref_logp"], x["kl"], x["reward"], x["value"],
        x["advantage"], x["return"]) for x in rows],
      ["token", "log p", "ref log p", "KL", "reward", "value", "advantage", "return"])
"""),
    md("""
## PPO steps

Each step: a rollout, then `num_ppo_epochs` passes over it in minibatches with PPO's clipped
objective (a token's probability may move only so far, `cliprange`, from the policy that
sampled it) and the value model's regression to the returns. The **reward curves** below are
the dashboard of an RLHF run.
"""),
    code("""
t0 = time.perf_counter()
ppo.train(steps - ppo.t)
print(f"{ppo.t} PPO steps in {time.perf_counter() - t0:.0f} s")
fig = plot.reward_curves(ppo.history)
"""),
    md("""
## Before and after, on held-out prompts

Greedy answers of the SFT model and of the PPO policy to prompts never used in training:
the gold labeler's score (what we really want), the reward model's score (what PPO
optimised), and the three behaviours.
"""),
    code("""
held = world.rl_prompts("heldout", n=S["eval"]["rl_prompts"])
mx = p["max_new_tokens"]
res = {"SFT": evaluate_policy(sft_model, tok, held, labeler, rm, max_new_tokens=mx),
       "PPO": evaluate_policy(policy, tok, held, labeler, rm, max_new_tokens=mx)}
kl = evaluate_policy(policy, tok, held, labeler, rm, ref=sft_model, max_new_tokens=mx,
                     temperature=1.0, seed=SEED)["kl"]
table([(k, v["gold_score"], v["rm_score"], *(f"{v['behaviour'][b]:.0%}" for b in
        ("refuse_improper", "impartial", "decline_out_of_scope"))) for k, v in res.items()],
      ["model", "gold score", "RM score", "refuses improper", "impartial", "declines"])
print(f"KL(PPO policy || SFT) per reply: {kl:.3f} nats")
"""),
    code("""
fig = plot.bars({k: v["behaviour"] for k, v in res.items()},
                ["refuse_improper", "impartial", "decline_out_of_scope"],
                title="behaviour rates on held-out prompts", ylabel="rate")
"""),
    code("""
from gptlab.chat import sample

picked = []
for cat in ("factual", "arithmetic", "improper", "contested", "out_of_scope"):
    picked += [x for x in held if x["category"] == cat][:2]
qs = [x["prompt"] for x in picked]
a = sample(sft_model, tok, qs, mx, temperature=0)
b = sample(policy, tok, qs, mx, temperature=0)
table([(x["category"], x["prompt"], s.text, t.text) for x, s, t in zip(picked, a, b)],
      ["category", "prompt", "SFT", "PPO"])
"""),
    md("""
## Cheaper relatives: best-of-n and DPO

- **Best-of-n** trains nothing: sample n answers from the SFT model and keep the one the
  reward model likes best. It costs n answers per question at inference time and shows how
  much the reward model has to offer.
- **DPO** (direct preference optimisation) skips the reward model and the sampling loop: a
  closed-form rearrangement of the KL-penalised RL objective gives a loss on the policy itself,
  trained directly on the ranked pairs.
"""),
    code("""
from gptlab.stages.dpo import DPOTrainer, best_of_n

n = max(2, S["eval"]["best_of_n"])
best = best_of_n(sft_model, rm, tok, held, n=n, max_new_tokens=mx, temperature=1.0, seed=SEED)
res[f"best-of-{n}"] = evaluate_policy(sft_model, tok, held, labeler, rm, replies=best)

prefs = pipeline.read_jsonl(os.path.join(rst.dir, "preferences.jsonl"))
d = dict(S["dpo"])
dpo_steps = max(d.pop("steps"), 4)
dpo_policy = sft_model.copy()
dpo = DPOTrainer(dpo_policy, sft_model, tok, prefs, max_steps=dpo_steps, seed=SEED, **d)
dpo.train(dpo_steps)
res["DPO"] = evaluate_policy(dpo_policy, tok, held, labeler, rm, max_new_tokens=mx)
table([(k, v["gold_score"], v["rm_score"], *(f"{v['behaviour'][b]:.0%}" for b in
        ("refuse_improper", "impartial", "decline_out_of_scope"))) for k, v in res.items()],
      ["method", "gold score", "RM score", "refuses improper", "impartial", "declines"])
"""),
    code("""
fig = plot.bars(res, "gold_score", title="gold score on held-out prompts", ylabel="gold score")
"""),
    md("""
## Over-optimisation

The reward model is a proxy of the labeler. The further the policy moves from the SFT model
(larger KL), the more it can exploit the proxy's blind spots: the reward-model score keeps
rising while the true (gold) score flattens or falls. This is why RLHF keeps a KL penalty and
stops early (Gao et al., 2022, *Scaling laws for reward model overoptimization*).

To see it, we run PPO again from the SFT model with the KL penalty switched off (`beta = 0`)
and for longer. Each dot is one PPO step, placed by how far the policy has moved (KL to the
SFT model) and coloured by which score it is; the lines join the means of groups of steps.
"""),
    code("""
o = dict(S["eval"]["overopt"])
over_steps = max(o.pop("steps"), 4)
greedy = PPOTrainer(sft_model.copy(), sft_model, rm, tok, world.rl_prompts("train", n=n_prompts),
                    labeler=labeler, seed=SEED, **{**p, **o})
t0 = time.perf_counter()
greedy.train(over_steps)
print(f"{over_steps} steps with beta = {o['kl_coef']} in {time.perf_counter() - t0:.0f} s")
res["PPO, beta=0"] = evaluate_policy(greedy.policy, tok, held, labeler, rm, max_new_tokens=mx)
table([(k, v["gold_score"], v["rm_score"]) for k, v in res.items()],
      ["model", "gold score", "RM score"])
fig = plot.overoptimization(greedy.history)
"""),
    md("""
## Save the RLHF policy

`python -m gptlab chat --from <folder>` talks to it from the command line.
"""),
    code("""
summary = {"gold_score_before": res["SFT"]["gold_score"], "gold_score_after": res["PPO"]["gold_score"],
           "rm_score_before": res["SFT"]["rm_score"], "rm_score_after": res["PPO"]["rm_score"],
           "kl": kl, "behaviour_before": res["SFT"]["behaviour"],
           "behaviour_after": res["PPO"]["behaviour"], "steps": ppo.t}
stage = pipeline.Stage("ppo", os.path.abspath(os.path.join(RUNS, "ppo")), summary, policy, tok,
                       ppo, S, rst.dir, rst.seed, rst.preset)
pipeline.save_stage(stage)
print("saved to", os.path.relpath(stage.dir))
"""),
]

NOTEBOOKS = {"01_pretraining.ipynb": NB1, "02_sft.ipynb": NB2, "03_reward_model.ipynb": NB3,
             "04_rlhf_ppo.ipynb": NB4}


def build(name: str, cells) -> nbformat.NotebookNode:
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python",
                                 "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def settle_streams(nb: nbformat.NotebookNode) -> None:
    """Keep what a terminal would show of each text stream: a progress bar redraws its line
    with carriage returns hundreds of times, and only the last drawing of each line is kept
    (the committed notebooks would otherwise hold every redraw)."""
    for cell in nb.cells:
        merged: list = []
        for out in cell.get("outputs", []):  # the kernel sends each redraw as its own output
            if merged and out.get("output_type") == "stream" and \
                    merged[-1].get("output_type") == "stream" and \
                    merged[-1].get("name") == out.get("name"):
                merged[-1]["text"] += out["text"]
            else:
                merged.append(out)
        for out in merged:
            if out.get("output_type") == "stream" and "\r" in out.get("text", ""):
                lines = out["text"].split("\n")
                out["text"] = "\n".join(ln.rstrip("\r").split("\r")[-1] for ln in lines)
        if "outputs" in cell:
            cell["outputs"] = merged


def execute(path: str, timeout: int = 1800) -> float:
    """Run a notebook in place with nbclient (cwd: the notebooks folder). Returns seconds."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": os.path.dirname(path)}}).execute()
    seconds = time.perf_counter() - t0
    settle_streams(nb)
    nbformat.write(nb, path)
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--execute", action="store_true", help="run the notebooks and keep outputs")
    ap.add_argument("--only", nargs="*", default=None, help="notebook names (default: all)")
    args = ap.parse_args()
    os.makedirs(NB_DIR, exist_ok=True)
    for name, cells in NOTEBOOKS.items():
        if args.only and not any(o in name for o in args.only):
            continue
        path = os.path.join(NB_DIR, name)
        nbformat.write(build(name, cells), path)
        print("wrote", os.path.relpath(path, ROOT), flush=True)
        if args.execute:
            s = execute(path)
            print(f"  executed in {s:.0f} s", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    main()
