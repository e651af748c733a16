"""The Shor semidefinite relaxation of a homogenized QCQP, solved with cvxpy.

    min <Q, X>  s.t.  <A_i, X> = b_i,  X PSD          (dual: H = Q + sum_i l_i A_i PSD)

The problem is compiled once with Q (and parametrized constraints) as cvxpy Parameters and re-solved
per item. Clarabel is the open-source default; SCS and MOSEK (when licensed) are selectable.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from .certificate import Certificate, certify, default_tol, polish

Tensor = torch.Tensor
SOLVERS = ("clarabel", "scs", "mosek")


@dataclass
class SDPSolution:
    """Numpy arrays for one batch: X (B, n, n), duals (B, m), primal/dual values (B,), status."""

    X: np.ndarray
    duals: np.ndarray
    primal: np.ndarray
    dual: np.ndarray
    status: list


def solve_quietly(problem, solver: str, verbose: bool = False, **options) -> tuple[str, str]:
    """Solve a cvxpy problem; (status, error message). cvxpy's "solution may be inaccurate" warning
    is silenced: callers judge the result themselves (status, certificates), and a solver error is
    reported as status "solver_error" instead of raised."""
    import cvxpy as cp

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            problem.solve(solver=solver, verbose=verbose, **options)
        return problem.status, ""
    except cp.error.SolverError as exc:
        return "solver_error", str(exc)


def _solver_options(solver: str, dtype) -> tuple[str, dict]:
    import cvxpy as cp

    solver = solver.lower()
    if solver == "clarabel":
        return cp.CLARABEL, dict(tol_gap_abs=1e-9, tol_gap_rel=1e-9, tol_feas=1e-9, max_iter=100)
    if solver == "scs":
        return cp.SCS, dict(eps_abs=1e-9, eps_rel=1e-9, max_iters=200000)
    if solver == "mosek":
        if cp.MOSEK not in cp.installed_solvers():
            raise ValueError("solver='mosek' requested but MOSEK is not installed (pip install mosek + licence)")
        return cp.MOSEK, {}
    raise ValueError(f"unknown SDP solver {solver!r}; choose one of {SOLVERS}")


class SDPRelaxation:
    """A compiled cvxpy SDP for a QCQP template; ``solve(Q, A)`` loops over the batch.

    Args:
        n: size of x.
        b: right-hand sides (m,) of all constraints (fixed and parametrized).
        fixed_A: (m_fixed, n, n) numpy constraint matrices baked into the problem.
        n_params: number of constraint matrices passed per solve (after the fixed ones).
    """

    def __init__(self, n: int, b: np.ndarray, fixed_A: np.ndarray, n_params: int = 0,
                 solver: str = "clarabel", solver_options: dict | None = None):
        import cvxpy as cp

        self.n, self.b = n, np.asarray(b, dtype=float)
        self.solver, opts = _solver_options(solver, None)
        self.options = {**opts, **(solver_options or {})}
        self.Q = cp.Parameter((n, n), symmetric=True)
        self.A_par = [cp.Parameter((n, n), symmetric=True) for _ in range(n_params)]
        self.X = cp.Variable((n, n), PSD=True)
        mats = [cp.Constant(a) for a in np.asarray(fixed_A)] + self.A_par
        self.cons = [cp.trace(M @ self.X) == bi for M, bi in zip(mats, self.b)]
        self.problem = cp.Problem(cp.Minimize(cp.trace(self.Q @ self.X)), self.cons)

    def solve_one(self, Q: np.ndarray, A_params=()) -> tuple[np.ndarray, np.ndarray, float, str]:
        self.Q.value = 0.5 * (Q + Q.T)
        for P, a in zip(self.A_par, A_params):
            P.value = 0.5 * (a + a.T)
        status, error = solve_quietly(self.problem, self.solver, **self.options)  # the certificate decides
        if error:  # report, do not crash the batch
            return np.full((self.n, self.n), np.nan), np.full(len(self.b), np.nan), np.nan, f"error: {error}"
        if self.X.value is None:
            return np.full((self.n, self.n), np.nan), np.full(len(self.b), np.nan), np.nan, status
        # cvxpy's equality duals y are the multipliers of H = Q + sum_i y_i A_i (checked in the tests).
        duals = np.array([float(np.asarray(c.dual_value).reshape(-1)[0]) for c in self.cons])
        return self.X.value, duals, float(self.problem.value), status

    def solve(self, Q: np.ndarray, A_params: np.ndarray | None = None) -> SDPSolution:
        """Q (B, n, n); A_params (B, k, n, n) or None."""
        out = [self.solve_one(Q[i], () if A_params is None else A_params[i]) for i in range(Q.shape[0])]
        X = np.stack([o[0] for o in out])
        duals = np.stack([o[1] for o in out])
        primal = np.array([o[2] for o in out])
        return SDPSolution(X=X, duals=duals, primal=primal, dual=-(duals @ self.b), status=[o[3] for o in out])


def extract_solution(X: Tensor) -> tuple[Tensor, Tensor]:
    """x from the leading eigenvector of X scaled to x0 = 1, and the rank ratio lambda_1 / lambda_2."""
    ev, V = torch.linalg.eigh(X)
    x = V[..., -1] * ev[..., -1:].clamp_min(0).sqrt()
    x0 = x[..., :1]
    x = x / torch.where(x0.abs() > 1e-12, x0, torch.ones_like(x0))
    ratio = ev[..., -1] / ev[..., -2].abs().clamp_min(torch.finfo(X.dtype).tiny)
    return x, ratio



def solve_and_certify(relax: SDPRelaxation, Q: Tensor, A: Tensor, b: Tensor, A_params: Tensor | None,
                      tol: float | None = None, min_rank_ratio: float = 1e4,
                      min_margin: float | None = None) -> tuple[Tensor, Certificate]:
    """Solve the SDP per item, recover x, and certify it with the SDP duals as multipliers.

    ``Q`` is the unit-norm cost (B, n, n); ``A`` all constraints (B, m, n, n). An item is certified
    only when the solver converged, X is numerically rank one, and the dual certificate checks out.
    """
    tol = default_tol(Q.dtype) if tol is None else tol
    Qn = Q.detach().cpu().double().numpy()
    Pn = None if A_params is None else A_params.detach().cpu().double().numpy()
    sol = relax.solve(Qn, Pn)
    X = torch.as_tensor(np.nan_to_num(sol.X), dtype=Q.dtype, device=Q.device)
    lam = torch.as_tensor(np.nan_to_num(sol.duals), dtype=Q.dtype, device=Q.device)
    x, ratio = extract_solution(X)
    x, lam = polish(Q, A, b, x, lam)
    cert = certify(Q, A, b, x, tol=max(tol, 1e-7), lam=lam, method="sdp", min_margin=min_margin)
    # Solver accuracy limits the dual's PSD-ness to ~1e-8; if the duals miss, least squares may not.
    retry = (~cert.certified).nonzero().flatten()
    if len(retry):
        cert_ls = certify(Q[retry], A[retry], b, x[retry], tol=max(tol, 1e-7), method="sdp",
                          min_margin=min_margin)
        better = cert_ls.certified.nonzero().flatten()
        if len(better):
            cert.update(retry[better], cert_ls.select(better))
    cert.rank_ratio = ratio
    # The certificate is the proof; "optimal_inaccurate" is fine when the certificate checks out.
    ok_status = torch.tensor([s in ("optimal", "optimal_inaccurate") for s in sol.status], device=Q.device)
    low_rank = ratio < min_rank_ratio
    for i in range(len(cert)):
        if cert.certified[i] and not ok_status[i]:
            cert.reason[i] = f"SDP solver status {sol.status[i]}"
        elif cert.certified[i] and low_rank[i]:
            cert.reason[i] = f"relaxation not tight (rank ratio {float(ratio[i]):.1e})"
        elif not cert.certified[i] and not ok_status[i]:
            cert.reason[i] = f"SDP solver status {sol.status[i]}; " + cert.reason[i]
    for i in (~cert.certified & low_rank).nonzero().flatten().tolist():
        cert.reason[i] = f"relaxation not tight (rank ratio {float(ratio[i]):.1e}); " + cert.reason[i]
    cert.certified &= ok_status & ~low_rank
    return x, cert
