"""Time generating every registered stimulus with its default parameters.

Run: ``.venv/bin/python bench/stimuli.py [--repeats 3] [--all]``. Prints, per stimulus, the seconds
of the first ``generate(0)`` in a fresh process (cold: pays first-use costs such as reading the
natural images) and the median of ``--repeats`` further calls (warm), then the totals. The target:
the whole default library (the built-in ``mechlens_stimuli`` plugins) generates in under 2 s in
total, cold. ``--all`` adds stimuli of other distributions.
"""

from __future__ import annotations

import argparse
import statistics
import time

from mechlens import registry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="warm calls per stimulus (median)")
    parser.add_argument("--all", action="store_true", help="also time stimuli of other distributions")
    args = parser.parse_args()

    reg = registry.default()
    rows = []
    for entry in reg.entries("stimulus"):
        if not args.all and not entry.cls.__module__.startswith("mechlens_stimuli"):
            continue
        if entry.name in ("movie", "mei"):  # need an input (a file, a model): not part of the library's budget
            continue
        stim = entry.cls()
        start = time.perf_counter()
        ds = stim.generate(0)
        cold = time.perf_counter() - start
        warm = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            stim.generate(0)
            warm.append(time.perf_counter() - start)
        shape = "x".join(str(ds.sizes[d]) for d in ds["stimulus"].dims)
        rows.append((entry.name, shape, ds["stimulus"].nbytes / 2**20, cold, statistics.median(warm)))

    print(f"{'stimulus':20s} {'shape':>20s} {'MiB':>7s} {'cold s':>8s} {'warm s':>8s}")
    for name, shape, mib, cold, warm in rows:
        print(f"{name:20s} {shape:>20s} {mib:7.1f} {cold:8.3f} {warm:8.3f}")
    total_cold = sum(r[3] for r in rows)
    total_warm = sum(r[4] for r in rows)
    print(f"{'total':20s} {'':>20s} {sum(r[2] for r in rows):7.1f} {total_cold:8.3f} {total_warm:8.3f}")
    print(f"target: < 2 s in total (cold): {'met' if total_cold < 2.0 else 'MISSED'}")


if __name__ == "__main__":
    main()
