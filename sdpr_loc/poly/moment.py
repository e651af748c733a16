"""Lasserre's moment hierarchy for  min f(x)  s.t.  g_i(x) >= 0,  h_j(x) = 0.

At order d the unknowns are moments y_a = E[x^a], |a| <= 2d, of a measure on the feasible set:
y_0 = 1, the moment matrix M_d(y) and the localizing matrices M_{d - ceil(deg g_i / 2)}(g_i y) are PSD,
and L_y(h_j x^b) = 0 for |b| <= 2d - deg h_j. The optimum L_y(f) is a lower bound on min f; when the
moment matrix is flat (rank M_s = rank M_{s - dv}, Curto-Fialkow), the bound is exact and the
global minimisers are read off the moment matrix (Henrion & Lasserre, 2005). Order 1 with quadratic f
and h_j is the Shor relaxation of a QCQP: ``to_qcqp`` hands such problems to the certify layer.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .newton import row_keys
from .polynomial import CONST, Indeterminate, Monomial, Polynomial, as_polynomial, exponents_up_to
from .relaxation import SPARSITY, MomentSDP, relaxation_plan


def _numeric(p, what: str) -> Polynomial:
    try:
        p = as_polynomial(p)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None
    if p.has_decision_variables():
        raise ValueError(f"{what} must have numeric coefficients (no decision variables), got {p}")
    return p


def _terms(p: Polynomial, xs: list[Indeterminate]) -> tuple[np.ndarray, np.ndarray]:
    E, c, _ = p.to_arrays(xs)
    return E, c


@dataclass
class MomentResult:
    """Solution of one relaxation order.

    Attributes:
        status: "optimal", "optimal_inaccurate", "infeasible", "unbounded", ... (cvxpy's names).
        order: relaxation order d.
        lower_bound: optimal value of the relaxation: a lower bound on min f (+inf if the relaxation is
            infeasible, which proves the problem infeasible; -inf if unbounded).
        moment_matrix: M_d(y) (k, k) over ``basis``.
        basis: monomials of degree <= d indexing the moment matrix (graded order).
        ranks: numerical rank of M_s for s = 0..d.
        flat: the rank condition rank M_s = rank M_{s - dv} holds for some dv <= s <= d.
        flat_order: that s (None if not flat).
        minimizers: (r, n) extracted global minimisers (empty when not flat or extraction failed).
        certified: flat, and every extracted point is feasible and attains ``lower_bound``: the bound is
            the global minimum and ``minimizers`` are global minimisers.
        reason: why not certified ("" when certified).
        sparsity, cliques, block_sizes: the pattern used (cliques of indeterminates; PSD block sizes).
            With sparsity, ``moment_matrix`` is None and ``moments`` lists only the moments that occur.
    """

    status: str
    order: int
    lower_bound: float
    indeterminates: list[Indeterminate]
    moment_matrix: np.ndarray | None = field(default=None, repr=False)
    basis: list[Monomial] = field(default_factory=list, repr=False)
    moments: np.ndarray | None = field(default=None, repr=False)
    moment_exponents: np.ndarray | None = field(default=None, repr=False)
    ranks: list[int] = field(default_factory=list)
    flat: bool = False
    flat_order: int | None = None
    minimizers: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    certified: bool = False
    reason: str = ""
    build_time: float = 0.0
    solve_time: float = 0.0
    sparsity: str = "dense"
    cliques: list = field(default_factory=list, repr=False)
    block_sizes: list = field(default_factory=list, repr=False)

    def moment(self, monomial) -> float:
        """y_a for a monomial of degree <= 2d."""
        from .polynomial import as_monomial

        m = as_monomial(monomial)
        e = np.array(m.exponents(self.indeterminates), dtype=np.int64)
        hit = np.flatnonzero((self.moment_exponents == e).all(1))
        if not len(hit):
            raise ValueError(f"moment of {m} is not part of an order-{self.order} relaxation")
        return float(self.moments[hit[0]])


class MomentProblem:
    """min f(x) s.t. g_i(x) >= 0 and h_j(x) = 0, with polynomial data over indeterminates x.

    Args:
        objective: f (numeric coefficients).
        inequalities: g_i, meaning g_i(x) >= 0.
        equalities: h_j, meaning h_j(x) = 0.
        indeterminates: order of x (default: all indeterminates of the data, in creation order).
    """

    def __init__(self, objective, inequalities: Sequence = (), equalities: Sequence = (),
                 indeterminates: Sequence[Indeterminate] | None = None):
        self.f = _numeric(objective, "objective")
        self.g = [_numeric(g, f"inequality {i}") for i, g in enumerate(inequalities)]
        self.h = [_numeric(h, f"equality {j}") for j, h in enumerate(equalities)]
        found = {x.uid for p in [self.f, *self.g, *self.h] for x in p.indeterminates()}
        if indeterminates is None:
            self.x = [Indeterminate(_uid=u) for u in sorted(found)]
        else:
            self.x = list(np.asarray(indeterminates, dtype=object).reshape(-1))
            if not all(isinstance(x, Indeterminate) for x in self.x):
                raise ValueError("indeterminates must be Indeterminate objects")
            if len({x.uid for x in self.x}) != len(self.x):
                raise ValueError("indeterminates must be distinct")
            extra = found - {x.uid for x in self.x}
            if extra:
                raise ValueError(f"the problem uses indeterminates {sorted(Indeterminate(_uid=u).name for u in extra)} "
                                 "not in the given list")
        if not self.x:
            raise ValueError("the problem has no indeterminates")
        for i, g in enumerate(self.g):
            if g.is_zero():
                raise ValueError(f"inequality {i} is the zero polynomial")

    @property
    def n(self) -> int:
        return len(self.x)

    @property
    def dv(self) -> int:
        """Degree shift of the flatness test: max(1, ceil(deg g_i / 2), ceil(deg h_j / 2))."""
        return max([1] + [math.ceil(p.degree() / 2) for p in self.g + self.h])

    @property
    def min_order(self) -> int:
        return max([1, math.ceil(self.f.degree() / 2)] + [math.ceil(p.degree() / 2) for p in self.g + self.h])

    # ------------------------------------------------------------------ relaxation
    def solve(self, order: int | None = None, solver: str = "clarabel", rank_tol: float = 1e-5,
              feas_tol: float = 1e-5, refine: bool = True, verbose: bool = False, sparsity: str = "dense",
              term_steps: int = 1, extension: str = "block", **options) -> MomentResult:
        """Solve the order-``order`` relaxation (default: the smallest valid one), test flatness and
        extract minimisers.

        rank_tol: eigenvalues below rank_tol * largest count as zero in the rank test.
        feas_tol: tolerance (relative) for extracted points to count as feasible and optimal.
        refine: polish extracted points with a local solver before checking them.
        sparsity: "dense" (one moment matrix over all monomials), "correlative" (one per clique of
            the chordal interaction graph), "term" (TSSOS blocks), "combined" (term sparsity inside each
            clique); see ``sparsity.py``. term_steps: term-sparsity iterations (stops early once the
            blocks stabilise); extension: "block" (connected components, TSSOS default) or "chordal"
            closure of the term graph.
        Moment SDPs are degenerate at the optimum (many optimal moment vectors), so Clarabel often
        stops at "optimal_inaccurate"; the result is still analysed and certified by checking the
        extracted points against the bound, not by trusting the status.
        """
        d = self.min_order if order is None else order
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < self.min_order:
            raise ValueError(f"relaxation order must be an integer >= {self.min_order} for this problem, got {order!r}")
        if sparsity not in SPARSITY:
            raise ValueError(f"sparsity must be one of {SPARSITY}, got {sparsity!r}")
        if isinstance(term_steps, bool) or not isinstance(term_steps, (int, np.integer)) or term_steps < 1:
            raise ValueError(f"term_steps must be an integer >= 1, got {term_steps!r}")
        d = int(d)
        t0 = time.perf_counter()
        plan = relaxation_plan(self, d, sparsity, int(term_steps), extension)
        sdp = MomentSDP(self, plan)
        t1 = time.perf_counter()
        if sparsity == "dense":
            sol = sdp.problem.solve(solver, verbose, **options)
        else:  # the SOS side, moments from its equality multipliers (see MomentSDP.sos_problem)
            sol = sdp.sos_problem().solve(solver, verbose, **options)
            if sol.x is not None:
                if sol.zero_duals is None or not abs(sol.zero_duals[0]) > 0:
                    sol.status, sol.x = "solver_error", None
                    sol.message = "no moments in the solver's multipliers"
                else:  # the bound is the SOS side's t; the moments come along
                    sol.x, sol.value = sol.zero_duals / sol.zero_duals[0], -sol.value
            else:  # the SOS side is the dual: its infeasibility means an unbounded moment problem
                sol.value = {math.inf: -math.inf, -math.inf: math.inf}.get(sol.value, sol.value)
                sol.status = {"infeasible": "unbounded", "unbounded": "infeasible"}.get(sol.status, sol.status)
        t2 = time.perf_counter()
        n = self.n
        uids = [x.uid for x in self.x]
        res = MomentResult(status=sol.status, order=d, lower_bound=math.nan, indeterminates=self.x,
                           minimizers=np.zeros((0, n)), build_time=t1 - t0, solve_time=t2 - t1,
                           sparsity=sparsity, cliques=[[self.x[i] for i in c] for c in plan.cliques],
                           block_sizes=[len(b) for b, _, _ in plan.psd])
        if sol.status == "solver_error":
            res.status = f"solver_error: {sol.message}"
        if sol.x is None:
            res.lower_bound = sol.value
            res.reason = f"relaxation status {res.status}"
            return res
        yv = sol.x
        res.lower_bound = float(sdp.problem.c @ yv) if sparsity == "dense" else float(sol.value)
        if sparsity == "dense":
            Y = exponents_up_to(n, 2 * d)  # all moments, graded: Y[0] = 0
            basis_exps = exponents_up_to(n, d)
            res.basis = [Monomial(zip(uids, r)) for r in basis_exps.tolist()]
            res.moment_exponents, res.moments = Y, yv[sdp.columns(Y)]
            res.moment_matrix = sdp.matrix(yv, basis_exps)
            self._analyse(res, rank_tol, feas_tol, refine)
        else:
            res.moment_exponents, res.moments = sdp.exponents, yv
            self._analyse_sparse(res, sdp, yv, plan, rank_tol, feas_tol, refine)
        return res

    # ------------------------------------------------------------------ flatness and extraction
    def _refine(self, x0: np.ndarray, feas_tol: float = 1e-5) -> np.ndarray:
        """Polish an extracted atom by SLSQP on the original problem; extraction is only as accurate
        as the moment matrix (~sqrt of the solver tolerance). Keeps x0 unless the polished point is
        feasible, no worse, and close by."""
        from scipy.optimize import minimize

        xs = self.x
        grad = [self.f.differentiate(xi) for xi in xs]
        cons = [{"type": "ineq", "fun": (lambda z, g=g: g.evaluate(z, xs))} for g in self.g]
        cons += [{"type": "eq", "fun": (lambda z, h=h: h.evaluate(z, xs))} for h in self.h]

        def viol(z):
            return max([0.0] + [-g.evaluate(z, xs) for g in self.g] + [abs(h.evaluate(z, xs)) for h in self.h])

        try:
            r = minimize(lambda z: self.f.evaluate(z, xs), x0,
                         jac=lambda z: np.array([gi.evaluate(z, xs) for gi in grad]),
                         constraints=cons, method="SLSQP", options=dict(ftol=1e-14, maxiter=200))
        except (ValueError, np.linalg.LinAlgError):
            return x0
        z = np.asarray(r.x, dtype=np.float64)
        close = np.abs(z - x0).max() <= 1e-2 * (1.0 + np.abs(x0).max())
        ok = np.isfinite(z).all() and close and viol(z) <= max(viol(x0), 0.01 * feas_tol)
        return z if ok and self.f.evaluate(z, xs) <= self.f.evaluate(x0, xs) + 1e-12 else x0

    def _analyse(self, res: MomentResult, rank_tol: float, feas_tol: float, refine: bool = True) -> None:
        n, d, M = self.n, res.order, res.moment_matrix
        sizes = [math.comb(n + s, s) for s in range(d + 1)]

        def rank(A):
            ev = np.linalg.eigvalsh(A)
            return int((ev > rank_tol * max(ev[-1], 1e-300)).sum())

        res.ranks = [rank(M[:sz, :sz]) for sz in sizes]
        dv = self.dv
        for s in range(d, dv - 1, -1):
            if res.ranks[s] == res.ranks[s - dv]:
                res.flat, res.flat_order = True, s
                break
        if not res.flat:
            res.reason = (f"rank condition fails: ranks of M_0..M_{d} are {res.ranks} (dv = {dv}); "
                          "try a higher order")
            return
        s = res.flat_order
        r = res.ranks[s]
        try:
            pts = extract_minimizers(M[:sizes[s], :sizes[s]], exponents_up_to(n, s), r, rank_tol)
        except ValueError as exc:
            res.reason = f"flat at order {s} but extraction failed: {exc}"
            return
        if refine:
            pts = np.array([self._refine(x, feas_tol) for x in pts])
        res.minimizers = pts
        scale = 1.0 + abs(res.lower_bound)
        for x in pts:
            fx = self.f.evaluate(x, self.x)
            viol = max([0.0] + [-g.evaluate(x, self.x) for g in self.g] + [abs(h.evaluate(x, self.x)) for h in self.h])
            if viol > feas_tol * (1 + np.abs(x).max()):
                res.reason = f"extracted point {x} violates the constraints by {viol:.2e}"
                return
            if abs(fx - res.lower_bound) > feas_tol * scale:
                res.reason = f"extracted point {x} has f = {fx:.8g}, not the bound {res.lower_bound:.8g}"
                return
        res.certified = True

    def _analyse_sparse(self, res: MomentResult, sdp, y: np.ndarray, plan, rank_tol: float, feas_tol: float,
                        refine: bool) -> None:
        """Minimisers from a sparse relaxation: atoms of each clique's flat moment matrix, glued along
        the running-intersection order; without full clique matrices (term sparsity), the first-order
        moments. Certified when the point is feasible and attains the bound."""
        n, d, dv = self.n, res.order, self.dv
        x = np.full(n, np.nan)
        why = ""
        for l, c in enumerate(plan.cliques):
            idx = plan.full[l]
            if idx is None:
                why = why or f"clique {l} has term-sparse blocks (no full moment matrix)"
                break
            B = plan.psd[idx][0]
            M = sdp.matrix(y, B)
            sizes = [math.comb(len(c) + s, s) for s in range(d + 1)]
            ev_max = max(np.linalg.eigvalsh(M)[-1], 1e-300)
            ranks = [int((np.linalg.eigvalsh(M[:sz, :sz]) > rank_tol * ev_max).sum()) for sz in sizes]
            flat = next((s for s in range(d, dv - 1, -1) if ranks[s] == ranks[s - dv]), None)
            if flat is None:
                why = why or f"clique {l}: rank condition fails (ranks {ranks})"
                break
            try:
                atoms = extract_minimizers(M[:sizes[flat], :sizes[flat]], exponents_up_to(len(c), flat),
                                           ranks[flat], rank_tol)
            except ValueError as exc:
                why = why or f"clique {l}: extraction failed: {exc}"
                break
            known = ~np.isnan(x[c])
            pick = atoms[np.argmin(np.abs(atoms[:, known] - x[c][known]).sum(1))] if known.any() else atoms[0]
            x[c] = np.where(known, x[c], pick)
        if np.isnan(x).any():  # fall back to the first-order moments
            x = self._first_moments(sdp, y)
            if x is None:
                res.reason = why or "first-order moments missing"
                return
        res.flat = not why
        if refine:
            x = self._refine(x, feas_tol)
        res.minimizers = x[None]
        fx = self.f.evaluate(x, self.x)
        viol = max([0.0] + [-g.evaluate(x, self.x) for g in self.g] + [abs(h.evaluate(x, self.x)) for h in self.h])
        if viol > feas_tol * (1 + np.abs(x).max()):
            res.reason = f"extracted point violates the constraints by {viol:.2e}" + (f" ({why})" if why else "")
        elif abs(fx - res.lower_bound) > feas_tol * (1.0 + abs(res.lower_bound)):
            res.reason = (f"extracted point has f = {fx:.8g}, not the bound {res.lower_bound:.8g}"
                          + (f" ({why})" if why else ""))
        else:
            res.certified = True

    def _first_moments(self, sdp, y: np.ndarray) -> np.ndarray | None:
        """x_i = y_{e_i}; where term sparsity left y_{e_i} out (f even in x_i), +-sqrt(y_{2 e_i}) with
        the sign that lowers f, one coordinate at a time. None when neither moment exists."""
        n = self.n
        have = {k.tobytes(): j for j, k in enumerate(row_keys(sdp.exponents))}
        x = np.zeros(n)
        missing = []
        for i, (k1, k2) in enumerate(zip(row_keys(np.eye(n, dtype=np.int64)),
                                         row_keys(2 * np.eye(n, dtype=np.int64)))):
            if k1.tobytes() in have:
                x[i] = y[have[k1.tobytes()]]
            elif k2.tobytes() in have:
                x[i] = math.sqrt(max(y[have[k2.tobytes()]], 0.0))
                missing.append(i)
            else:
                return None
        for i in missing:
            alt = x.copy()
            alt[i] = -alt[i]
            if self.f.evaluate(alt, self.x) < self.f.evaluate(x, self.x):
                x = alt
        return x

    # ------------------------------------------------------------------ hand-off to certify/
    def to_qcqp(self, redundant: Sequence[bool] | None = None):
        """(QCQP, Q) for the certify layer: x = [1, z] with z = ``self.x``; needs quadratic f, h_j
        and no inequalities (the QCQP template holds equalities only)."""
        if self.g:
            raise ValueError("to_qcqp: the certify layer's QCQP has equality constraints only; "
                             f"this problem has {len(self.g)} inequalities")
        return qcqp_from_polynomials(self.f, self.h, self.x, redundant)


def extract_minimizers(M: np.ndarray, exps: np.ndarray, r: int, tol: float = 1e-5) -> np.ndarray:
    """Atoms of a flat moment matrix ``M (k, k)`` over monomials ``exps (k, n)`` of rank r: (r, n).

    Henrion-Lasserre: M = V V^T; the column echelon form U of V expresses every basis monomial in terms
    of r pivot monomials w; multiplication by x_i acts on w by N_i = U[rows of x_i w]; the atoms are the
    common eigenvalues of the N_i, read off the Schur vectors of a random combination.
    """
    from scipy.linalg import schur

    k, n = exps.shape
    ev, W = np.linalg.eigh(M)
    V = W[:, -r:] * np.sqrt(np.maximum(ev[-r:], 0.0))
    # reduced row echelon form of V^T with partial pivoting: V^T = C R, R[:, pivots] = I
    R = V.T.copy()
    pivots, row = [], 0
    thr = tol * max(np.abs(R).max(), 1e-300)
    for col in range(k):
        if row >= r:
            break
        p = row + int(np.argmax(np.abs(R[row:, col])))
        if abs(R[p, col]) <= thr:
            R[row:, col] = 0.0
            continue
        R[[row, p]] = R[[p, row]]
        R[row] /= R[row, col]
        others = np.arange(r) != row
        R[others] -= np.outer(R[others, col], R[row])
        pivots.append(col)
        row += 1
    if len(pivots) < r:
        raise ValueError(f"echelon form found {len(pivots)} pivots for rank {r}")
    U = R.T  # z(x*) = U w(x*) for every atom x*
    w = exps[pivots]
    keys = {tuple(e): i for i, e in enumerate(exps.tolist())}
    Ns = []
    for i in range(n):
        e = np.zeros(n, dtype=np.int64)
        e[i] = 1
        rows = [keys.get(tuple((wj + e).tolist())) for wj in w]
        if any(rr is None for rr in rows):
            raise ValueError("a pivot monomial has maximal degree; raise the relaxation order")
        Ns.append(U[rows, :])
    rng = np.random.default_rng(12345)
    c = rng.uniform(0.5, 1.5, n)
    c /= c.sum()
    N = sum(ci * Ni for ci, Ni in zip(c, Ns))
    T, Qs = schur(N, output="real")
    pts = np.array([[Qs[:, j] @ Ni @ Qs[:, j] for Ni in Ns] for j in range(r)])
    return pts


def qcqp_from_polynomials(f, equalities: Sequence = (), indeterminates: Sequence[Indeterminate] | None = None,
                          redundant: Sequence[bool] | None = None):
    """Order-1 hand-off: min f(z) s.t. h_j(z) = 0 (quadratic) as ``(QCQP, Q)`` with x = [1, z].

    f(z) = x^T Q x and h_j(z) = 0  <=>  x^T A_j x = b_j (the constant of h_j moves to b_j = -h_j(0)).
    Q is a float64 tensor (n+1, n+1); the QCQP prepends the homogenizing constraint x0^2 = 1.
    """
    import torch

    from ..certify.qcqp import QCQP

    f = _numeric(f, "objective")
    hs = [_numeric(h, f"equality {j}") for j, h in enumerate(equalities)]
    found = {x.uid for p in [f, *hs] for x in p.indeterminates()}
    xs = ([Indeterminate(_uid=u) for u in sorted(found)] if indeterminates is None
          else list(np.asarray(indeterminates, dtype=object).reshape(-1)))
    pos = {x.uid: i + 1 for i, x in enumerate(xs)}
    missing = found - set(pos)
    if missing:
        raise ValueError(f"indeterminates {sorted(Indeterminate(_uid=u).name for u in missing)} missing from the list")
    for what, p in [("objective", f)] + [(f"equality {j}", h) for j, h in enumerate(hs)]:
        if p.degree() > 2:
            raise ValueError(f"{what} has degree {p.degree()}; the QCQP hand-off needs quadratic polynomials")

    def matrix(p: Polynomial) -> np.ndarray:
        n1 = len(xs) + 1
        A = np.zeros((n1, n1))
        for m, c in p._t.items():
            v = float(c.get(CONST, 0))
            idx = [pos[u] for u, e in m for _ in range(e)]
            if not idx:
                A[0, 0] += v
            elif len(idx) == 1:
                A[0, idx[0]] += v / 2
                A[idx[0], 0] += v / 2
            elif idx[0] == idx[1]:
                A[idx[0], idx[0]] += v
            else:
                A[idx[0], idx[1]] += v / 2
                A[idx[1], idx[0]] += v / 2
        return A

    Q = torch.as_tensor(matrix(f), dtype=torch.float64)
    n1 = len(xs) + 1
    As, bs, names = [], [], []
    for j, h in enumerate(hs):
        A = matrix(h)
        bs.append(-A[0, 0])
        A[0, 0] = 0.0
        if not A.any():
            raise ValueError(f"equality {j} is constant ({h}); it constrains nothing or is infeasible")
        As.append(A)
        names.append(f"h{j}: {h} = 0")
    if not As:  # only the homogenizing constraint
        A0 = np.zeros((n1, n1))
        A0[0, 0] = 1.0
        return QCQP(A=torch.as_tensor(A0[None]), b=torch.ones(1, dtype=torch.float64), names=["homogenizing"]), Q
    red = None if redundant is None else torch.as_tensor(list(redundant), dtype=torch.bool)
    return QCQP(A=torch.as_tensor(np.stack(As)), b=torch.as_tensor(bs, dtype=torch.float64), redundant=red,
                names=names), Q
