"""Time per experiment round vs cumulative visitors and number of arms (no Ray).

For each cumulative size N and arm count K, a two-round experiment runs
``N - N/10`` visitors then ``N/10``; the second round -- generate, validate,
fit the posterior on all N visitors, fit the policy tree with its bootstrap,
analyse, score against the truth -- is timed (median of ``--repeats``).

Peer, measured in the same run: the segments' posterior draws computed from
per-visitor draws (the ``(n, S, K-1)`` array a per-visitor posterior such
as BART produces, materialised in chunks so memory stays bounded) against
ours, which averages the stratum draws with visitor counts. Both give the
same numbers (checked); the ratio is what stratification saves.

Also times a whole default ``experiment`` job (5 rounds x 4,000 visitors).

Usage::

    python scripts/bench_experiment.py                  # full grid
    python scripts/bench_experiment.py --sizes 10000 100000 --arms 2 3 --repeats 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from simfarm.experiments import ExplicitSchedule, make_generator, sequential_experiment
from simfarm.experiments.workload import build

PHASES = ("generate_s", "fit_s", "tree_s", "analysis_s")


def time_round(n_total: int, n_arms: int, seed: int) -> tuple[dict[str, float], object]:
    """Run two rounds reaching *n_total* visitors; return the second's timings and the experiment."""
    treatments = ["control", *[f"t{i}" for i in range(1, n_arms)]]
    new = max(n_total // 10, 1)
    exp = sequential_experiment(
        generator=make_generator("reversal", treatments=treatments, seed=seed),
        schedule=ExplicitSchedule((n_total - new, new)),
        treatments=treatments,
        seed=seed,
    )
    next(exp)
    next(exp)
    return dict(exp.last_timings), exp


def segment_draws_per_visitor(posterior, stratum_leaf: np.ndarray, n_leaves: int, chunk: int = 20_000) -> np.ndarray:
    """Leaf value draws from materialised per-visitor draws (the peer)."""
    leaf = stratum_leaf[posterior.strata.of_visitor]
    k, s = posterior.value_draws.shape[1:]
    sums = np.zeros((n_leaves, k * s))
    for start in range(0, len(leaf), chunk):
        rows = slice(start, start + chunk)
        per_visitor = posterior.value_draws[posterior.strata.of_visitor[rows]].reshape(-1, k * s)
        onehot = np.zeros((n_leaves, per_visitor.shape[0]))
        onehot[leaf[rows], np.arange(per_visitor.shape[0])] = 1.0
        sums += onehot @ per_visitor
    counts = np.bincount(leaf, minlength=n_leaves)
    return (sums / counts[:, None]).reshape(n_leaves, k, s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[10_000, 100_000, 200_000, 1_000_000])
    parser.add_argument("--arms", nargs="+", type=int, default=[2, 3, 5])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    print("## Round time (second round; median of", args.repeats, "runs)\n")
    print("| cumulative visitors | K | round s | generate | fit | tree | analysis | x vs 10k same K |")
    print("|---|---|---|---|---|---|---|---|")
    base: dict[int, float] = {}
    kept: dict[tuple[int, int], object] = {}
    for n_arms in args.arms:
        for n_total in args.sizes:
            runs = [time_round(n_total, n_arms, seed) for seed in range(args.repeats)]
            med = {p: statistics.median(r[0][p] for r in runs) for p in (*PHASES, "round_wall_s")}
            base.setdefault(n_arms, med["round_wall_s"])
            kept[(n_total, n_arms)] = runs[0][1]
            print(
                f"| {n_total:,} | {n_arms} | {med['round_wall_s']:.3f} | "
                + " | ".join(f"{med[p]:.3f}" for p in PHASES)
                + f" | {med['round_wall_s'] / base[n_arms]:.1f} |"
            )

    print("\n## Peer: segment draws from per-visitor draws vs strata aggregation (K = 3 where run)\n")
    print("| cumulative visitors | per-visitor s | strata s | ratio |")
    print("|---|---|---|---|")
    k_peer = 3 if 3 in args.arms else args.arms[0]
    for n_total in args.sizes:
        exp = kept[(n_total, k_peer)]
        posterior = exp.latest.posterior
        tree = exp.latest.next_recommendation.tree
        stratum_leaf = _stratum_leaf(exp, tree)
        n_leaves = tree.n_leaves
        t0 = time.perf_counter()
        ours = posterior.group_value_draws(stratum_leaf, n_leaves)
        t1 = time.perf_counter()
        peer = segment_draws_per_visitor(posterior, stratum_leaf, n_leaves)
        t2 = time.perf_counter()
        np.testing.assert_allclose(ours, peer, rtol=1e-9)
        print(f"| {n_total:,} | {t2 - t1:.3f} | {t1 - t0:.4f} | {(t2 - t1) / (t1 - t0):.0f}x |")

    print("\n## Default job (5 rounds x 4,000 visitors, K = 2), median of", args.repeats, "\n")
    jobs = []
    for seed in range(args.repeats):
        started = time.perf_counter()
        list(build({"scenario": "reversal"}, seed))
        jobs.append(time.perf_counter() - started)
    print(f"job seconds: {statistics.median(jobs):.2f} (runs: {', '.join(f'{j:.2f}' for j in jobs)})")


def _stratum_leaf(exp, tree) -> np.ndarray:
    """Leaf of every stratum of the latest posterior, routed by each stratum's first visitor."""
    posterior = exp.latest.posterior
    first = np.zeros(posterior.strata.n_strata, dtype=np.int64)
    first[posterior.strata.of_visitor[::-1]] = np.arange(posterior.strata.n_visitors)[::-1]
    frame = exp.cumulative.frame().iloc[first]
    return tree.leaf_index(frame)


if __name__ == "__main__":
    main()
