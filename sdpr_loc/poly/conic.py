"""Conic programs handed straight to Clarabel or SCS, without a modelling layer.

SOS and moment relaxations are already linear maps assembled as sparse matrices, so cvxpy's
canonicalisation only adds a fixed cost (milliseconds per problem, dominant on small ones). Here a
problem is  min c^T x  s.t.  A_z x = b_z,  A_l x >= b_l,  mat(A_k x - b_k) PSD,  where each PSD block
k maps x to the row-major upper triangle (i <= j) of a symmetric matrix; the svec scaling and ordering
each solver wants (sqrt(2) off the diagonal, column-major upper / lower triangle) is done once here.
Statuses follow cvxpy's names so callers see one vocabulary.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from .gram import triu

SOLVERS = ("clarabel", "scs")
_CLARABEL_STATUS = {
    "Solved": "optimal", "AlmostSolved": "optimal_inaccurate", "PrimalInfeasible": "infeasible",
    "AlmostPrimalInfeasible": "infeasible_inaccurate", "DualInfeasible": "unbounded",
    "AlmostDualInfeasible": "unbounded_inaccurate", "MaxIterations": "user_limit", "MaxTime": "user_limit",
}
_SCS_STATUS = {
    "solved": "optimal", "solved_inaccurate": "optimal_inaccurate", "infeasible": "infeasible",
    "infeasible_inaccurate": "infeasible_inaccurate", "unbounded": "unbounded",
    "unbounded_inaccurate": "unbounded_inaccurate",
}


@dataclass
class ConicSolution:
    """status (cvxpy vocabulary), x (None unless optimal / optimal_inaccurate), objective value
    (+inf infeasible, -inf unbounded, nan otherwise), iterations, solver seconds, message;
    zero_duals: multipliers of the equality rows (in the order added; sign as the solver's)."""

    status: str
    x: np.ndarray | None
    value: float
    iterations: int | None = None
    solve_time: float = 0.0
    message: str = ""
    zero_duals: np.ndarray | None = None


def _triplets(A, m: int, n: int, what: str):
    """(rows, cols, vals) of a sparse matrix or a (rows, cols, vals) tuple, checked against (m, n)."""
    if isinstance(A, tuple):
        r, c, v = (np.asarray(a) for a in A)
        r, c, v = r.astype(np.int64), c.astype(np.int64), v.astype(np.float64)
        if len(r) and (r.min() < 0 or r.max() >= m or c.min() < 0 or c.max() >= n):
            raise ValueError(f"{what}: triplet indices out of range for a ({m}, {n}) block")
        return r, c, v
    A = sp.coo_matrix(A)
    if A.shape != (m, n):
        raise ValueError(f"{what}: matrix of shape {A.shape}, expected {(m, n)}")
    return A.row.astype(np.int64), A.col.astype(np.int64), A.data.astype(np.float64)


@dataclass
class ConicProblem:
    """min c^T x + c0 over n variables with zero, nonnegative and PSD blocks (see module doc).

    Each ``add_*`` takes A as a scipy sparse matrix or as triplets (rows, cols, vals); blocks are kept
    as triplets and become one sparse matrix at ``solve``."""

    n: int
    c: np.ndarray | None = None
    c0: float = 0.0
    zero: list = field(default_factory=list)
    nonneg: list = field(default_factory=list)
    psd: list = field(default_factory=list)

    def add_zero(self, A, b) -> None:
        """A x = b."""
        b = np.asarray(b, dtype=np.float64).reshape(-1)
        self.zero.append((*_triplets(A, len(b), self.n, "equality block"), b))

    def add_nonneg(self, A, b) -> None:
        """A x >= b."""
        b = np.asarray(b, dtype=np.float64).reshape(-1)
        self.nonneg.append((*_triplets(A, len(b), self.n, "inequality block"), b))

    def add_psd(self, A, b, k: int) -> None:
        """mat(A x - b) PSD; A (k(k+1)/2, n) gives the row-major upper triangle of a k x k matrix."""
        b = np.asarray(b, dtype=np.float64).reshape(-1)
        if len(b) != k * (k + 1) // 2:
            raise ValueError(f"a {k}x{k} PSD block needs {k * (k + 1) // 2} rows, got {len(b)}")
        self.psd.append((*_triplets(A, len(b), self.n, f"{k}x{k} PSD block"), b, int(k)))

    def _stacked(self, lower: bool):
        """The solver's (A', b') with rows ordered zero, nonneg (with 1x1 PSD blocks), PSD in the
        solver's svec order (sqrt(2) off the diagonal; column-major upper triangle for Clarabel, lower
        for SCS)."""
        blocks = [(r, c, v, b) for r, c, v, b in self.zero] + [(r, c, v, b) for r, c, v, b in self.nonneg]
        blocks += [(r, c, v, b) for r, c, v, b, k in self.psd if k == 1]
        sizes = [k for *_, k in self.psd if k > 1]
        for r, c, v, b, k in self.psd:
            if k == 1:
                continue
            iu, ju = triu(k)
            pos = iu * k - iu * (iu - 1) // 2 + (ju - iu) if lower else ju * (ju + 1) // 2 + iu
            w = np.where(iu == ju, 1.0, math.sqrt(2.0))
            bb = np.empty(len(b))
            bb[pos] = w * b
            blocks.append((pos[r], c, v * w[r], bb))
        rows, off = [], 0
        for r, _, _, b in blocks:
            rows.append(r + off)
            off += len(b)
        if not blocks:
            return sp.csc_matrix((0, self.n)), np.zeros(0), sizes
        # the solvers want  s = b' - A' x  in the cone; here s = A x - b, so A' = -A, b' = -b
        A = sp.csc_matrix((-np.concatenate([v for _, _, v, _ in blocks]),
                           (np.concatenate(rows), np.concatenate([c for _, c, _, _ in blocks]))), shape=(off, self.n))
        return A, -np.concatenate([b for *_, b in blocks]), sizes

    def solve(self, solver: str = "clarabel", verbose: bool = False, **options) -> ConicSolution:
        """Solve with Clarabel (default) or SCS; ``options`` are the solver's own settings."""
        s = str(solver).lower()
        if s not in SOLVERS:
            raise ValueError(f"unknown solver {solver!r}; choose one of {SOLVERS}")
        if self.n == 0:
            raise ValueError("the problem has no variables")
        c = np.zeros(self.n) if self.c is None else np.asarray(self.c, dtype=np.float64)
        A, b, sizes = self._stacked(s == "scs")
        nz = sum(len(blk[-1]) for blk in self.zero)
        nl = sum(len(blk[-1]) for blk in self.nonneg) + sum(1 for *_, k in self.psd if k == 1)
        t0 = time.perf_counter()
        if s == "clarabel":
            out = _clarabel(c, A, b, nz, nl, sizes, verbose, options)
        else:
            out = _scs(c, A, b, nz, nl, sizes, verbose, options)
        out.solve_time = time.perf_counter() - t0
        if out.x is not None:
            out.value = float(c @ out.x) + self.c0
        return out


def _finish(status: str, x, iters, message: str = "", duals=None) -> ConicSolution:
    ok = status in ("optimal", "optimal_inaccurate")
    value = math.nan if ok else (math.inf if status.startswith("infeasible") else
                                 -math.inf if status.startswith("unbounded") else math.nan)
    return ConicSolution(status, np.asarray(x, dtype=np.float64) if ok else None, value, iters, 0.0, message,
                         np.asarray(duals, dtype=np.float64) if ok and duals is not None else None)


def _clarabel(c, A, b, nz, nl, sizes, verbose, options) -> ConicSolution:
    import clarabel

    cones = ([clarabel.ZeroConeT(nz)] if nz else []) + ([clarabel.NonnegativeConeT(nl)] if nl else [])
    cones += [clarabel.PSDTriangleConeT(k) for k in sizes]
    settings = clarabel.DefaultSettings()
    settings.verbose = bool(verbose)
    for key, val in options.items():
        if not hasattr(settings, key):
            raise ValueError(f"unknown Clarabel setting {key!r}")
        setattr(settings, key, val)
    n = len(c)
    try:
        sol = clarabel.DefaultSolver(sp.csc_matrix((n, n)), c, A, b, cones, settings).solve()
    except BaseException as exc:  # a Rust panic surfaces as a BaseException subclass
        if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
            raise
        return ConicSolution("solver_error", None, math.nan, None, 0.0, f"Clarabel failed: {exc}")
    name = str(sol.status).split(".")[-1]
    status = _CLARABEL_STATUS.get(name, "solver_error")
    return _finish(status, sol.x, int(sol.iterations), "" if status != "solver_error" else f"Clarabel: {name}",
                   np.asarray(sol.z)[:nz])


def _scs(c, A, b, nz, nl, sizes, verbose, options) -> ConicSolution:
    import scs

    opts = {"eps_abs": 1e-7, "eps_rel": 1e-7, "max_iters": 100000, "verbose": bool(verbose), **options}
    cone = {"z": nz, "l": nl, "s": list(sizes)}
    try:
        out = scs.SCS({"A": sp.csc_matrix(A), "b": b, "c": c}, cone, **opts).solve()
    except (ValueError, RuntimeError) as exc:
        return ConicSolution("solver_error", None, math.nan, None, 0.0, f"SCS failed: {exc}")
    info = out["info"]
    status = _SCS_STATUS.get(str(info["status"]).lower(), "solver_error")
    return _finish(status, out["x"], int(info["iter"]), "" if status != "solver_error" else f"SCS: {info['status']}",
                   out["y"][:nz])
