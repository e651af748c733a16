"""Benchmark: sparse SOS relaxations (correlative, correlative + term) against the dense one.

Unconstrained problems with known minima, n = 10 ... 200: generalised Rosenbrock (min 1), Broyden
tridiagonal (min 0), chained Wood (written 1 + ..., min 1), chained singular (min 0). For each, the
lower bound max t s.t. f - t is SOS (order 2) with correlative sparsity ("cs") and with correlative +
term sparsity ("cs+ts"), its error against the known minimum, the wall time from building the
program to the solution, and the dense relaxation's (over the Newton basis) while it still runs
within its budget. The growth exponent is the log-log least-squares slope of time against n.
"proven" is a rigorous lower bound (exact rational arithmetic on the float SOS solution, see
``poly/proven.py``), correlative sparsity; a float bound marked "*" came with an inaccurate solver
status (and may then lie above the true minimum by about the solver tolerance).

Usage: python bench/sparse.py [--quick] [--dense-budget S]
Last two lines: ``rosenbrock_n100_bound_error: <|bound - 1|>`` and ``rosenbrock_n100_seconds: <s>``
(correlative + term sparsity, the combined pattern).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sdpr_loc.poly import Indeterminate, Polynomial, Program, proven_lower_bound  # noqa: E402

TOL = dict(tol_gap_abs=1e-9, tol_gap_rel=1e-9, tol_feas=1e-9, max_iter=200)


def rosenbrock(x):
    f = Polynomial(1)
    for i in range(1, len(x)):
        f = f + 100 * (x[i] - x[i - 1] ** 2) ** 2 + (1 - x[i]) ** 2
    return f


def broyden_tridiagonal(x):
    n, f = len(x), Polynomial(0)
    for i in range(n):
        r = (3 - 2 * x[i]) * x[i] + 1
        if i > 0:
            r = r - x[i - 1]
        if i < n - 1:
            r = r - 2 * x[i + 1]
        f = f + r ** 2
    return f


def chained_wood(x):
    f = Polynomial(1)
    for i in range(0, len(x) - 3, 2):
        a, b, c, d = x[i:i + 4]
        f = f + (100 * (b - a ** 2) ** 2 + (1 - a) ** 2 + 90 * (d - c ** 2) ** 2 + (1 - c) ** 2
                 + 10 * (b + d - 2) ** 2 + Polynomial(1) / 10 * (b - d) ** 2)
    return f


def chained_singular(x):
    f = Polynomial(0)
    for i in range(0, len(x) - 3, 2):
        a, b, c, d = x[i:i + 4]
        f = f + (a + 10 * b) ** 2 + 5 * (c - d) ** 2 + (b - 2 * c) ** 4 + 10 * (a - 10 * d) ** 4
    return f


PROBLEMS = {"rosenbrock": (rosenbrock, 1.0), "broyden_tridiagonal": (broyden_tridiagonal, 0.0),
            "chained_wood": (chained_wood, 1.0), "chained_singular": (chained_singular, 0.0)}


def lower_bound(f, sparsity: str, time_limit: float = math.inf):
    """(bound, seconds, largest block) of max t s.t. f - t SOS, from an empty program to the solution."""
    t0 = time.perf_counter()
    prog = Program()
    t = prog.new_continuous_variables(1, "t")[0]
    grams = prog.add_sos_constraint(f - t, sparsity=sparsity)
    prog.add_linear_cost(-t)
    res = prog.solve(**TOL, time_limit=time_limit)
    secs = time.perf_counter() - t0
    sizes = [g.size for g in (grams if isinstance(grams, list) else [grams])]
    if res.status not in ("optimal", "optimal_inaccurate"):
        return math.nan, secs, max(sizes), res.status
    return res.value(t), secs, max(sizes), res.status


def slope(ns, ts) -> float:
    return float(np.polyfit(np.log(ns), np.log(ts), 1)[0])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="n = 10, 20, 50, 100 only")
    ap.add_argument("--dense-budget", type=float, default=60.0,
                    help="Clarabel time limit for a dense solve; larger n is not attempted once one fails")
    ap.add_argument("--dense-kkt", type=float, default=5e7,
                    help="skip the dense solve when its PSD block alone puts more nonzeros than this into "
                         "Clarabel's KKT matrix (n = 20: ~3.6e8, ~4 GB; the process was killed for memory)")
    args = ap.parse_args(argv)
    sizes = [10, 20, 50, 100] + ([] if args.quick else [200])
    lower_bound(rosenbrock([Indeterminate(f"w{i}") for i in range(4)]), "correlative")  # warm-up
    print(f"{'problem':<20}{'n':>5}  {'cs bound':>12}{'err':>9}{'s':>7}{'blk':>4}  {'cs+ts bound':>12}{'err':>9}"
          f"{'s':>7}{'blk':>4}  {'proven':>13}  {'dense bound':>12}{'s':>8}{'gram':>6}")
    headline = {}
    for name, (make, fmin) in PROBLEMS.items():
        times = {"cs": [], "cs+ts": []}
        dense_alive = True
        for n in sizes:
            f = make([Indeterminate(f"x{i}") for i in range(n)])
            row = f"{name:<20}{n:>5}  "
            for key, sparsity in (("cs", "correlative"), ("cs+ts", "combined")):
                b, s, blk, status = lower_bound(f, sparsity)
                times[key].append(s)
                flag = "" if status == "optimal" else "*"
                row += f"{b:>12.7f}{flag:1}{abs(b - fmin):>8.1e}{s:>7.2f}{blk:>4}  "
                if name == "rosenbrock" and n == 100 and key == "cs+ts":
                    headline = dict(error=abs(b - fmin), seconds=s)
            k = math.comb(n + 2, 2)  # dense Gram size (all monomials of degree <= 2)
            kkt = (k * (k + 1) // 2) ** 2 // 2  # the PSD block's dense Hessian in Clarabel's KKT system
            pb = proven_lower_bound(f, "correlative", **TOL)
            row += f"{pb.value:>13.7f}  " if pb.proven else f"{'(not proven)':>13}  "
            if dense_alive and kkt > args.dense_kkt:
                dense_alive = False
                row += f"{f'fails: KKT ~{kkt:.1e} nnz':>26}"
            elif dense_alive:
                b, s, blk, status = lower_bound(f, "dense", args.dense_budget)
                if math.isnan(b):
                    dense_alive = False
                    row += f"{'failed: ' + status:>26}"
                else:
                    row += f"{b:>12.7f}{s:>8.2f}{blk:>6}"
            else:
                row += f"{'(not attempted)':>26}"
            print(row, flush=True)
        print(f"{name:<20} time growth exponent (log-log slope, n = {sizes[0]}..{sizes[-1]}): "
              f"cs {slope(sizes, times['cs']):.2f}, cs+ts {slope(sizes, times['cs+ts']):.2f}", flush=True)
    print(f"rosenbrock_n100_bound_error: {headline['error']:.3e}")
    print(f"rosenbrock_n100_seconds: {headline['seconds']:.3f}")


if __name__ == "__main__":
    main()
