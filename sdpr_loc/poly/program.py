"""Program: sum-of-squares programs stated with polynomials, solved by Clarabel or SCS directly.

The verbs follow Drake's MathematicalProgram (new_indeterminates, new_continuous_variables,
new_free_polynomial, new_sos_polynomial, add_sos_constraint, add_equality_between_polynomials, linear
costs and constraints) so the tutorials translate line by line. Every scalar decision variable -
user variables, free-polynomial coefficients and Gram-matrix entries - is one column of a single
vector; all constraints are accumulated as sparse triplets and handed to the solver at ``solve()``
(``conic.ConicProblem``, no modelling layer), so building scales with the number of nonzeros, not
Python objects, and tiny programs cost about a millisecond.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import scipy.sparse as sp

from .conic import SOLVERS, ConicProblem
from .decompose import sos_decomposition
from .exact import check_gram_exact
from .gram import Gram, pair_monomials, tri_position, upper_to_matrix
from .newton import newton_half_basis, unique_rows
from .polynomial import (CONST, Comparison, Indeterminate, Monomial, Polynomial, Variable, is_number,
                         allocate_variables, as_monomial, as_polynomial, exponents_up_to)
from .relaxation import plan_blocks


def _names(name, n: int, what: str) -> list[str]:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"number of {what} must be a positive integer, got {n!r}")
    if isinstance(name, str):
        return [f"{name}{i}" for i in range(n)]
    names = list(name)
    if len(names) != n or not all(isinstance(s, str) and s for s in names):
        raise ValueError(f"names for {what} must be a string or {n} non-empty strings, got {name!r}")
    return names


def _exps(monos: Sequence[tuple], uids: list[int]) -> np.ndarray:
    col = {u: j for j, u in enumerate(uids)}
    E = np.zeros((len(monos), len(uids)), dtype=np.int64)
    for i, m in enumerate(monos):
        for u, e in m:
            E[i, col[u]] = e
    return E


def _indeterminate_list(vars_, what: str) -> list[Indeterminate]:
    if isinstance(vars_, Indeterminate):
        return [vars_]
    xs = list(np.asarray(vars_, dtype=object).reshape(-1)) if not isinstance(vars_, (list, tuple)) else list(vars_)
    if not xs or not all(isinstance(x, Indeterminate) for x in xs):
        raise ValueError(f"{what} needs a non-empty list of Indeterminates, got {vars_!r}")
    if len({x.uid for x in xs}) != len(xs):
        raise ValueError(f"{what}: indeterminates must be distinct")
    return xs


class Program:
    """A sum-of-squares / linear program over decision variables, polynomial identities in indeterminates.

    Example (Drake tutorial, example 1)::

        prog = Program(); a = prog.new_continuous_variables(2); x = prog.new_indeterminates(1)
        prog.add_sos_constraint(x[0]**4 + a[0]*x[0] + 2 + a[1])
        prog.add_sos_constraint((a[0] - a[1] + 1)*x[0]**2 + a[1]*x[0] + 1)
        prog.add_linear_cost(-a[0] - a[1])
        res = prog.solve(); res.optimal_cost, res.value(a[0])
    """

    def __init__(self):
        self._seg_uid: list[int] = []
        self._seg_col: list[int] = []
        self._seg_len: list[int] = []
        self._seg_arrays = None
        self._ncols = 0
        self._grams: list[Gram] = []
        self._eq: list[tuple] = []
        self._n_eq = 0
        self._ineq: list[tuple] = []
        self._n_in = 0
        self._cost: dict[int, float] = {}
        self._cost_const = 0.0
        self._symbols: dict[str, object] = {}  # names -> symbols, for sympy input
        self._indeterminates: list[Indeterminate] = []

    # ------------------------------------------------------------------ declarations
    @property
    def num_vars(self) -> int:
        """Number of scalar decision variables (Gram entries included)."""
        return self._ncols

    @property
    def grams(self) -> list[Gram]:
        return list(self._grams)

    @property
    def indeterminates(self) -> list[Indeterminate]:
        """Indeterminates declared with ``new_indeterminates`` (others may appear in polynomials)."""
        return list(self._indeterminates)

    def new_indeterminates(self, n: int, name: str | Sequence[str] = "x") -> np.ndarray:
        """n indeterminates named name0, name1, ... (or the given names); a 1-D object array."""
        out = [Indeterminate(nm) for nm in _names(name, n, "indeterminates")]
        for x in out:
            self._symbols[x.name] = x
        self._indeterminates += out
        return np.array(out, dtype=object)

    def new_continuous_variables(self, n: int, name: str | Sequence[str] = "a") -> np.ndarray:
        """n scalar decision variables; a 1-D object array (operators work element-wise)."""
        names = _names(name, n, "variables")
        start = allocate_variables(len(names), names)
        self._register(start, len(names))
        out = [Variable(_uid=start + i) for i in range(len(names))]
        for v in out:
            self._symbols[v.name] = v
        return np.array(out, dtype=object)

    def new_free_polynomial(self, indeterminates, degree: int, name: str = "c") -> Polynomial:
        """sum_m c_m m over all monomials of degree <= ``degree``; the c_m are new decision variables."""
        xs = _indeterminate_list(indeterminates, "new_free_polynomial")
        E = exponents_up_to(len(xs), degree)
        start = allocate_variables(len(E), [f"{name}{i}" for i in range(len(E))])
        self._register(start, len(E))
        return self._poly_from_rows(E, xs, [{start + i: 1} for i in range(len(E))])

    def new_sos_polynomial(self, indeterminates, degree: int) -> tuple[Polynomial, Gram]:
        """A new polynomial z^T Q z, Q PSD, z = all monomials of degree <= degree / 2; returns (p, Q)."""
        xs = _indeterminate_list(indeterminates, "new_sos_polynomial")
        if isinstance(degree, bool) or not isinstance(degree, (int, np.integer)) or degree < 0 or degree % 2:
            raise ValueError(f"an SOS polynomial needs an even degree >= 0, got {degree!r}")
        gram = self._new_gram(exponents_up_to(len(xs), int(degree) // 2), xs, None)
        p = gram.polynomial()
        gram.constrained = p
        return p, gram

    # ------------------------------------------------------------------ constraints
    def add_sos_constraint(self, p, basis: Sequence | None = None, newton: bool = True,
                           sparsity: str = "dense", term_steps: int = 1, extension: str = "block",
                           margin: float = 0.0):
        """Constrain p to be a sum of squares: p = z^T Q z, Q PSD; returns the Gram matrix Q.

        z is the Newton-polytope basis of p (half of conv(support), diagonally pruned) unless ``basis``
        (a list of monomials) is given or ``newton=False`` (all monomials up to deg(p) / 2).
        ``sparsity`` "correlative" / "term" / "combined" (see ``sparsity.py``) writes p as a sum of
        smaller SOS blocks, p = sum_k z_k^T Q_k z_k, and returns the list of their Gram matrices.
        ``margin`` > 0 asks for Q_k - margin I PSD (strictly inside the cone, so that rounding the
        solution keeps it PSD); the returned Gram matrices are then Q_k - margin I.
        """
        if not (isinstance(margin, (int, float, np.floating)) and math.isfinite(margin) and margin >= 0):
            raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
        p = self._poly(p, "add_sos_constraint")
        xs = p.indeterminates()
        if sparsity != "dense":
            return self._add_sparse_sos(p, xs, sparsity, term_steps, extension, float(margin))
        if basis is not None:
            monos = [as_monomial(m) for m in basis]
            uids = sorted({u for m in monos for u, _ in m.powers} | {x.uid for x in xs})
            xs = [Indeterminate(_uid=u) for u in uids]
            B = _exps([m.powers for m in monos], uids)
            if len(np.unique(B, axis=0)) != len(B):
                raise ValueError("the SOS basis has repeated monomials")
        else:
            S = _exps(list(p._t), [x.uid for x in xs])
            if newton:
                B = newton_half_basis(S)
            else:
                d = p.degree()
                if d % 2:
                    raise ValueError(f"a polynomial of odd degree {d} cannot be SOS unless it is 0")
                B = exponents_up_to(len(xs), d // 2)
        gram = self._new_gram(B, xs, p)
        self._match([gram], p, float(margin))
        return gram

    def _add_sparse_sos(self, p: Polynomial, xs: list, sparsity: str, term_steps: int, extension: str,
                        margin: float) -> list[Gram]:
        d = p.degree()
        if d % 2:
            raise ValueError(f"a polynomial of odd degree {d} cannot be SOS unless it is 0")
        uids = [x.uid for x in xs]
        S = _exps(list(p._t), uids)
        plan = plan_blocks(len(xs), (S, np.ones(len(S))), [], [], d // 2, sparsity, term_steps, extension, prune=True)
        grams = [self._new_gram(B, xs, p) for B, _, _ in plan.psd]
        self._match(grams, p, margin)
        return grams

    def add_equality_between_polynomials(self, p1, p2) -> None:
        """Coefficient-wise equality p1 = p2 (as polynomials in the indeterminates)."""
        d = self._poly(p1, "add_equality_between_polynomials") - self._poly(p2, "add_equality_between_polynomials")
        coefs = list(d._t.values())
        if not coefs:
            return
        r, c, v, const = self._affine_rows(coefs)
        self._add_eq(r, c, v, -const, len(coefs))

    def add_linear_cost(self, expr) -> None:
        """Add an affine function of the decision variables to the (minimised) cost."""
        c = self._affine(expr, "add_linear_cost")
        for k, val in c.items():
            if k == CONST:
                self._cost_const += float(val)
            else:
                col = int(self._cols(np.array([k]))[0])
                self._cost[col] = self._cost.get(col, 0.0) + float(val)

    def add_linear_constraint(self, expr, lb: float | None = None, ub: float | None = None) -> None:
        """``lb <= expr <= ub`` for an affine expression, or a Comparison such as ``a[0] + a[1] <= 3``
        (or an iterable of them). lb == ub makes it an equality."""
        if isinstance(expr, Comparison) or (not isinstance(expr, (Polynomial, Variable, Indeterminate, Monomial))
                                            and not is_number(expr) and isinstance(expr, (Iterable, np.ndarray))):
            if lb is not None or ub is not None:
                raise ValueError("give either a Comparison (expr <= v) or expr with lb / ub, not both")
            items = [expr] if isinstance(expr, Comparison) else list(np.asarray(expr, dtype=object).reshape(-1))
            for it in items:
                if not isinstance(it, Comparison):
                    raise ValueError(f"expected Comparisons such as `a[0] >= 0`, got {it!r}")
                self.add_linear_constraint(it.expr, it.lb, it.ub)
            return
        lb = -math.inf if lb is None else float(lb)
        ub = math.inf if ub is None else float(ub)
        if math.isnan(lb) or math.isnan(ub) or lb > ub:
            raise ValueError(f"linear constraint bounds must satisfy lb <= ub, got lb={lb}, ub={ub}")
        c = self._affine(expr, "add_linear_constraint")
        r, cols, v, const = self._affine_rows([c])
        if lb == ub:
            self._add_eq(r, cols, v, np.array([lb]) - const, 1)
        elif math.isfinite(lb) or math.isfinite(ub):
            self._ineq.append((r + self._n_in, cols, v, np.array([lb]) - const, np.array([ub]) - const))
            self._n_in += 1

    def add_linear_equality_constraint(self, expr, value: float = 0.0) -> None:
        """expr == value for an affine expression in the decision variables."""
        self.add_linear_constraint(expr, value, value)

    # ------------------------------------------------------------------ solve
    def solve(self, solver: str = "clarabel", verbose: bool = False, **options) -> "Result":
        """Solve with Clarabel (default) or SCS (``solver="scs"``); options are the solver's settings.

        The conic problem goes to the solver directly (``conic.ConicProblem``): the constraints are
        already sparse matrices, so a modelling layer would only add its fixed cost."""
        t0 = time.perf_counter()
        N = self._ncols
        if N == 0:
            raise ValueError("the program has no decision variables (add variables or SOS constraints first)")
        if str(solver).lower() not in SOLVERS:
            raise ValueError(f"unknown solver {solver!r}; choose one of {SOLVERS}")
        prob = ConicProblem(N, c0=self._cost_const)
        if self._n_eq:
            prob.add_zero(tuple(np.concatenate([blk[i] for blk in self._eq]) for i in range(3)),
                          np.concatenate([blk[3] for blk in self._eq]))
        if self._n_in:
            A, (lb, ub) = self._stack(self._ineq, self._n_in)
            lo, hi = np.isfinite(lb), np.isfinite(ub)
            if lo.any():
                prob.add_nonneg(A[lo], lb[lo])
            if hi.any():
                prob.add_nonneg(-A[hi], -ub[hi])
        for g in self._grams:
            m = g.n_entries
            if m:
                prob.add_psd((np.arange(m), g.col0 + np.arange(m), np.ones(m)), np.zeros(m), g.size)
        c = np.zeros(N)
        if self._cost:
            c[np.fromiter(self._cost.keys(), dtype=np.int64)] = np.fromiter(self._cost.values(), dtype=np.float64)
        prob.c = c
        t1 = time.perf_counter()
        sol = prob.solve(solver, verbose, **options)
        t2 = time.perf_counter()
        return Result(self, status=sol.status, optimal_cost=float(sol.value), x=sol.x, solver=str(solver).lower(),
                      build_time=t1 - t0, solve_time=t2 - t1, message=sol.message, iterations=sol.iterations)

    # ------------------------------------------------------------------ internals
    def _register(self, start_uid: int, n: int) -> int:
        col0 = self._ncols
        self._seg_uid.append(start_uid)
        self._seg_col.append(col0)
        self._seg_len.append(n)
        self._ncols += n
        self._seg_arrays = None
        return col0

    def _cols(self, uids: np.ndarray) -> np.ndarray:
        """Column of each decision-variable id; ValueError for variables of another program."""
        uids = np.asarray(uids, dtype=np.int64)
        if uids.size == 0:
            return uids
        if self._seg_arrays is None:
            self._seg_arrays = (np.array(self._seg_uid), np.array(self._seg_col), np.array(self._seg_len))
        su, sc, sl = self._seg_arrays
        s = np.searchsorted(su, uids, side="right") - 1
        ok = (s >= 0) & (uids < su[np.maximum(s, 0)] + sl[np.maximum(s, 0)]) if len(su) else np.zeros(len(uids), bool)
        if not ok.all():
            from .polynomial import variable_name
            bad = sorted({variable_name(int(u)) for u in uids[~ok]})
            raise ValueError(f"decision variables {bad[:6]} do not belong to this program")
        return sc[s] + (uids - su[s])

    def _new_gram(self, B: np.ndarray, xs: list[Indeterminate], constrained) -> Gram:
        k = len(B)
        idx = len(self._grams)
        start = allocate_variables(k * (k + 1) // 2, lambda off: "Q{}[{},{}]".format(idx, *tri_position(off, k)))
        col0 = self._register(start, k * (k + 1) // 2)
        g = Gram(idx, B, xs, start, col0, constrained)
        self._grams.append(g)
        return g

    def _match(self, grams: list[Gram], p: Polynomial, margin: float = 0.0) -> None:
        """Rows: sum_k z_k^T (Q_k + margin I) z_k - p = 0, coefficient by coefficient, assembled with
        numpy. All Gram matrices share p's indeterminates (the first one's order)."""
        uids = [x.uid for x in grams[0].indeterminates]
        monos = list(p._t)
        P = _exps(monos, uids)
        pairs = [pair_monomials(g.exps) for g in grams]
        allE = np.vstack([U for U, _, _ in pairs] + ([P] if len(P) else []))
        if len(allE) == 0:
            return
        _, inv = unique_rows(allE)
        n_rows = int(inv.max()) + 1
        rows, cols, vals, off = [], [], [], 0
        rhs = np.zeros(n_rows)
        for g, (U, rows_g, mult) in zip(grams, pairs):
            rows.append(inv[off:off + len(U)][rows_g])
            if margin:
                np.add.at(rhs, rows[-1][mult == 1.0], -margin)
            cols.append(g.col0 + np.arange(g.n_entries))
            vals.append(mult)
            off += len(U)
        r, c, v, const = self._affine_rows([p._t[m] for m in monos])
        rp = inv[off:]
        np.add.at(rhs, rp, const)
        if len(r):
            rows.append(rp[r])
            cols.append(c)
            vals.append(-v)
        self._add_eq(np.concatenate(rows), np.concatenate(cols), np.concatenate(vals), rhs, n_rows)

    def _affine_rows(self, coefs: list[dict]):
        """Triplets (row, col, value) and the constant of each affine coefficient dictionary."""
        r, u, v = [], [], []
        const = np.zeros(len(coefs))
        for i, c in enumerate(coefs):
            for k, val in c.items():
                if k == CONST:
                    const[i] += float(val)
                else:
                    r.append(i)
                    u.append(k)
                    v.append(float(val))
        cols = self._cols(np.array(u, dtype=np.int64))
        return np.array(r, dtype=np.int64), cols, np.array(v, dtype=np.float64), const

    def _add_eq(self, rows, cols, vals, rhs, n_rows: int) -> None:
        self._eq.append((np.asarray(rows, dtype=np.int64) + self._n_eq, np.asarray(cols, dtype=np.int64),
                         np.asarray(vals, dtype=np.float64), np.asarray(rhs, dtype=np.float64)))
        self._n_eq += n_rows

    def _stack(self, blocks, n_rows):
        """The inequality blocks as one sparse matrix and their (lb, ub)."""
        rows = np.concatenate([b[0] for b in blocks])
        cols = np.concatenate([b[1] for b in blocks])
        vals = np.concatenate([b[2] for b in blocks])
        A = sp.csr_matrix((vals, (rows, cols)), shape=(n_rows, self._ncols))
        return A, (np.concatenate([b[3] for b in blocks]), np.concatenate([b[4] for b in blocks]))

    def _poly(self, p, what: str) -> Polynomial:
        try:
            return as_polynomial(p, self._symbols)
        except ValueError as exc:
            raise ValueError(f"{what}: {exc}") from None

    def _affine(self, expr, what: str) -> dict:
        p = self._poly(expr, what)
        if any(m != () for m in p._t):
            raise ValueError(f"{what}: expression {p} depends on indeterminates; it must be affine in the "
                             "decision variables only (use add_sos_constraint for polynomial constraints)")
        return dict(p._t.get((), {}))

    def _poly_from_rows(self, E: np.ndarray, xs: list[Indeterminate], coefs: list[dict]) -> Polynomial:
        uids = [x.uid for x in xs]
        order = np.argsort(uids)
        t = {}
        for row, c in zip(E[:, order].tolist(), coefs):
            t[tuple((uids[j], e) for j, e in zip(order.tolist(), row) if e)] = c
        return Polynomial._raw(t)


@dataclass
class Result:
    """Outcome of ``Program.solve``: status, optimal cost, values of variables, polynomials and Grams.

    ``status`` uses cvxpy's names ("optimal", "optimal_inaccurate", "infeasible", "unbounded", "user_limit") or
    "solver_error" (see ``message``). ``optimal_cost`` is +inf when infeasible, -inf when unbounded.
    ``build_time``: assembling the conic problem; ``solve_time``: the solver call.
    """

    program: Program = field(repr=False)
    status: str
    optimal_cost: float
    x: np.ndarray | None = field(repr=False)
    solver: str = "clarabel"
    build_time: float = 0.0
    solve_time: float = 0.0
    message: str = ""
    iterations: int | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def is_success(self) -> bool:
        return self.status == "optimal"

    def _need_x(self):
        if self.x is None:
            extra = f": {self.message}" if self.message else ""
            raise ValueError(f"no solution available (status {self.status!r}{extra})")
        return self.x

    def value(self, obj):
        """Numeric value: float for a variable or constant expression, a float-coefficient Polynomial
        for a polynomial in indeterminates, a (k, k) array for a Gram, arrays for arrays."""
        x = self._need_x()
        if isinstance(obj, Gram):
            return self.gram(obj)
        if isinstance(obj, Variable):
            return float(x[self.program._cols(np.array([obj.uid]))[0]])
        if isinstance(obj, (list, tuple, np.ndarray)):
            arr = np.asarray(obj, dtype=object)
            vals = [self.value(o) for o in arr.reshape(-1)]
            if all(isinstance(v, float) for v in vals):
                return np.array(vals, dtype=np.float64).reshape(arr.shape)
            out = np.empty(len(vals), dtype=object)
            out[:] = vals
            return out.reshape(arr.shape)
        p = as_polynomial(obj, self.program._symbols)
        uids = np.array(sorted({k for c in p._t.values() for k in c if k != CONST}), dtype=np.int64)
        q = p.substitute_decisions(uids, x[self.program._cols(uids)]) if len(uids) else p
        if all(m == () for m in q._t):
            return float(q._t.get((), {}).get(CONST, 0.0))
        return q

    def gram(self, g: Gram | int) -> np.ndarray:
        """The solved Gram matrix (k, k)."""
        g = self._gram(g)
        x = self._need_x()
        return upper_to_matrix(x[g.col0:g.col0 + g.n_entries], g.size)

    @property
    def grams(self) -> list[np.ndarray]:
        return [self.gram(g) for g in self.program._grams]

    def decompose(self, g: Gram | int, method: str = "ldl", tol: float = 1e-9):
        """p = sum_i w_i q_i(x)^2 from the solved Gram matrix (see ``decompose.sos_decomposition``)."""
        g = self._gram(g)
        return sos_decomposition(self.gram(g), g.basis, method=method, tol=tol)

    def exact_certificate(self, g: Gram | int, **kwargs):
        """Round this Gram matrix to rationals and prove, exactly, that its polynomial is SOS.

        Decision variables in the constrained polynomial are replaced by their (binary-exact) float
        values, so the statement proved is about that concrete polynomial.
        """
        g = self._gram(g)
        if g.constrained is None:
            raise ValueError("this Gram matrix does not certify a polynomial")
        p = g.constrained if not g.constrained.has_decision_variables() else self.value(g.constrained)
        return check_gram_exact(as_polynomial(p), g.basis, self.gram(g), **kwargs)

    def _gram(self, g) -> Gram:
        if isinstance(g, (int, np.integer)):
            if not 0 <= g < len(self.program._grams):
                raise ValueError(f"Gram index {g} out of range ({len(self.program._grams)} Gram matrices)")
            return self.program._grams[g]
        if not isinstance(g, Gram) or g.index >= len(self.program._grams) or self.program._grams[g.index] is not g:
            raise ValueError("not a Gram matrix of this program")
        return g
