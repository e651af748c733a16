"""Optimality certificates for homogenized QCQPs.

A feasible x is the GLOBAL minimiser when there are multipliers l with H = Q + sum_i l_i A_i PSD and
H x = 0 (then x^T Q x = -l^T b is also the optimal value of the dual SDP, so the duality gap is 0).
Multipliers come from least squares on stationarity; when redundant constraints leave a family of
valid multipliers, the family is searched for a PSD member (``refine_multipliers``).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch

from .psd_multipliers import best_family_member

Tensor = torch.Tensor


def default_tol(dtype: torch.dtype) -> float:
    """Certificate tolerance in units of the unit-norm cost (float64: 1e-7, float32: 1e-4)."""
    return 1e-7 if dtype == torch.float64 else 1e-4


@dataclass
class Certificate:
    """Per-item optimality certificate; tensors are batched ``(B,)`` unless noted.

    Attributes:
        certified: bool, True only when H is PSD (min_eig >= -tol), H x ~ 0 and x is feasible.
        min_eig: smallest eigenvalue of H (unit-norm cost units).
        margin: second-smallest eigenvalue of H: how far from losing the certificate.
        gap: duality-gap estimate x^T H x = x^T Q x + l^T b (unit-norm cost units).
        rank_ratio: lambda_1 / lambda_2 of the SDP solution X (large = rank 1); NaN if no SDP.
        multipliers: ``(B, m)`` Lagrange multipliers (of the unit-norm cost).
        method: "local" or "sdp" per item.
        residual: |H x| / |x|, stationarity residual.
        violation: max_i |x^T A_i x - b_i|.
        reason: why an item is not certified ("" when it is).
        verified: (B,) bool, set by ``verify.verify_certificate`` (None until asked): optimality proven in
            exact arithmetic for the float data, up to ``proven_gap``.
        proven_gap: (B,) rigorous bound on the cost of an exactly feasible point near x minus the
            global minimum (unit-norm cost units; inf where nothing was proven).
    """

    certified: Tensor
    min_eig: Tensor
    margin: Tensor
    gap: Tensor
    rank_ratio: Tensor
    multipliers: Tensor
    method: list = field(default_factory=list)
    residual: Tensor | None = None
    violation: Tensor | None = None
    reason: list = field(default_factory=list)
    verified: Tensor | None = None
    proven_gap: Tensor | None = None

    def __len__(self) -> int:
        return self.certified.shape[0]

    def select(self, idx) -> "Certificate":
        """Sub-batch by index tensor/list."""
        idx = torch.as_tensor(idx, dtype=torch.long).flatten()
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                out[f.name] = v[idx.to(v.device)]
            elif isinstance(v, list):
                out[f.name] = [v[i] for i in idx.tolist()]
            else:
                out[f.name] = v
        return Certificate(**out)

    def update(self, idx, other: "Certificate") -> None:
        """Overwrite items ``idx`` with those of ``other`` (same order)."""
        idx = torch.as_tensor(idx, dtype=torch.long).flatten()
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if isinstance(mine, torch.Tensor) and theirs is None:  # e.g. unverified items: unknown
                mine[idx.to(mine.device)] = False if mine.dtype == torch.bool else float("nan")
            elif isinstance(mine, torch.Tensor):
                mine[idx.to(mine.device)] = theirs.to(mine.device, mine.dtype)
            elif isinstance(mine, list):
                for j, i in enumerate(idx.tolist()):
                    mine[i] = theirs[j]

    def summary(self) -> str:
        n = len(self)
        k = int(self.certified.sum())
        return (f"{k}/{n} certified; min_eig >= {float(self.min_eig.min()):.2e}, "
                f"median margin {float(self.margin.median()):.2e}, max gap {float(self.gap.abs().max()):.2e}")


def _shared(A: Tensor) -> bool:
    """True when every batch item uses the same constraint matrices (a template expanded over B)."""
    return A.shape[0] == 1 or A.stride(0) == 0


def stationarity_rows(A: Tensor, x: Tensor) -> Tensor:
    """G with rows (A_i x)^T: ``(B, m, n)``; half the constraint gradients."""
    if _shared(A):  # one matmul with the template instead of a batched contraction
        m, n = A.shape[1], A.shape[-1]
        return (x @ A[0].reshape(m * n, n).T).view(x.shape[0], m, n)
    return torch.einsum("bkij,bj->bki", A, x)


def lagrangian(Q: Tensor, A: Tensor, lam: Tensor) -> Tensor:
    """H = Q + sum_i l_i A_i, ``(B, n, n)``."""
    if _shared(A):
        n = A.shape[-1]
        return Q + (lam @ A[0].reshape(A.shape[1], n * n)).view(-1, n, n)
    return Q + torch.einsum("bk,bkij->bij", lam, A)


def tangent_rtol(dtype: torch.dtype) -> float:
    """Relative size below which an eigenvalue of G^T G counts as zero (a squared singular value)."""
    return 1e-12 if dtype == torch.float64 else 1e-6


def gram_eig(G: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenpairs (e (B, n) ascending, V (B, n, n)) of G^T G: e ~ 0 spans the tangent space at x, the
    rest gives the pseudo-inverse of G^T. A 13 x 13 eigh instead of an SVD of G^T (n x m): ~4x cheaper.
    Squaring G squares its condition number, so lower precisions are decomposed in float64."""
    Gd = G if G.dtype == torch.float64 else G.double()
    e, V = torch.linalg.eigh(Gd.transpose(-1, -2) @ Gd)
    return e.to(G.dtype), V.to(G.dtype)


def least_squares_multipliers(Q: Tensor, A: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """Min-norm l solving sum_i l_i A_i x = -Q x, and a basis ``(B, m, m)`` of the other solutions.

    The basis spans the null space of G^T (redundant constraints): its columns are zero where the
    direction is not free, so items with different redundancy share one batched tensor.
    """
    G = stationarity_rows(A, x)
    return _min_norm_multipliers(Q, G, x, gram_eig(G)), _multiplier_family(G)


def _min_norm_multipliers(Q: Tensor, G: Tensor, x: Tensor, eig: tuple[Tensor, Tensor]) -> Tensor:
    """l = (G^T)^+ (-Q x) = G (G^T G)^+ (-Q x), with the eigenpairs of G^T G."""
    e, V = eig
    keep = e > tangent_rtol(x.dtype) * e[..., -1:].clamp_min(torch.finfo(e.dtype).tiny)
    einv = torch.where(keep, 1.0 / e.clamp_min(torch.finfo(e.dtype).tiny), torch.zeros_like(e))
    rhs = -(Q @ x.unsqueeze(-1))
    return (G @ (V @ (einv.unsqueeze(-1) * (V.transpose(-1, -2) @ rhs)))).squeeze(-1)


def _multiplier_family(G: Tensor) -> Tensor:
    """Basis ``(B, m, m)`` of the null space of G^T (zero columns where not free), from its SVD."""
    U, S, Vh = torch.linalg.svd(G.transpose(-1, -2), full_matrices=True)  # G^T = U S Vh
    r = S.shape[-1]
    keep = S * S > tangent_rtol(G.dtype) * (S[..., :1] ** 2).clamp_min(torch.finfo(S.dtype).tiny)  # as gram_eig
    V = Vh.transpose(-1, -2)
    free = torch.ones(G.shape[0], V.shape[-1], dtype=torch.bool, device=G.device)
    free[:, :r] = ~keep
    return V * free.unsqueeze(-2).to(G.dtype)


def refine_multipliers(Q: Tensor, A: Tensor, x: Tensor, lam: Tensor, basis: Tensor, tol: float = 0.0,
                       iters: int = 60, beta: float = 200.0, exact_below: float = 1e-3,
                       exact_batch: int = 4) -> Tensor:
    """Search the multiplier family lam + basis @ w for a PSD H (maximise a soft minimum eigenvalue).

    Every member satisfies H x = 0, so only the eigenvalues on the complement of x matter. The soft
    minimum is concave-ish and smooth; gradient ascent with backtracking converges in a few dozen steps
    for the small families that redundant constraints create. Items stop once the smallest eigenvalue
    off x is >= 2 tol (certify needs that margin), and only the items still searching are computed.
    Items left with a smallest eigenvalue in (-exact_below, 2 tol) get the exact search
    (:func:`~sdpr_loc.certify.psd_multipliers.best_family_member`). At most
    ``exact_batch`` items to refine (a tracker's one registration) go to the exact search directly: at ~3-5 ms
    an item it is faster than the first-order search (12 ms on average, up to ~50 ms, measured on
    the night demo drive) and never worse.
    """
    B, m, K = basis.shape
    if K == 0 or not bool((basis.abs().sum((-1, -2)) > 0).any()):
        return lam
    xn = x / x.norm(dim=-1, keepdim=True)
    P = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device) - xn.unsqueeze(-1) * xn.unsqueeze(-2)
    M = torch.einsum("bmk,bmij->bkij", basis, A)  # directions of H in the family
    M = P.unsqueeze(1) @ M @ P.unsqueeze(1)
    H0 = P @ lagrangian(Q, A, lam) @ P + xn.unsqueeze(-1) * xn.unsqueeze(-2)  # x direction parked at 1
    ev0 = torch.linalg.eigvalsh(H0)[:, 0]
    w = torch.zeros(B, K, dtype=x.dtype, device=x.device)

    def exact(items: Tensor, ev_min: Tensor) -> Tensor:
        """The family's best member for ``items``, kept where it beats the current one."""
        for i in items.nonzero().flatten().tolist():
            w_i, t_i = best_family_member(H0[i], M[i], x[i])
            if t_i > float(ev_min[i]):
                w[i] = w_i
        return lam + torch.einsum("bmk,bk->bm", basis, w)

    if B <= exact_batch:   # few items: each straight to the exact search
        return exact(ev0 < 2 * tol, ev0)

    # soft-min sharpness per item: beta on unit-scale spectra, sharper where the negative eigenvalue
    # is small (a badly scaled problem whose relevant eigenvalues are all ~1e-6 would otherwise be
    # averaged instead of minimised)
    sharp = torch.clamp(20.0 / (-ev0).clamp_min(max(tol, torch.finfo(x.dtype).tiny)), min=beta)

    def objective(w, idx):
        H = H0[idx] + torch.einsum("bk,bkij->bij", w, M[idx])
        ev, V = torch.linalg.eigh(H)
        b = sharp[idx].unsqueeze(-1)
        return -torch.logsumexp(-b * ev, -1) / b.squeeze(-1), ev, V

    f, ev, V = objective(w, torch.arange(B, device=x.device))
    step = torch.ones(B, dtype=x.dtype, device=x.device)
    for _ in range(iters):
        act = (ev[:, 0] < 2 * tol).nonzero().flatten()  # certify also needs a margin >= tol
        if not len(act):
            break
        p = torch.softmax(-sharp[act].unsqueeze(-1) * ev[act], -1)
        grad = torch.einsum("bj,bij,bkil,blj->bk", p, V[act], M[act], V[act])
        direction = grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-30)
        for _ in range(20):  # backtracking: items that did not improve halve their step
            w_new = w[act] + step[act].unsqueeze(-1) * direction
            f_new, ev_new, V_new = objective(w_new, act)
            better = f_new > f[act]
            up = act[better]
            w[up], f[up], ev[up], V[up] = w_new[better], f_new[better], ev_new[better], V_new[better]
            step[act] = torch.where(better, step[act] * 1.5, step[act] * 0.5)
            keep = ~better & (step[act] >= 1e-12)
            act, direction = act[keep], direction[keep]
            if not len(act):
                break
    # near misses (small negative eigenvalues: a badly scaled problem, not a wrong minimum) get the
    # exact search; gross failures (e.g. a rotation flipped by 180 degrees) are left as they are
    return exact((ev[:, 0] < 2 * tol) & (ev[:, 0] > -exact_below), ev[:, 0])


def polish(Q: Tensor, A: Tensor, b: Tensor, x: Tensor, lam: Tensor, steps: int = 3) -> tuple[Tensor, Tensor]:
    """Newton steps on the KKT equations H(l) x = 0, x^T A_i x = b_i (min-norm, so redundant rows are
    fine). SDP solvers stop at ~1e-9 accuracy; a tight solution then gets back to machine precision.
    Steps that do not reduce the KKT residual are rejected, so non-tight items are left alone.
    """
    def residual(x, lam):
        r1 = (lagrangian(Q, A, lam) @ x.unsqueeze(-1)).squeeze(-1)
        r2 = 0.5 * (torch.einsum("bi,bkij,bj->bk", x, A, x) - b)
        return torch.cat([r1, r2], -1)

    n = x.shape[-1]
    r = residual(x, lam)
    for _ in range(steps):
        G = stationarity_rows(A, x)
        K = torch.cat([torch.cat([lagrangian(Q, A, lam), G.transpose(-1, -2)], -1),
                       torch.cat([G, torch.zeros(G.shape[0], G.shape[1], G.shape[1], dtype=x.dtype,
                                                 device=x.device)], -1)], -2)
        step = -(torch.linalg.pinv(K, rtol=1e-12 if x.dtype == torch.float64 else 1e-6,
                                   hermitian=True) @ r.unsqueeze(-1)).squeeze(-1)
        x_new, lam_new = x + step[:, :n], lam + step[:, n:]
        x_new = x_new / x_new[:, :1]
        r_new = residual(x_new, lam_new)
        better = r_new.norm(dim=-1) < r.norm(dim=-1)
        x = torch.where(better.unsqueeze(-1), x_new, x)
        lam = torch.where(better.unsqueeze(-1), lam_new, lam)
        r = torch.where(better.unsqueeze(-1), r_new, r)
    return x, lam


def certificate_checks(violation, min_eig, margin, residual, tol: float, min_margin: float | None) -> list:
    """The conditions of a certificate, in the order their reasons are reported: (failed, message, value).

    Works elementwise on torch tensors ``(B,)`` or numpy values, so every path applies the same rules.
    """
    return [
        (violation > 1e3 * tol, "x infeasible (constraint violation {:.1e})", violation),
        (min_eig < -tol, "H not PSD (min eigenvalue {:.1e})", min_eig),
        (residual > 1e2 * tol, "not stationary (|Hx|/|x| = {:.1e})", residual),
        (margin < (tol if min_margin is None else min_margin), "minimiser not unique (margin {:.1e})", margin),
    ]


def certify(Q: Tensor, A: Tensor, b: Tensor, x: Tensor, tol: float | None = None,
            lam: Tensor | None = None, method: str = "local", refine: bool = True,
            min_margin: float | None = None) -> Certificate:
    """Certificate for candidate solutions ``x (B, n)``; see :func:`certify_with_tangent`."""
    return certify_with_tangent(Q, A, b, x, tol, lam, method, refine, min_margin)[0]


def certify_with_tangent(Q: Tensor, A: Tensor, b: Tensor, x: Tensor, tol: float | None = None,
                         lam: Tensor | None = None, method: str = "local", refine: bool = True,
                         min_margin: float | None = None) -> tuple[Certificate, tuple[Tensor, Tensor] | None]:
    """Certificate for candidate solutions ``x (B, n)`` of min x^T Q x s.t. x^T A_i x = b_i.

    ``Q (B, n, n)`` should be scaled to unit norm (``tol`` is in those units); ``A (B, m, n, n)``.
    When ``lam`` is given (e.g. SDP duals) it is used as is, otherwise least-squares multipliers.
    ``min_margin`` (default ``tol``): a smaller second eigenvalue of H means the minimiser is not
    unique (e.g. degenerate data), so x is not certified as THE solution and has no gradient.
    Also returns ``gram_eig(G)`` found on the way (None when ``lam`` is given): its ~0 eigenvalues span
    the tangent space that the KKT backward works in.
    """
    tol = default_tol(x.dtype) if tol is None else tol
    x = x.detach()
    Q, A = Q.detach(), A.detach()
    B = x.shape[0]
    G = stationarity_rows(A, x)
    violation = ((G @ x.unsqueeze(-1)).squeeze(-1) - b).abs().amax(-1)  # x^T A_i x = (A_i x)^T x
    given = lam is not None
    tangent = None
    if not given:
        tangent = gram_eig(G)
        lam = _min_norm_multipliers(Q, G, x, tangent)
    H = lagrangian(Q, A, lam)
    ev = torch.linalg.eigvalsh(H)
    need = tol if min_margin is None else min_margin
    bad = ((ev[:, 0] < -tol) | (ev[:, 1] < need)).nonzero().flatten()  # not PSD, or no margin yet
    if refine and not given and len(bad):
        lam = lam.clone()
        lam[bad] = refine_multipliers(Q[bad], A[bad], x[bad], lam[bad], _multiplier_family(G[bad]), tol=tol)
        H = lagrangian(Q, A, lam)
        ev = ev.clone()
        ev[bad] = torch.linalg.eigvalsh(H[bad])
    xnorm = x.norm(dim=-1).clamp_min(1e-30)
    residual = (H @ x.unsqueeze(-1)).squeeze(-1).norm(dim=-1) / xnorm
    gap = torch.einsum("bi,bij,bj->b", x, H, x) / xnorm**2
    checks = certificate_checks(violation, ev[:, 0], ev[:, 1] if ev.shape[-1] > 1 else ev[:, 0], residual,
                                tol, min_margin)
    failed = torch.stack([bad for bad, _, _ in checks])  # (4, B)
    certified = ~failed.any(0)
    reason = [""] * B
    if not bool(certified.all()):  # reasons: the first failed check of each item
        done = torch.zeros_like(certified)
        for bad, msg, val in checks:
            for i in (bad & ~done).nonzero().flatten().tolist():
                reason[i] = msg.format(float(val[i]))
            done |= bad
    margin = ev[:, 1] if ev.shape[-1] > 1 else ev[:, 0]
    return Certificate(certified=certified, min_eig=ev[:, 0], margin=margin, gap=gap,
                       rank_ratio=torch.full((B,), float("nan"), dtype=x.dtype, device=x.device),
                       multipliers=lam, method=[method] * B, residual=residual,
                       violation=violation, reason=reason), tangent
