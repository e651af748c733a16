"""Certificate of ONE candidate in numpy/LAPACK: the batch-1 path of :func:`certify`.

A node certifies one frame at a time; there torch's per-operation overhead costs more than the
arithmetic (two 13 x 13 symmetric eigenvalue problems and a few small products). Same
formulas, tolerances and reasons (``certificate_checks``) as the batched :func:`certify`. The
multiplier search that a failed first try triggers there (``refine_multipliers``) is done
here in numpy (the exact search of ``refine_multipliers``'s few-item case); when that still
leaves no certificate ``certify_one`` returns None and the caller takes the batched path (restarts,
SDP), so the verdict is the same.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.linalg import lapack

from .certificate import Certificate, certificate_checks, tangent_rtol


@dataclass(frozen=True)
class TemplateArrays:
    """A constraint template laid out for single-item numpy products (built once per QCQP).

    rows ``(m n, n)``: ``(rows @ x).reshape(m, n)`` is G, whose row i is (A_i x)^T.
    lin ``(m, n n)``: ``(l @ lin).reshape(n, n)`` is sum_i l_i A_i.
    """

    rows: np.ndarray
    lin: np.ndarray
    b: np.ndarray

    @classmethod
    def of(cls, A: torch.Tensor, b: torch.Tensor) -> "TemplateArrays":
        """From the template's ``A (m, n, n)`` and ``b (m,)``."""
        m, n = A.shape[0], A.shape[-1]
        An = np.ascontiguousarray(A.detach().cpu().double().numpy())
        return cls(rows=An.reshape(m * n, n), lin=An.reshape(m, n * n),
                   b=b.detach().cpu().double().numpy().copy())


@dataclass
class SingleCertificate:
    """One item's certificate quantities (unit-norm cost units) and the eigenpairs of G^T G it used.

    ``e (n,)``, ``V (n, n)``: as ``gram_eig``; the columns of V whose e is ~0 span the tangent space of
    the feasible set at x, which the KKT backward needs again.
    """

    certified: bool
    reason: str
    min_eig: float
    margin: float
    gap: float
    residual: float
    violation: float
    multipliers: np.ndarray
    e: np.ndarray
    V: np.ndarray

    def to_certificate(self, method: str = "local") -> Certificate:
        """The batched ``Certificate`` with B = 1 (float64 tensors on the CPU)."""
        vals = np.array([[self.min_eig], [self.margin], [self.gap], [np.nan], [self.residual], [self.violation]])
        min_eig, margin, gap, rank_ratio, residual, violation = torch.from_numpy(vals).unbind(0)  # (1,) each
        return Certificate(certified=torch.tensor([self.certified]), min_eig=min_eig, margin=margin, gap=gap,
                           rank_ratio=rank_ratio, multipliers=torch.from_numpy(self.multipliers).unsqueeze(0),
                           method=[method], residual=residual, violation=violation, reason=[self.reason])


def certify_one(Q: np.ndarray, x: np.ndarray, template: TemplateArrays, tol: float,
                min_margin: float | None = None) -> SingleCertificate | None:
    """Certificate for one candidate ``x (n,)`` of min x^T Q x s.t. x^T A_i x = b_i; ``Q (n, n)`` unit norm.

    Returns None when the least-squares multipliers leave H with a negative eigenvalue: then the
    batched :func:`certify` searches the multiplier family, which this path does not repeat.
    """
    n = x.shape[0]
    m = template.b.shape[0]
    G = (template.rows @ x).reshape(m, n)
    violation = float(np.abs(G @ x - template.b).max())
    e, V, info = lapack.dsyevd(G.T @ G)  # as gram_eig: ascending eigenpairs of G^T G
    if info != 0:
        return None
    keep = e > tangent_rtol(torch.float64) * max(e[-1], np.finfo(e.dtype).tiny)
    einv = np.where(keep, 1.0 / np.maximum(e, np.finfo(e.dtype).tiny), 0.0)
    lam = G @ (V @ (einv * (V.T @ -(Q @ x))))  # min-norm solution of sum_i l_i A_i x = -Q x
    H = Q + (lam @ template.lin).reshape(n, n)
    ev, _, info = lapack.dsyevd(H, compute_v=0)
    if info != 0:
        return None
    if ev[0] < -tol or ev[1] < (tol if min_margin is None else min_margin):
        found = _family_search(Q, G, x, lam, template.lin, tol)   # redundant constraints: other multipliers
        if found is not None:
            lam = found
            H = Q + (lam @ template.lin).reshape(n, n)
            ev, _, info = lapack.dsyevd(H, compute_v=0)
    if info != 0 or ev[0] < -tol:
        return None
    xnorm = max(float(np.linalg.norm(x)), 1e-30)
    Hx = H @ x
    residual = float(np.linalg.norm(Hx)) / xnorm
    gap = float(x @ Hx) / xnorm**2
    margin = float(ev[1] if n > 1 else ev[0])
    reason = ""
    for bad, msg, val in certificate_checks(violation, float(ev[0]), margin, residual, tol, min_margin):
        if bad:
            reason = msg.format(val)
            break
    return SingleCertificate(certified=not reason, reason=reason, min_eig=float(ev[0]), margin=margin,
                             gap=gap, residual=residual, violation=violation, multipliers=lam, e=e, V=V)


def _family_search(Q: np.ndarray, G: np.ndarray, x: np.ndarray, lam: np.ndarray, lin: np.ndarray,
                   tol: float) -> np.ndarray | None:
    """Multipliers of the family ``lam + basis w`` (null space of G^T) whose Lagrangian is the most
    positive off x (``refine_multipliers``' exact search for a few items); None when there is no
    family or nothing to gain (then the batched path decides)."""
    from .psd_multipliers import best_family_member_np

    n, m = x.shape[0], G.shape[0]
    _, S, Vh = np.linalg.svd(G.T, full_matrices=True)
    free = np.ones(m, dtype=bool)
    free[:len(S)] = ~(S * S > tangent_rtol(torch.float64) * max(S[0] ** 2, np.finfo(np.float64).tiny))
    basis = Vh.T[:, free]                                            # (m, K)
    if basis.shape[1] == 0:
        return None
    xn = x / np.linalg.norm(x)
    P = np.eye(n) - np.outer(xn, xn)
    M = P @ (basis.T @ lin).reshape(-1, n, n) @ P
    H0 = P @ (Q + (lam @ lin).reshape(n, n)) @ P + np.outer(xn, xn)    # x direction parked at 1
    ev0 = float(np.linalg.eigvalsh(H0)[0])
    if ev0 >= 2 * tol:
        return None
    w, t = best_family_member_np(H0, M, x)
    return lam + basis @ w if t > ev0 else None
