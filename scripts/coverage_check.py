"""Interval coverage of sim-mode experiments across seeds (no Ray).

For each scenario, runs the ``experiment`` workload at the given params over
many seeds and reports how often the posterior intervals contain the truth:

- segment coverage: the truth-comparison rows (each policy-tree segment x
  active non-control arm), at the last round and pooled over all rounds;
- policy accuracy and regret per visitor (first and last round);
- population coverage: the 80% interval of each arm's effect over control
  on everyone (``ArmComparison.effect_interval80``), and the mean and spread
  of its z-score ``(posterior mean - truth) / posterior sd`` (a calibrated
  posterior gives mean 0, sd 1).

Usage::

    python scripts/coverage_check.py                       # null + constant, 100 seeds
    python scripts/coverage_check.py --scenarios reversal --seeds 30 --workers 2
    python scripts/coverage_check.py --json coverage.json  # also write the raw numbers
    python scripts/coverage_check.py --scenarios null --seeds 40 \
        --param 'graduation_rule={"max_relative_loss": 0.01, "min_prob_beats_control": 0.95}'
"""

from __future__ import annotations

import argparse
import json
import math
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from simfarm.experiments.truth import COVERAGE_LEVELS
from simfarm.experiments.workload import build

#: The z-value of a central 80% normal interval (for the z-score above).
Z80 = 1.2815515655446004


def run_seed(scenario: str, seed: int, extra: dict[str, Any]) -> dict[str, Any]:
    """One experiment: per-round segment coverage rows and the population interval check."""
    workload = build({"scenario": scenario, **extra}, seed)
    rounds = []
    for _ in workload:
        snapshot = workload.experiment.latest
        tc = snapshot.truth_comparison
        cumulative = workload.experiment.cumulative
        value = cumulative.value()
        population = []
        for c in snapshot.analysis.comparisons:
            k = snapshot.treatments.index(c.arm)
            truth = float((value[:, k] - value[:, 0]).mean())
            lo, hi = c.effect_interval80
            sd = (hi - lo) / (2 * Z80)
            population.append(
                {"arm": c.arm, "covered80": bool(lo <= truth <= hi), "z": (c.effect - truth) / sd if sd > 0 else math.nan}
            )
        rounds.append(
            {
                "segments": {str(level): [r.covered for r in tc.coverage if r.level == level] for level in COVERAGE_LEVELS},
                "population": population,
                "graduated": bool(workload.experiment.graduation_candidates()),
                "policy_accuracy": tc.policy_accuracy,
                "oracle_gap_rpv": tc.oracle_gap_rpv,
            }
        )
    return {"scenario": scenario, "seed": seed, "rounds": rounds}


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Coverage fractions and z-score moments of one scenario's runs."""

    def fraction(rows: list[bool]) -> float:
        return float(np.mean(rows)) if rows else math.nan

    last = {lv: [c for r in results for c in r["rounds"][-1]["segments"][str(lv)]] for lv in COVERAGE_LEVELS}
    pooled = {lv: [c for r in results for rd in r["rounds"] for c in rd["segments"][str(lv)]] for lv in COVERAGE_LEVELS}
    pop_last = [p for r in results for p in r["rounds"][-1]["population"]]
    z = np.array([p["z"] for p in pop_last], dtype=float)
    per_round_pop = [
        fraction([p["covered80"] for r in results for p in r["rounds"][i]["population"]])
        for i in range(len(results[0]["rounds"]))
    ]
    return {
        "runs": len(results),
        "segment_rows_last_round": len(last[0.8]),
        "segment_coverage_last_round": {str(lv): fraction(last[lv]) for lv in COVERAGE_LEVELS},
        "segment_coverage_all_rounds": {str(lv): fraction(pooled[lv]) for lv in COVERAGE_LEVELS},
        "population_coverage80_last_round": fraction([p["covered80"] for p in pop_last]),
        "population_coverage80_by_round": per_round_pop,
        "population_z_mean": float(np.nanmean(z)),
        "population_z_sd": float(np.nanstd(z)),
        "graduated_runs": sum(any(rd["graduated"] for rd in r["rounds"]) for r in results),
        "policy_accuracy_last_round": float(np.mean([r["rounds"][-1]["policy_accuracy"] for r in results])),
        "regret_first_round": float(np.mean([r["rounds"][0]["oracle_gap_rpv"] for r in results])),
        "regret_last_round": float(np.mean([r["rounds"][-1]["oracle_gap_rpv"] for r in results])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", nargs="+", default=["null", "constant"])
    parser.add_argument("--seeds", type=int, default=100, help="seeds per scenario (0..N-1)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--visitors-per-round", type=int, default=4000)
    parser.add_argument("--workers", type=int, default=2, help="processes (1 runs in this process)")
    parser.add_argument("--json", help="write the summaries and raw rows here")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help='extra experiment param, e.g. --param \'graduation_rule={"min_prob_beats_control": 0.95}\'',
    )
    args = parser.parse_args()
    extra: dict[str, Any] = {"rounds": args.rounds, "visitors_per_round": args.visitors_per_round}
    for item in args.param:
        key, _, value = item.partition("=")
        extra[key] = json.loads(value)
    tasks = [(s, seed, extra) for s in args.scenarios for seed in range(args.seeds)]
    started = time.perf_counter()
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            results = list(pool.map(run_seed, *zip(*tasks, strict=True), chunksize=4))
    else:
        results = [run_seed(*t) for t in tasks]
    elapsed = time.perf_counter() - started
    summaries = {s: summarise([r for r in results if r["scenario"] == s]) for s in args.scenarios}

    print(f"{len(tasks)} experiments ({args.rounds} rounds x {args.visitors_per_round} visitors) in {elapsed:.0f} s")
    header = "| scenario | seeds | segment 80% (last) | segment 95% (last) | segment 80% (all rounds) | segment 95% (all rounds) | population 80% (last) | population z mean / sd | runs graduating |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for s, m in summaries.items():
        seg_last, seg_all = m["segment_coverage_last_round"], m["segment_coverage_all_rounds"]
        print(
            f"| {s} | {m['runs']} | {seg_last['0.8']:.3f} | {seg_last['0.95']:.3f} | {seg_all['0.8']:.3f} | "
            f"{seg_all['0.95']:.3f} | {m['population_coverage80_last_round']:.3f} | "
            f"{m['population_z_mean']:+.2f} / {m['population_z_sd']:.2f} | {m['graduated_runs']} |"
        )
    for s, m in summaries.items():
        by_round = ", ".join(f"{x:.2f}" for x in m["population_coverage80_by_round"])
        print(
            f"{s}: population 80% coverage by round: {by_round}; policy accuracy (last round) "
            f"{m['policy_accuracy_last_round']:.3f}; regret per visitor round 1 -> last: "
            f"{m['regret_first_round']:.3f} -> {m['regret_last_round']:.3f}"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "summaries": summaries, "results": results}, fh)


if __name__ == "__main__":
    main()
