"""Benchmark: build + solve time of SOS programs, sdpr_loc.poly vs pydrake, both with Clarabel.

Problems: the three Drake tutorial examples, then random dense SOS problems of growing size
(max g s.t. p - g is SOS, p = z^T R z with R random positive definite), up to a few hundred
monomials in p. Both sides get the same polynomial data, the same Clarabel tolerances, and are timed
from "new program" to "solution available" (median of repeats, after a warm-up). Optimal values are
compared so a fast wrong answer cannot win.

pydrake (pip package ``drake``) is optional. Without it the peer is a hand-written cvxpy Gram
formulation over the full monomial basis (no Newton polytope), which is what one writes without this
module; the last line then still reads ``time_ratio_vs_drake`` but says which peer it is.

Usage: python bench/sos.py [--quick] [--peer] [--no-drake]
    --peer: also time the cvxpy peer next to drake; --no-drake: behave as if drake were missing.
The conic problem goes to Clarabel directly (no modelling layer), so the tutorial examples (Gram 3x3
to 6x6) cost ~1-5 ms, most of it Python-side assembly and the Newton polytope; Drake's C++ front end
still wins those by a few x, while the larger ones are won by the sparse coefficient matching.
The median over the larger problems (Gram size >= 20) is printed on the line before the headline.
Last line: ``time_ratio_vs_drake: <median ours / peer over ALL problems>`` (< 1 means faster).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sdpr_loc.poly import Polynomial, Program  # noqa: E402
from sdpr_loc.poly.polynomial import exponents_up_to  # noqa: E402

TOL = dict(tol_gap_abs=1e-8, tol_gap_rel=1e-8, tol_feas=1e-8, max_iter=200)
BIG = 20  # "larger problems": Gram matrices of at least this size (the target applies there)

try:
    import pydrake.symbolic as sym
    from pydrake.solvers import ClarabelSolver, MathematicalProgram, SolverOptions

    HAVE_DRAKE = ClarabelSolver().available()
except ImportError:  # optional dependency
    HAVE_DRAKE = False


# ------------------------------------------------------------------------------------ problems

def random_dense(n: int, degree: int, seed: int = 0):
    """Exponents (t, n) and coefficients of p = z^T R z, z all monomials of degree <= degree/2."""
    rng = np.random.default_rng(seed)
    B = exponents_up_to(n, degree // 2)
    k = len(B)
    A = rng.standard_normal((k, k))
    R = A @ A.T / k + 0.1 * np.eye(k)
    coef: dict[tuple, float] = {}
    iu, ju = np.triu_indices(k)
    for i, j in zip(iu.tolist(), ju.tolist()):
        key = tuple((B[i] + B[j]).tolist())
        coef[key] = coef.get(key, 0.0) + (R[i, j] if i == j else 2 * R[i, j])
    return np.array(list(coef.keys()), dtype=np.int64), np.array(list(coef.values()))


def ours_tutorial(which: int):
    prog = Program()
    if which == 1:
        a = prog.new_continuous_variables(2)
        x = prog.new_indeterminates(1)
        prog.add_sos_constraint(x[0] ** 4 + a[0] * x[0] + 2 + a[1])
        prog.add_sos_constraint((a[0] - a[1] + 1) * x[0] ** 2 + a[1] * x[0] + 1)
        prog.add_linear_cost(-a[0] - a[1])
    elif which == 2:
        x = prog.new_indeterminates(1)[0]
        a, b, c = prog.new_continuous_variables(3, ["a", "b", "c"])
        t, _ = prog.new_sos_polynomial([x], 2)
        prog.add_sos_constraint(x ** 4 + a * x ** 3 + b * x ** 2 + c * x + 1 - x * (1 - x) * t)
        prog.add_linear_cost(a + b + c)
    else:
        x1, x2 = prog.new_indeterminates(2)
        prog.add_sos_constraint(2 * x1 ** 4 + 5 * x2 ** 4 - x1 ** 2 * x2 ** 2 + 2 * x1 ** 3 * x2 + 2 * x1 + 2)
    res = prog.solve(**TOL)
    return res.optimal_cost, res.status, res.iterations, max(g.size for g in prog.grams)


def drake_tutorial(which: int):
    prog = MathematicalProgram()
    if which == 1:
        a = prog.NewContinuousVariables(2, "a")
        x = prog.NewIndeterminates(1, "x")
        prog.AddSosConstraint(sym.Polynomial(x[0] ** 4 + a[0] * x[0] + 2 + a[1], sym.Variables(x)))
        prog.AddSosConstraint(sym.Polynomial((a[0] - a[1] + 1) * x[0] ** 2 + a[1] * x[0] + 1, sym.Variables(x)))
        prog.AddLinearCost(-a[0] - a[1])
    elif which == 2:
        x = prog.NewIndeterminates(1, "x")
        a, b, c = prog.NewContinuousVariables(3, "abc")
        p = sym.Polynomial(x[0] ** 4 + a * x[0] ** 3 + b * x[0] ** 2 + c * x[0] + 1, sym.Variables(x))
        t, _ = prog.NewSosPolynomial(sym.Variables(x), 2)
        prog.AddSosConstraint(p - sym.Polynomial(x[0] * (1 - x[0]), sym.Variables(x)) * t)
        prog.AddLinearCost(a + b + c)
    else:
        x = prog.NewIndeterminates(2, "x")
        prog.AddSosConstraint(sym.Polynomial(2 * x[0] ** 4 + 5 * x[1] ** 4 - x[0] ** 2 * x[1] ** 2
                                             + 2 * x[0] ** 3 * x[1] + 2 * x[0] + 2, sym.Variables(x)))
    return _drake_solve(prog)


def _drake_solve(prog):
    opts = SolverOptions()
    for k, v in TOL.items():
        opts.SetOption(ClarabelSolver.id(), k, v)
    r = ClarabelSolver().Solve(prog, None, opts)
    cost = r.get_optimal_cost() if r.is_success() else float("nan")
    return cost, str(r.get_solution_result()), r.get_solver_details().iterations, None


def ours_random(E, c, n):
    prog = Program()
    x = prog.new_indeterminates(n)
    g = prog.new_continuous_variables(1, "g")[0]
    p = Polynomial.from_arrays(E, c, list(x))
    gram = prog.add_sos_constraint(p - g)
    prog.add_linear_cost(-g)
    res = prog.solve(**TOL)
    return res.optimal_cost, res.status, res.iterations, gram.size


def drake_random(E, c, n):
    prog = MathematicalProgram()
    x = list(prog.NewIndeterminates(n, "x"))
    g = prog.NewContinuousVariables(1, "g")[0]
    terms = {sym.Monomial({x[i]: int(e) for i, e in enumerate(row) if e}): float(ci) for row, ci in zip(E.tolist(), c)}
    prog.AddSosConstraint(sym.Polynomial(terms) - g)
    prog.AddLinearCost(-g)
    return _drake_solve(prog)


def cvxpy_full_basis_random(E, c, n):
    """The peer without drake: Gram matrix over all monomials of degree <= d/2, one constraint per
    monomial written entry by entry, as a hand-written cvxpy model would."""
    import cvxpy as cp

    B = exponents_up_to(n, int(E.sum(1).max()) // 2)
    k = len(B)
    Q = cp.Variable((k, k), PSD=True)
    g = cp.Variable()
    target = {tuple(e): v for e, v in zip(E.tolist(), c)}
    target[(0,) * n] = target.get((0,) * n, 0.0)
    pairs: dict[tuple, list] = {}
    for i in range(k):
        for j in range(k):
            pairs.setdefault(tuple((B[i] + B[j]).tolist()), []).append((i, j))
    cons = []
    for m, ij in pairs.items():
        rhs = target.get(m, 0.0) - (g if m == (0,) * n else 0.0)
        cons.append(sum(Q[i, j] for i, j in ij) == rhs)
    prob = cp.Problem(cp.Maximize(g), cons)
    prob.solve(solver=cp.CLARABEL, **TOL)
    return -prob.value, prob.status, prob.solver_stats.num_iters, k


# ------------------------------------------------------------------------------------ timing

def timed(fns, args=(), budget: float = 3.0, max_reps: int = 5):
    """Median wall time of each fn(*args), runs interleaved (a, b, a, b, ...) so that load from other
    processes hits both sides alike; fewer repeats for slow problems. Returns [(median, last output)]."""
    times = [[] for _ in fns]
    outs = [None] * len(fns)
    for _ in range(max_reps):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            outs[i] = fn(*args)
            times[i].append(time.perf_counter() - t0)
        if sum(map(sum, times)) > budget:
            break
    return [(statistics.median(t), o) for t, o in zip(times, outs)]


def main(argv=None) -> float:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small problems only")
    ap.add_argument("--peer", action="store_true", help="also time the hand-written cvxpy peer")
    ap.add_argument("--no-drake", action="store_true", help="ignore pydrake even if installed")
    args = ap.parse_args(argv)
    global HAVE_DRAKE
    HAVE_DRAKE = HAVE_DRAKE and not args.no_drake

    peer_name = "drake" if HAVE_DRAKE else "cvxpy-full-basis"
    sizes = [(2, 6), (2, 10), (3, 6), (6, 4), (2, 14), (3, 8), (4, 6)]
    sizes += [] if args.quick else [(3, 10), (5, 6), (4, 8)]
    problems = [(f"drake_ex{i}", "tutorial", i) for i in (1, 2, 3)]
    problems += [(f"rand_n{n}_d{d}", "random", (n, d)) for n, d in sizes]

    # warm-up: imports, cvxpy / Clarabel first-call costs on both sides
    ours_tutorial(1)
    if HAVE_DRAKE:
        drake_tutorial(1)

    print(f"peer: {peer_name}" + ("" if HAVE_DRAKE else "  (pydrake not installed: pip install drake)"))
    print(f"Clarabel settings on both sides: {TOL}")
    hdr = (f"{'problem':<14}{'#mono':>6}{'gram':>6}  {'ours ms':>9}{'it':>4}  {'peer ms':>9}{'it':>4}"
           f"{'|dcost|':>10}{'ratio':>8}")
    if args.peer and HAVE_DRAKE:
        hdr += f"  {'cvxpy-full ms':>13}"
    print(hdr)
    ratios, big = [], []
    for name, kind, arg in problems:
        if kind == "tutorial":
            nmono, k = "-", None
            fns, args_ = [ours_tutorial] + ([drake_tutorial] if HAVE_DRAKE else []), (arg,)
        else:
            n, d = arg
            E, c = random_dense(n, d)
            nmono = len(c)
            fns = [ours_random, drake_random if HAVE_DRAKE else cvxpy_full_basis_random]
            if args.peer and HAVE_DRAKE:
                fns.append(cvxpy_full_basis_random)
            args_ = (E, c, n)
        # up to 25 repeats within the time budget: on a shared machine a single scheduling hiccup must not
        # become the median of a millisecond problem; the slow problems stop after one or two
        res = timed(fns, args_, budget=3.0 if kind == "tutorial" else 8.0, max_reps=25)
        t_o, (c_o, _, it_o, k) = res[0]
        if len(res) == 1:
            print(f"{name:<14}{nmono:>6}{k:>6}  {1e3 * t_o:>9.1f}{it_o:>4}  {'-':>9}{'':>4}{'':>10}{'':>8}")
            continue
        t_p, (c_p, _, it_p, _) = res[1]
        ratio = t_o / t_p
        ratios.append(ratio)
        if k >= BIG:
            big.append(ratio)
        dcost = abs(c_o - c_p)
        line = (f"{name:<14}{nmono:>6}{k:>6}  {1e3 * t_o:>9.1f}{it_o:>4}  {1e3 * t_p:>9.1f}{it_p:>4}"
                f"{dcost:>10.1e}{ratio:>8.2f}")
        if len(res) > 2:
            line += f"  {1e3 * res[2][0]:>13.1f}"
        print(line, flush=True)
        if not dcost <= 1e-5 * (1 + abs(c_p)):
            print(f"  WARNING: optimal values differ ({c_o} vs {c_p})")
    med_all = statistics.median(ratios)
    print(f"median ratio, all {len(ratios)} compared problems: {med_all:.3f}")
    med_big = statistics.median(big) if big else med_all
    print(f"median ratio, larger problems (Gram size >= {BIG}, {len(big)} problems): {med_big:.3f}")
    suffix = "" if HAVE_DRAKE else f"  # peer={peer_name} (pydrake not installed)"
    print(f"time_ratio_vs_drake: {med_all:.3f}{suffix}")
    return med_all


if __name__ == "__main__":
    main()
