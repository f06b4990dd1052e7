"""Reads an omp_regions.c trace: time in each kernel's parallel regions, and the serial gaps.

    python benchmarks/omp_regions.py trace.txt [--steps 10] [--warmup 3] [--gap 15]
    python benchmarks/omp_regions.py one.txt --against two.txt   (1 thread against 2)

--steps and --warmup say how many training steps the traced run timed and ran before them
(step_time.py's defaults: 3 warm-up steps), so the warm-up's share of the regions is dropped
and the figures are per timed step. A gap is time the master spends between two regions
(serial work, Python); gaps over --gap microseconds are listed by the pair of regions around
them. With --against, each kernel's region time in the first trace is divided by the second's:
run one trace with --threads 1 and one with --threads 2 to see which kernels split well.
Read a trace before rebuilding: the offsets are looked up in the library file as it is now,
so a trace of an older build is named with the new build's symbols (wrongly).
"""

from __future__ import annotations

import argparse
import bisect
import collections
import subprocess


def symbolizer():
    """A function "library+0xoffset" -> the symbol containing it (nm, hidden symbols too)."""
    tables: dict[str, tuple[list[int], list[str]]] = {}

    def name(where: str) -> str:
        lib, _, off = where.rpartition("+0x")
        if lib not in tables:
            syms = []
            out = subprocess.run(["nm", lib], capture_output=True, text=True).stdout
            for line in out.splitlines():
                parts = line.split()
                if len(parts) == 3 and parts[1] in "tTwW":
                    syms.append((int(parts[0], 16), parts[2]))
            syms.sort()
            tables[lib] = ([a for a, _ in syms], [n for _, n in syms])
        addrs, names = tables[lib]
        i = bisect.bisect_right(addrs, int(off, 16)) - 1
        return names[i] if i >= 0 else where
    return name


def load(path: str, steps: int, warmup: int):
    """The regions of the timed steps: (start, end, kernel) in microseconds."""
    name = symbolizer()
    rows = []
    with open(path) as f:
        for line in f:
            a, b, where = line.split()
            rows.append((float(a), float(b), name(where)))
    return rows[len(rows) * warmup // (warmup + steps):]


def summary(rows, steps: int, gap_us: float):
    """Per kernel: regions per step, ms per step; and the gaps over gap_us by neighbours."""
    time_in, calls = collections.Counter(), collections.Counter()
    gaps, ngaps = collections.Counter(), collections.Counter()
    for i, (a, b, fn) in enumerate(rows):
        time_in[fn] += b - a
        calls[fn] += 1
        if i:
            g = a - rows[i - 1][1]
            if gap_us < g < 20_000:  # longer: between blocks of steps, not inside one
                key = (rows[i - 1][2], fn)
                gaps[key] += g
                ngaps[key] += 1
    per = {fn: (calls[fn] / steps, time_in[fn] / steps / 1e3) for fn in time_in}
    return per, gaps, ngaps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("trace")
    ap.add_argument("--against", default=None, help="a second trace: ratios of region times")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--gap", type=float, default=15.0, help="gaps listed: over this many us")
    args = ap.parse_args()
    rows = load(args.trace, args.steps, args.warmup)
    per, gaps, ngaps = summary(rows, args.steps, args.gap)
    span = (rows[-1][1] - rows[0][0]) / args.steps / 1e3
    inside = sum(ms for _, ms in per.values())
    print(f"{args.trace}: {span:.1f} ms per step, {inside:.1f} in parallel regions, "
          f"{sum(gaps.values()) / args.steps / 1e3:.2f} ms in gaps over {args.gap:g} us")
    other = None
    if args.against:
        other = summary(load(args.against, args.steps, args.warmup), args.steps, args.gap)[0]
    print(f"{'kernel':40s} {'regions':>8s} {'ms/step':>8s}" + ("   ratio to --against" if
                                                               other else ""))
    for fn, (n, ms) in sorted(per.items(), key=lambda kv: -kv[1][1])[:16]:
        ratio = f"   {ms / other[fn][1]:.2f}x" if other and fn in other else ""
        print(f"{fn:40s} {n:8.1f} {ms:8.2f}{ratio}")
    print(f"gaps over {args.gap:g} us, by the regions around them (count and ms per step):")
    for key, us in gaps.most_common(8):
        print(f"  {ngaps[key] / args.steps:6.1f} {us / args.steps / 1e3:6.2f}  "
              f"{key[0]} -> {key[1]}")


if __name__ == "__main__":
    main()
