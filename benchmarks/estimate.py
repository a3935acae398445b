"""Per-delivery defect rates: visionline's corrected estimate vs the raw flagged rate.

Simulates deliveries with known truth (true defect rates 2–25 %, 500 apples each). For every
delivery the classifier's validated rates are re-drawn from a finite validation set, so the
interval has to carry validation uncertainty as well as the delivery's own noise. The classifier's
decisions are simulated from validation counts (true TPR/FPR below); pass `--rates metrics.json`
from `visionline eval` to use a real model's validated counts instead.

Prints the table and writes benchmarks/results/estimate.json (through `_record.write_result`):
MAE (pp) of the corrected estimate vs the raw flagged rate (the baseline), their ratio, and the
coverage of the 90 % interval (target 85–95 %).

    .venv/bin/python benchmarks/estimate.py [--deliveries 1000] [--rates reports/.../metrics.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _record import write_result

from visionline.evaluate import ValidatedRates, estimate_prevalence

APPLES = 500
CONFIDENCE = 0.90


def simulate(
    true_tpr: float, true_fpr: float, n_defect: int, n_good: int, deliveries: int, seed: int
) -> dict:
    """Run `deliveries` deliveries; each gets freshly drawn validation counts for that classifier."""
    rng = np.random.default_rng(seed)
    raw_err, cor_err, covered, widths, truths = [], [], 0, [], []
    start = time.perf_counter()
    for index in range(deliveries):
        truth_rate = rng.uniform(0.02, 0.25)
        bad = rng.binomial(APPLES, truth_rate)
        flagged = rng.binomial(bad, true_tpr) + rng.binomial(APPLES - bad, true_fpr)
        tp = int(rng.binomial(n_defect, true_tpr))
        fp = int(rng.binomial(n_good, true_fpr))
        if tp / n_defect <= fp / n_good:
            continue
        rates = ValidatedRates(tp=tp, n_defect=n_defect, fp=fp, n_good=n_good)
        found = estimate_prevalence(
            int(flagged), APPLES, rates, CONFIDENCE, seed=seed * 100_000 + index
        )
        truth = bad / APPLES
        truths.append(truth)
        raw_err.append(abs(found.raw_rate - truth))
        cor_err.append(abs(found.estimate - truth))
        covered += found.low <= truth <= found.high
        widths.append(found.high - found.low)
    seconds = time.perf_counter() - start
    n = len(cor_err)
    truths, raw, cor = np.asarray(truths), np.asarray(raw_err), np.asarray(cor_err)
    bands = {}
    for low, high in ((0.0, 0.05), (0.05, 0.15), (0.15, 1.0)):
        mask = (truths >= low) & (truths < high)
        bands[f"{low:.0%}-{high:.0%}"] = {
            "deliveries": int(mask.sum()),
            "mae_raw_pp": 100 * float(raw[mask].mean()),
            "mae_corrected_pp": 100 * float(cor[mask].mean()),
        }
    return {
        "true_tpr": true_tpr,
        "true_fpr": true_fpr,
        "validation_defect_images": n_defect,
        "validation_good_images": n_good,
        "deliveries": n,
        "mae_raw_pp": 100 * float(np.mean(raw_err)),
        "mae_corrected_pp": 100 * float(np.mean(cor_err)),
        "mae_ratio_raw_over_corrected": float(np.mean(raw_err) / np.mean(cor_err)),
        "coverage_90": covered / n,
        "mean_interval_width_pp": 100 * float(np.mean(widths)),
        "ms_per_delivery": 1000 * seconds / n,
        "by_true_rate": bands,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=1000)
    parser.add_argument("--rates", type=Path, help="metrics.json of a real `visionline eval` run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if args.rates:
        real = ValidatedRates.from_metrics(json.loads(args.rates.read_text()))
        scenarios = [("real model (from --rates)", real.tpr, real.fpr, real.n_defect, real.n_good)]
        source = f"validated counts of a real model from {args.rates}"
    else:
        scenarios = [
            ("typical: TPR 92%, FPR 1.5%, val 150 defect / 600 good", 0.92, 0.015, 150, 600),
            ("small validation: 50 defect / 200 good", 0.92, 0.015, 50, 200),
            ("weaker model: TPR 80%, FPR 5%, val 150 / 600", 0.80, 0.05, 150, 600),
            ("large validation: 500 defect / 2000 good", 0.92, 0.015, 500, 2000),
        ]
        source = (
            "simulated classifier decisions from validation counts (true TPR/FPR per scenario); "
            "not scores of a trained model"
        )
    results = []
    print(
        f"{'scenario':58} {'MAE raw':>8} {'MAE corr':>9} {'ratio':>6} {'cover90':>8} {'width':>6}"
    )
    for offset, (label, tpr, fpr, n_def, n_good) in enumerate(scenarios):
        row = {
            "scenario": label,
            **simulate(tpr, fpr, n_def, n_good, args.deliveries, args.seed + offset),
        }
        results.append(row)
        print(
            f"{label:58} {row['mae_raw_pp']:7.2f}pp {row['mae_corrected_pp']:8.2f}pp "
            f"{row['mae_ratio_raw_over_corrected']:5.1f}x {row['coverage_90']:7.1%} "
            f"{row['mean_interval_width_pp']:5.1f}pp"
        )
    for band, values in results[0]["by_true_rate"].items():
        print(
            f"  {results[0]['scenario'][:30]}, true rate {band:8}: MAE raw {values['mae_raw_pp']:.2f}pp, "
            f"corrected {values['mae_corrected_pp']:.2f}pp ({values['deliveries']} deliveries)"
        )
    headline = results[0]
    verdict = {
        "mae_corrected_le_1_5pp": headline["mae_corrected_pp"] <= 1.5,
        "raw_mae_larger": headline["mae_raw_pp"] > headline["mae_corrected_pp"],
        "coverage_in_85_95": 0.85 <= headline["coverage_90"] <= 0.95,
    }
    print(f"headline ({headline['scenario']}): {verdict}")
    result = {
        "benchmark": "estimate",
        "baseline": "raw flagged rate per delivery",
        "classifier": source,
        "apples_per_delivery": APPLES,
        "true_rate_range": [0.02, 0.25],
        "confidence": CONFIDENCE,
        "targets": {"mae_corrected_pp": 1.5, "coverage_90": [0.85, 0.95]},
        "headline": verdict,
        "scenarios": results,
        "readme": [
            {
                "benchmark": "estimate",
                "measure": f"per-delivery defect rate, {APPLES} apples, true rates 2–25%, "
                f"{headline['scenario']}" + ("" if args.rates else " (simulated classifier)"),
                "visionline": f"MAE {headline['mae_corrected_pp']:.2f} pp, 90% interval coverage "
                f"{headline['coverage_90']:.1%}",
                "peer": f"raw flag rate: MAE {headline['mae_raw_pp']:.2f} pp",
                "result": f"{headline['mae_ratio_raw_over_corrected']:.1f}x lower error (targets "
                f"≤ 1.5 pp {'✓' if verdict['mae_corrected_le_1_5pp'] else '✗'}, coverage 85–95% "
                f"{'✓' if verdict['coverage_in_85_95'] else '✗'})",
            }
        ],
    }
    print(f"wrote {write_result('estimate', result)}")


if __name__ == "__main__":
    main()
