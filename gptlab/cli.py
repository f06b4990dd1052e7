"""The command line: ``python -m gptlab pipeline`` runs the four stages and writes a report card.

    python -m gptlab pipeline [--preset small] [--out runs/NAME] [--fast] [--seed 0] [--threads N]
                              [--precision float32|bfloat16]
    python -m gptlab pretrain [--preset small] [--out DIR] [--fast] [--steps N]
    python -m gptlab sft      --from PRETRAIN_DIR [--out DIR] [--fast] [--steps N]
    python -m gptlab reward   --from SFT_DIR [--out DIR] [--fast] [--steps N]
    python -m gptlab ppo      --from REWARD_DIR [--sft SFT_DIR] [--out DIR] [--fast] [--steps N]
    python -m gptlab chat     --from DIR [--prompt TEXT] [--temperature T]

Each stage writes its checkpoint, ``metrics.jsonl`` and plots into its folder; by default a
single stage writes next to the folder it starts from (``runs/x/pretrain`` -> ``runs/x/sft``).
Usage errors exit with status 2, failures with status 1, each as one line on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys

PROG = "gptlab"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``gptlab pipeline: error: ... (see --help)``."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _int_at_least(lo: int, expected: str):
    """An argparse type: an integer >= ``lo``, else a one-line error naming ``expected``."""
    def parse(v: str) -> int:
        try:
            n = int(v)
        except ValueError:
            n = lo - 1
        if n < lo:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {v!r}")
        return n
    return parse


_positive = _int_at_least(1, "a positive integer")
_nonneg = _int_at_least(0, "an integer >= 0")


def _common(p: argparse.ArgumentParser, steps: bool = True) -> None:
    p.add_argument("--fast", action="store_true",
                   help="tiny budgets (a smoke run of a few minutes; poor numbers)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0, or the "
                   "seed of the --from stage)")
    p.add_argument("--threads", type=_positive, default=None,
                   help="threads of the C kernels (default: all cores)")
    p.add_argument("--precision", choices=("float32", "bfloat16"), default=None,
                   help="arithmetic of the matrix products (default float32; bfloat16 needs "
                   "AVX512-BF16: see gptlab.set_matmul_precision)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or stage messages")
    if steps:
        p.add_argument("--steps", type=_nonneg, default=None,
                       help="optimizer steps (default: from the FULL/FAST settings)")


def build_parser() -> argparse.ArgumentParser:
    from .config import GPTConfig

    parser = _Parser(prog=PROG, description="gptlab: pretraining, SFT, reward modeling and "
                     "RLHF with PPO of a small GPT, on a CPU.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    parser.commands = {}  # name -> its parser, for errors found after parsing

    p = sub.add_parser("pipeline", help="run all four stages on TinyWorld and write a report "
                       "card", description="Run pretraining, SFT, reward modeling and PPO on "
                       "TinyWorld; write OUT/report.md and OUT/report.json.")
    p.add_argument("--preset", default="small", choices=GPTConfig.presets(),
                   help="model size (default: small)")
    p.add_argument("--out", default=None, help="output folder (default: runs/PRESET or "
                   "runs/PRESET-fast)")
    p.add_argument("--resume", action="store_true", help="reuse the stages already finished "
                   "in --out (go on after an interruption)")
    _common(p, steps=False)

    p = sub.add_parser("pretrain", help="stage 1: tokenizer + pretraining",
                       description="Train a tokenizer and pretrain a GPT on TinyWorld.")
    p.add_argument("--preset", default="small", choices=GPTConfig.presets(),
                   help="model size (default: small)")
    p.add_argument("--out", default=None, help="output folder (default: runs/PRESET/pretrain)")
    _common(p)

    for name, prev, what in (("sft", "pretrain", "stage 2: supervised fine-tuning"),
                             ("reward", "sft", "stage 3: reward model from ranked samples"),
                             ("ppo", "reward", "stage 4: RLHF with PPO")):
        p = sub.add_parser(name, help=what, description=f"{what[0].upper()}{what[1:]}, "
                           f"starting from a {prev} folder.")
        p.add_argument("--from", dest="src", required=True, metavar="DIR",
                       help=f"the {prev} stage's folder")
        parser.commands[name] = p
        if name == "ppo":
            p.add_argument("--sft", default=None, metavar="DIR",
                           help="the SFT folder (default: the one the reward stage came from)")
        p.add_argument("--out", default=None, help=f"output folder (default: {name}/ next "
                       "to the --from folder)")
        _common(p)

    p = sub.add_parser("chat", help="talk to a trained model",
                       description="Ask a model questions in the chat template (greedy by "
                       "default). Without --prompt, reads one question per line from stdin.")
    p.add_argument("--from", dest="src", required=True, metavar="DIR",
                   help="a stage folder with model.safetensors (sft or ppo)")
    p.add_argument("--prompt", action="append", default=None,
                   help="a question (repeatable); otherwise read questions from stdin")
    p.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (default)")
    p.add_argument("--max-new-tokens", type=_positive, default=48)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=_positive, default=None)
    parser.commands["chat"] = p
    return parser


def _need_dir(parser, path: str, what: str) -> None:
    if not os.path.isdir(path):
        parser.error(f"{what}: no such folder: {path}")
    if not os.path.isfile(os.path.join(path, "stage.json")):
        parser.error(f"{what}: {path} is not a gptlab stage folder (no stage.json)")


def _settings(args, stage: str | None):
    from .pipeline import settings_for

    s = settings_for(args.fast)
    if stage and getattr(args, "steps", None) is not None:
        s[stage]["steps"] = args.steps
    return s


def _print_summary(st) -> None:
    print(f"{st.name}: {st.dir}")
    for k, v in st.summary.items():
        if isinstance(v, float):
            print(f"  {k}: {v:.4g}")
        elif isinstance(v, (int, str)):
            print(f"  {k}: {v}")


def run(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    import gptlab as gl

    from . import pipeline

    parser = parser.commands.get(args.command, parser)  # errors name the subcommand

    if args.threads is not None:
        gl.set_num_threads(args.threads)
    if getattr(args, "precision", None):
        gl.set_matmul_precision(args.precision)
    progress = not getattr(args, "quiet", False)

    if args.command == "pipeline":
        out = args.out or os.path.join("runs", args.preset + ("-fast" if args.fast else ""))
        report = pipeline.run_pipeline(args.preset, out, args.fast, args.seed or 0,
                                       args.threads, progress, resume=args.resume)
        bad = pipeline.check_report(report)
        print(f"report: {os.path.join(out, 'report.md')} and {os.path.join(out, 'report.json')}")
        folders = ", ".join(os.path.join(out, p) for p in report["paths"].values())
        print(f"plots and checkpoints: {folders}")
        for n in report.get("notes", []):
            print(f"note: {n}")
        if bad:
            print(f"gptlab: error: report has missing or non-finite values: {', '.join(bad)}",
                  file=sys.stderr)
            return 1
        return 0

    if args.command == "chat":
        _need_dir(parser, args.src, "--from")
        from .chat import sample

        st = pipeline.load_stage(args.src)
        if st.name == "reward":
            parser.error("--from: a reward-model folder cannot chat; use an sft or ppo folder")
        prompts = args.prompt
        interactive = prompts is None
        if interactive:
            if sys.stdin.isatty():
                print("Ask a question (Ctrl-D to quit).", file=sys.stderr)
            prompts = (line.strip() for line in sys.stdin)
        for q in prompts:
            if not q:
                continue
            n = max(1, min(args.max_new_tokens, st.model.config.block_size - 8))
            r = sample(st.model, st.tok, [q], n, temperature=args.temperature, seed=args.seed)[0]
            print(f"{q}\n-> {r.text}" if not interactive else r.text, flush=True)
        return 0

    s = _settings(args, args.command)
    if args.command == "pretrain":
        out = args.out or os.path.join("runs", args.preset, "pretrain")
        st = pipeline.pretrain_stage(out, args.preset, args.fast, s, args.seed or 0,
                                     progress=progress)
    else:
        _need_dir(parser, args.src, "--from")
        out = args.out or os.path.join(os.path.dirname(os.path.abspath(args.src)), args.command)
        if args.command == "sft":
            st = pipeline.sft_stage(args.src, out, args.fast, s, args.seed, progress=progress)
        elif args.command == "reward":
            st = pipeline.reward_stage(args.src, out, args.fast, s, args.seed, progress=progress)
        else:
            if args.sft is not None:
                _need_dir(parser, args.sft, "--sft")
            st = pipeline.ppo_stage(args.src, out, args.sft, args.fast, s, args.seed,
                                    progress=progress)
    _print_summary(st)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``gptlab`` and ``python -m gptlab``: exit status 0, 1 (failure) or 2
    (usage)."""
    try:
        return run(argv)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except SystemExit:
        raise
    except Exception as e:  # one clear line, no traceback (GPTLAB_DEBUG=1 shows it)
        if os.environ.get("GPTLAB_DEBUG"):
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"{PROG}: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
