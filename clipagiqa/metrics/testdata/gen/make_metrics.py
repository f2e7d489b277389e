#!/usr/bin/python3
"""Generate reference values for the metrics package tests.

Run from the repository root with Debian's interpreter:
    /usr/bin/python3 clipagiqa/metrics/testdata/gen/make_metrics.py
It writes clipagiqa/metrics/testdata/metrics_ref.json with the input vectors and
scipy's PLCC/SRCC/KRCC (tau-b)/RMSE and the 4-parameter logistic fit.
"""
import json
import os
import warnings

import numpy as np
import scipy
from scipy import optimize, stats


def logistic(x, b1, b2, b3, b4):
    return (b1 - b2) / (1.0 + np.exp(-(x - b3) / np.abs(b4))) + b2


def fit(pred, mos):
    p0 = [np.max(mos), np.min(mos), np.mean(pred), np.std(pred) / 4.0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        popt, _ = optimize.curve_fit(logistic, pred, mos, p0=p0, maxfev=100000)
    mapped = logistic(pred, *popt)
    return {
        "params": [float(v) for v in popt],
        "plcc": float(stats.pearsonr(mapped, mos)[0]),
        "rmse": float(np.sqrt(np.mean((mapped - mos) ** 2))),
        "sse": float(np.sum((mapped - mos) ** 2)),
    }


def case(name, pred, mos, with_logistic=True):
    pred = np.asarray(pred, dtype=np.float64)
    mos = np.asarray(mos, dtype=np.float64)
    out = {
        "name": name,
        "pred": pred.tolist(),
        "mos": mos.tolist(),
        "plcc": float(stats.pearsonr(pred, mos)[0]),
        "srcc": float(stats.spearmanr(pred, mos)[0]),
        "krcc": float(stats.kendalltau(pred, mos, variant="b")[0]),
        "rmse": float(np.sqrt(np.mean((pred - mos) ** 2))),
    }
    if with_logistic:
        out["logistic"] = fit(pred, mos)
    return out


def main():
    rng = np.random.default_rng(20240901)
    cases = []
    # Hand-sized vectors, with ties in both inputs.
    cases.append(case("n5", [1.0, 2.0, 3.0, 4.0, 5.0], [1.5, 1.9, 3.7, 3.1, 4.4], with_logistic=False))
    cases.append(case("n5_ties", [1.0, 2.0, 2.0, 3.0, 3.0], [2.0, 1.0, 2.0, 3.0, 3.0], with_logistic=False))
    cases.append(case("n8_ties_negative", [3, 1, 4, 1, 5, 9, 2, 6], [5, 3, 5, 8, 9, 7, 9, 3], with_logistic=False))

    # n=100: MOS in [0, 5] is a logistic function of the prediction plus noise.
    pred = rng.uniform(-3.0, 3.0, 100)
    mos = 5.0 / (1.0 + np.exp(-1.5 * pred)) + rng.normal(0.0, 0.25, 100)
    cases.append(case("n100_sigmoid", pred, mos))

    # n=100 where the best logistic degenerates towards a straight line
    # (parameters drift far away); PLCC must still be finite and close.
    mos = rng.uniform(0.0, 5.0, 100)
    pred = np.tanh((mos - 2.5) / 1.5) + rng.normal(0.0, 0.15, 100)
    cases.append(case("n100_nearlinear", pred, mos))

    # n=200 with a purely linear relation: the least-squares logistic drifts
    # towards a straight line (b3, |b4| large), a flat valley for any fitter.
    mos = rng.uniform(0.0, 5.0, 200)
    pred = mos + rng.normal(0.0, 0.6, 200)
    cases.append(case("n200_linear", pred, mos))

    # n=100 with heavy ties: scores rounded to a coarse grid.
    mos = np.round(rng.uniform(0.0, 5.0, 100) * 2) / 2
    pred = np.round((mos + rng.normal(0.0, 0.8, 100)) * 2) / 2
    cases.append(case("n100_ties", pred, mos))

    # n=1000 on a 0..100 MOS scale (AIGCIQA2023-like) with predictions in [0, 1].
    pred = rng.uniform(0.0, 1.0, 1000)
    mos = 20.0 + 60.0 / (1.0 + np.exp(-(pred - 0.5) / 0.12)) + rng.normal(0.0, 6.0, 1000)
    cases.append(case("n1000_scale100", pred, mos))

    # n=1000, negatively related, so the fit needs b1 < b2.
    pred = rng.normal(0.0, 2.0, 1000)
    mos = 5.0 - 5.0 / (1.0 + np.exp(-pred)) + rng.normal(0.0, 0.3, 1000)
    cases.append(case("n1000_negative", pred, mos))

    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "..", "metrics_ref.json")
    with open(path, "w") as f:
        json.dump({"scipy": scipy.__version__, "numpy": np.__version__, "cases": cases}, f)
        f.write("\n")


if __name__ == "__main__":
    main()
