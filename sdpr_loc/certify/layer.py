"""SDPRLayer: a certifiably globally optimal, differentiable QCQP layer.

Forward: fast batched local solve -> multipliers -> certificate; items that fail (or all items, without
a local solver) go to the SDP relaxation. Backward: implicit differentiation of the QCQP's KKT system at
the certified optimum, batched in torch on the tensors' device.
"""
from __future__ import annotations

from typing import Callable

import torch

from .certificate import (Certificate, certify_with_tangent, default_tol, gram_eig, lagrangian, stationarity_rows,
                          tangent_rtol)
from .qcqp import QCQP
from .sdp import SDPRelaxation, solve_and_certify
from .single import TemplateArrays, certify_one

Tensor = torch.Tensor
LocalSolver = Callable[[Tensor, Tensor, Tensor], Tensor]
POLICIES = ("mask", "raise", "sdp")


def kkt_adjoint(H: Tensor, G: Tensor, g: Tensor, rel_tol: float, need_v: bool = True,
                eig: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor | None]:
    """Solve [[H, G^T], [G, 0]] [u; v] = [g; 0] for a batch, tolerating dependent rows of G.

    u lives in the null space N of G (the tangent space of the feasible set), found from the
    eigenvectors of G^T G: u = N (N^T H N)^-1 N^T g. v (needed only for gradients w.r.t. constraint
    matrices) is the min-norm solution of G^T v = g - H u, i.e. v = G (G^T G)^+ (g - H u).
    ``eig``: ``gram_eig(G)`` when the forward has it already (the certificate computes it).
    """
    e, V = gram_eig(G) if eig is None else eig  # e ~ 0: tangent space
    tangent = e <= rel_tol * e[..., -1:].clamp_min(torch.finfo(e.dtype).tiny)
    t = tangent.to(H.dtype)
    Ht = V.transpose(-1, -2) @ H @ V
    Ht = Ht * t.unsqueeze(-1) * t.unsqueeze(-2) + torch.diag_embed(1.0 - t)
    y = torch.linalg.solve(Ht, (V.transpose(-1, -2) @ g.unsqueeze(-1)).squeeze(-1) * t)
    u = (V @ (y * t).unsqueeze(-1)).squeeze(-1)
    if not need_v:
        return u, None
    rhs = g - (H @ u.unsqueeze(-1)).squeeze(-1)
    einv = torch.where(tangent, torch.zeros_like(e), 1.0 / e.clamp_min(torch.finfo(e.dtype).tiny))
    w = V @ (einv * (V.transpose(-1, -2) @ rhs.unsqueeze(-1)).squeeze(-1)).unsqueeze(-1)
    return u, (G @ w).squeeze(-1)


class _KKTFunction(torch.autograd.Function):
    """x = argmin as a function of Q and the constraint matrices; gradients by the KKT adjoint."""

    @staticmethod
    def forward(ctx, x, lam, mask, Q, A, e, V):
        ctx.save_for_backward(x, lam, mask, Q, A, e, V)
        return x.clone()

    @staticmethod
    def backward(ctx, grad_x):
        x, lam, mask, Q, A, e, V = ctx.saved_tensors
        H = lagrangian(Q, A, lam)
        # masked (uncertified) items get no gradient: an identity Hessian keeps their solve regular
        eye = torch.eye(H.shape[-1], dtype=H.dtype, device=H.device).expand_as(H)
        H = torch.where(mask.reshape(-1, 1, 1).to(torch.bool), H, eye)
        G = stationarity_rows(A, x)
        rel_tol = tangent_rtol(x.dtype)  # on squared singular values
        need_A = ctx.needs_input_grad[4]
        u, v = kkt_adjoint(H, G, grad_x * mask.unsqueeze(-1).to(x.dtype), rel_tol, need_v=need_A, eig=(e, V))
        ux = u.unsqueeze(-1) * x.unsqueeze(-2)
        dQ = -0.5 * (ux + ux.transpose(-1, -2))
        dA = None
        if need_A:
            xx = x.unsqueeze(-1) * x.unsqueeze(-2)
            dA = lam[..., None, None] * dQ.unsqueeze(1) - 0.5 * v[..., None, None] * xx.unsqueeze(1)
        return None, None, None, dQ, dA, None, None


class SDPRLayer(torch.nn.Module):
    """Certified global minimiser of  x^T Q x  s.t.  x^T A_i x = b_i  with x = [1, z].

    Args:
        qcqp: the constraint template (``QCQP``).
        local_solver: optional ``f(Q (B,n,n), A (B,m,n,n), b (m,)) -> x (B,n)`` feasible candidates,
            usually a fast batched local method; its results are certified before use.
        solver: SDP solver for uncertified items: "clarabel" (default), "scs" or "mosek".
        tol: certificate tolerance on the unit-norm cost (default 1e-7 float64, 1e-4 float32).
        uncertified: "mask" (return the best x, flag it, zero its gradient), "raise" (RuntimeError),
            or "sdp" (keep the SDP solution and differentiate the KKT system there anyway).
        use_sdp: fall back to the SDP for items the local solver could not certify.
        restarts: optional ``f(Q, A, b, x_failed) -> (B', K, n)`` more candidates for the items whose
            first candidate was not certified (e.g. rotations flipped by 180 degrees); the
            certified one with the lowest cost is kept.
        min_margin: smallest second eigenvalue of H for a unique (certified) minimiser; default tol.

    ``forward(Q (B,n,n), *A_params, **local_kwargs) -> (x (B,n), Certificate)``; Q and A_params may
    require grad; ``local_kwargs`` (e.g. an initial guess) go to the local solver.
    """

    def __init__(self, qcqp: QCQP, local_solver: LocalSolver | None = None, solver: str = "clarabel",
                 tol: float | None = None, uncertified: str = "mask", use_sdp: bool = True,
                 solver_options: dict | None = None, restarts: Callable | None = None,
                 min_margin: float | None = None):
        super().__init__()
        self.restarts, self.min_margin = restarts, min_margin
        if uncertified not in POLICIES:
            raise ValueError(f"uncertified must be one of {POLICIES}, got {uncertified!r}")
        self.qcqp, self.local_solver, self.tol = qcqp, local_solver, tol
        self.uncertified, self.use_sdp = uncertified, use_sdp
        self.solver, self.solver_options = solver, solver_options
        self._relax: SDPRelaxation | None = None
        self._arrays: TemplateArrays | None = None
        if solver not in ("clarabel", "scs", "mosek"):
            raise ValueError(f"unknown SDP solver {solver!r}; choose clarabel, scs or mosek")

    @property
    def relaxation(self) -> SDPRelaxation:
        """The compiled SDP (built on first use: compiling costs ~100 ms)."""
        if self._relax is None:
            q = self.qcqp
            b = torch.cat([q.b, torch.tensor(q.param_b, dtype=q.b.dtype)]).numpy()
            self._relax = SDPRelaxation(q.n, b, q.A.double().numpy(), q.n_params, self.solver,
                                        self.solver_options)
        return self._relax

    @property
    def template_arrays(self) -> TemplateArrays:
        """The constraint template in numpy, for single-problem certificates (built once)."""
        if self._arrays is None:
            self._arrays = TemplateArrays.of(self.qcqp.A, self.qcqp.b)
        return self._arrays

    def _certify(self, Qs: Tensor, A: Tensor, b: Tensor, x: Tensor, tol: float):
        """``certify_with_tangent``; one float64 CPU problem goes through numpy (``certify_one``), which
        hands back to the batched function whenever that one would search the multipliers."""
        if x.shape[0] == 1 and x.dtype == torch.float64 and x.device.type == "cpu" and A.shape[1] == self.qcqp.m:
            one = certify_one(Qs[0].numpy(), x[0].numpy(), self.template_arrays, tol, self.min_margin)
            if one is not None:
                return one.to_certificate(), (torch.from_numpy(one.e)[None], torch.from_numpy(one.V)[None])
        return certify_with_tangent(Qs, A, b, x, tol=tol, min_margin=self.min_margin)

    def _restart(self, Qs: Tensor, A: Tensor, b: Tensor, x: Tensor, cert: Certificate, tol: float,
                 eig: tuple[Tensor, Tensor]) -> Tensor:
        """Replace uncertified items by the best certified restart candidate (in place on cert and eig)."""
        todo = (~cert.certified).nonzero().flatten()
        if not len(todo):
            return x
        cand = self.restarts(Qs[todo], A[todo], b, x[todo])  # (T, K, n)
        T, K, n = cand.shape
        flat = cand.reshape(T * K, n)
        rep = lambda M: M.repeat_interleave(K, 0)  # noqa: E731
        c2, eig2 = certify_with_tangent(rep(Qs[todo]), rep(A[todo]), b, flat, tol=tol, min_margin=self.min_margin)
        cost = torch.einsum("bi,bij,bj->b", flat, rep(Qs[todo]), flat)
        cost = torch.where(c2.certified, cost, torch.full_like(cost, float("inf"))).view(T, K)
        best = cost.argmin(-1)
        won = torch.isfinite(cost.gather(1, best[:, None]).squeeze(1))
        pick = (torch.arange(T, device=x.device) * K + best)[won]
        x = x.clone()
        x[todo[won]] = flat[pick]
        cert.update(todo[won], c2.select(pick))
        for mine, theirs in zip(eig, eig2):
            mine[todo[won]] = theirs[pick]
        return x

    @staticmethod
    def _tangent(A: Tensor, x: Tensor, eig: tuple[Tensor, Tensor] | None, redo: Tensor) -> tuple[Tensor, Tensor]:
        """Eigenpairs of G^T G at the returned x for the backward: the certificate's, recomputed for ``redo``."""
        if eig is None or len(redo) == x.shape[0]:
            return gram_eig(stationarity_rows(A, x))
        e, V = eig
        if len(redo):
            e, V = e.clone(), V.clone()
            e[redo], V[redo] = gram_eig(stationarity_rows(A[redo], x[redo]))
        return e, V

    def forward(self, Q: Tensor, *A_params: Tensor, **local_kwargs) -> tuple[Tensor, Certificate]:
        Q = self.qcqp.check_cost(Q)
        B = Q.shape[0]
        A, b = self.qcqp.constraints(A_params, B, Q.dtype, Q.device)
        tol = default_tol(Q.dtype) if self.tol is None else self.tol
        scale = Q.detach().flatten(1).norm(dim=-1).clamp_min(torch.finfo(Q.dtype).tiny)
        Qs = Q.detach() / scale.view(-1, 1, 1)
        Ad = A.detach()
        x = cert = eig = None
        sdp_items = torch.arange(B, device=Q.device)  # items whose x came from the SDP (no eigenpairs yet)
        if self.local_solver is not None:
            x = self.local_solver(Qs, Ad, b, **local_kwargs).detach()
            if x.shape != (B, self.qcqp.n):
                raise ValueError(f"local_solver returned shape {tuple(x.shape)}, expected {(B, self.qcqp.n)}")
            sdp_items = sdp_items[:0]
            cert, eig = self._certify(Qs, Ad, b, x, tol)
            if self.restarts is not None:
                x = self._restart(Qs, Ad, b, x, cert, tol, eig)
        todo = (torch.arange(B, device=Q.device) if cert is None
                else (~cert.certified).nonzero().flatten())
        if len(todo) and (self.use_sdp or cert is None):
            P = Ad[todo, self.qcqp.m:] if A_params else None  # parametrized constraints, batched
            x_sdp, cert_sdp = solve_and_certify(self.relaxation, Qs[todo], Ad[todo], b, P, tol=tol,
                                                min_margin=self.min_margin)
            if cert is None:
                x, cert = x_sdp, cert_sdp
            else:
                use = cert_sdp.certified | ~torch.isfinite(x[todo]).all(-1)
                x = x.clone()
                x[todo[use]] = x_sdp[use]
                sdp_items = todo[use]
                cert.update(todo[use], cert_sdp.select(use.nonzero().flatten()))
                keep = (~use).nonzero().flatten()
                for i in todo[keep].tolist():
                    cert.reason[i] = cert.reason[i] + "; SDP did not certify either"
        bad = (~cert.certified).nonzero().flatten().tolist()
        if bad and self.uncertified == "raise":
            details = "; ".join(f"item {i}: {cert.reason[i]}" for i in bad[:5])
            raise RuntimeError(f"{len(bad)} of {B} items not certified ({details})")
        # a copy: callers may revoke certificates in place afterwards (register does for degenerate data)
        mask = cert.certified.clone() if self.uncertified != "sdp" else torch.ones_like(cert.certified)
        lam = cert.multipliers * scale.unsqueeze(-1)  # multipliers of the unscaled cost
        if Q.requires_grad or A.requires_grad:
            e, V = self._tangent(Ad, x, eig, sdp_items)
            x = _KKTFunction.apply(x, lam.detach(), mask, Q, A, e, V)
        return x, cert
