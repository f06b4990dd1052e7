"""Benchmark of gptlab's byte-level BPE against tiktoken and Hugging Face tokenizers.

    python benchmarks/bench_tokenizer.py [--text FILE] [--mb 3] [--vocab 2048 8192]

For each vocabulary size: training time (gptlab vs HF `tokenizers`, both on one thread),
tokens per byte on held-out text (same corpus, same vocab size), single-thread encode
throughput (gptlab vs tiktoken built from gptlab's own ranks, and HF), and batch encode on
all threads. The corpus is --text, else English docstrings of the installed Python
(standard library first), cut to --mb megabytes; the last 10% is held out.
"""

import argparse
import ast
import glob
import os
import sys
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # HF tokenizers: one thread (before import)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import gptlab  # noqa: E402
from gptlab.tokenizer import GPT2_PATTERN, Tokenizer  # noqa: E402


def docstring_corpus(max_bytes: int) -> str:
    """English text without a download: docstrings of the standard library, then of the
    installed packages, in a fixed order."""
    stdlib = os.path.dirname(os.__file__)
    paths = sorted(p for p in glob.glob(os.path.join(stdlib, "**", "*.py"), recursive=True)
                   if "site-packages" not in p)
    paths += sorted(glob.glob(os.path.join(stdlib, "site-packages", "**", "*.py"), recursive=True))
    for p in sys.path:
        if p.endswith("site-packages") and not p.startswith(stdlib):
            paths += sorted(glob.glob(os.path.join(p, "**", "*.py"), recursive=True))
    out, n = [], 0
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read())
        except (SyntaxError, UnicodeDecodeError, OSError, ValueError, RecursionError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                d = ast.get_docstring(node)
                if d and d.isascii():
                    out.append(d)
                    n += len(d) + 2
        if n >= max_bytes:
            break
    return "\n\n".join(out)[:max_bytes]


def best_time(fn, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def hf_train(text, vocab_size, specials):
    from tokenizers import Tokenizer as HF
    from tokenizers import decoders, models, pre_tokenizers, trainers

    hf = HF(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  min_frequency=0, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator([text], trainer)
    return hf


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--text", help="a UTF-8 text file (default: Python docstrings)")
    ap.add_argument("--mb", type=float, default=3.0, help="corpus size in MB")
    ap.add_argument("--vocab", type=int, nargs="+", default=[2048, 8192])
    args = ap.parse_args()
    if args.text:
        with open(args.text, encoding="utf-8") as f:
            corpus = f.read()[: int(args.mb * 1e6)]
    else:
        corpus = docstring_corpus(int(args.mb * 1e6))
    cut = int(len(corpus) * 0.9)
    train_text, held_out = corpus[:cut], corpus[cut:]
    nbytes = len(corpus.encode("utf-8"))
    try:
        import tiktoken
    except ImportError:
        tiktoken = None
    try:
        import tokenizers
    except ImportError:
        tokenizers = None
    threads = gptlab.get_num_threads()
    print(f"corpus: {nbytes / 1e6:.2f} MB ({'--text ' + args.text if args.text else 'docstrings'})"
          f", train on 90%, held-out 10%; {threads} threads for batch rows")
    print(f"versions: tiktoken {getattr(tiktoken, '__version__', '-')}, "
          f"tokenizers {getattr(tokenizers, '__version__', '-')}\n")
    specials = ["<|endoftext|>", "<|user|>", "<|assistant|>", "<|end|>"]
    batch = f"encode_batch MB/s ({threads} threads)"
    measures = ["train time (s, 1 thread)", "tokens/byte (held-out)", "encode MB/s (1 thread)",
                "encode_to_numpy MB/s (1 thread)", batch]
    rows = []
    docs = corpus.split("\n\n")
    for V in args.vocab:
        mine, ref = {}, {}
        t = best_time(lambda V=V: Tokenizer.train(train_text, vocab_size=V), repeat=2)
        mine[measures[0]] = f"{t:.3f}"
        tok = Tokenizer.train(train_text, vocab_size=V)
        tpb = len(tok.encode(held_out)) / len(held_out.encode("utf-8"))
        mine[measures[1]] = f"{tpb:.4f}"
        t = best_time(lambda tok=tok: tok.encode(corpus))
        mine[measures[2]] = f"{nbytes / t / 1e6:.1f}"
        t = best_time(lambda tok=tok: tok.encode_to_numpy(corpus))
        mine[measures[3]] = f"{nbytes / t / 1e6:.1f}"
        t = best_time(lambda tok=tok: tok.encode_batch(docs))
        mine[batch] = f"{nbytes / t / 1e6:.1f}"
        if tiktoken is not None:
            ranks = {tok.token_bytes(i): i for i in range(tok.vocab_size)
                     if i not in tok.special_tokens.values()}
            enc = tiktoken.Encoding(f"gl{V}", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                                    special_tokens={})
            assert enc.encode_ordinary(held_out) == tok.encode(held_out)  # same vocab, same ids
            t = best_time(lambda enc=enc: enc.encode_ordinary(corpus))
            ref[measures[2]] = f"tiktoken {nbytes / t / 1e6:.1f}"
            t = best_time(lambda enc=enc: enc.encode_ordinary_batch(docs, num_threads=threads))
            ref[batch] = f"tiktoken {nbytes / t / 1e6:.1f}"
        if tokenizers is not None:
            t = best_time(lambda V=V: hf_train(train_text, V, specials), repeat=2)
            ref[measures[0]] = f"HF tokenizers {t:.3f}"
            hf = hf_train(train_text, V, specials)
            tpb_hf = len(hf.encode(held_out).ids) / len(held_out.encode("utf-8"))
            ref[measures[1]] = f"HF tokenizers {tpb_hf:.4f} (gptlab {(tpb / tpb_hf - 1):+.2%})"
            t = best_time(lambda hf=hf: hf.encode(corpus), repeat=1)
            hf_text = f"HF tokenizers {nbytes / t / 1e6:.1f}"
            ref[measures[2]] = "; ".join(filter(None, [ref.get(measures[2]), hf_text]))
        rows += [(V, m, mine[m], ref.get(m, "-")) for m in measures]
    print("| vocab | measure | gptlab | reference |")
    print("|---:|---|---:|---|")
    for V, k, g, o in rows:
        print(f"| {V} | {k} | {g} | {o} |")


if __name__ == "__main__":
    main()
