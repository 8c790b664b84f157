"""The bootstrap behind every CI in the reports: scikit-learn's scores against ``metrics.ranking``'s on
the same resamples (same seed), timed in one run, with the largest difference between the two tables.

    .venv/bin/python bench/bootstrap.py [--n 182] [--n-boot 1000]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn import metrics as skm

from fracturelib.metrics import evaluate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=182, help="cases (182: the quick profile's FracAtlas test set)")
    ap.add_argument("--n-boot", type=int, default=1000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, args.n)
    p = np.clip(0.3 * y + 0.7 * rng.random(args.n), 0, 1)
    sk = lambda a, b: {"roc_auc": skm.roc_auc_score(a, b), "pr_auc": skm.average_precision_score(a, b)}  # noqa: E731
    t = time.perf_counter()
    ref = evaluate.with_ci(y, p, sk, args.n_boot, seed=1)
    t_sk = time.perf_counter() - t
    t = time.perf_counter()
    mine = evaluate.binary_report(y, p, 0.5, n_boot=args.n_boot, seed=1).loc[["roc_auc", "pr_auc"]]
    t_np = time.perf_counter() - t
    diff = float(np.abs(mine.to_numpy() - ref.to_numpy()).max())
    print(f"{args.n_boot} resamples of {args.n} cases: scikit-learn ROC-AUC + AP {t_sk:.2f} s; "
          f"binary_report (NumPy, all seven metrics) {t_np:.2f} s; ratio {t_sk / t_np:.0f}x; "
          f"largest difference in value/CI {diff:.1e}")


if __name__ == "__main__":
    main()
