"""Homogenized QCQPs: min x^T Q x  s.t.  x^T A_i x = b_i,  x = [1, z].

The first constraint is always the homogenizing one, x0^2 = 1 (A_0 = e0 e0^T, b_0 = 1). Constraints
flagged ``redundant`` are implied by the others on the feasible set; they do not change the problem
but often make its semidefinite relaxation tight.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

Tensor = torch.Tensor


def check_matrices(name: str, M: Tensor, n: int | None = None, batch: int | None = None,
                   sym_tol: float = 1e-9) -> Tensor:
    """Validate a batch of square symmetric finite matrices ``(B, n, n)`` (or ``(n, n)``)."""
    if not isinstance(M, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(M).__name__}")
    if M.dim() == 2:
        M = M.unsqueeze(0)
    if M.dim() != 3 or M.shape[-1] != M.shape[-2]:
        raise ValueError(f"{name} must have shape (B, n, n) or (n, n), got {tuple(M.shape)}")
    if n is not None and M.shape[-1] != n:
        raise ValueError(f"{name} must be {n}x{n} to match the QCQP, got {tuple(M.shape[-2:])}")
    if batch is not None and M.shape[0] not in (1, batch):
        raise ValueError(f"{name} has batch size {M.shape[0]}, expected {batch} (or 1)")
    if not M.is_floating_point():
        raise ValueError(f"{name} must be a floating point tensor, got {M.dtype}")
    if not torch.isfinite(M).all():
        bad = (~torch.isfinite(M)).flatten(1).any(1).nonzero().flatten().tolist()
        raise ValueError(f"{name} contains NaN or inf (batch items {bad[:10]})")
    scale = M.detach().abs().amax(dim=(-1, -2)).clamp_min(1.0)
    asym = (M.detach() - M.detach().transpose(-1, -2)).abs().amax(dim=(-1, -2)) / scale
    if (asym > sym_tol).any():
        worst = int(asym.argmax())
        raise ValueError(f"{name} must be symmetric: item {worst} has relative asymmetry "
                         f"{float(asym[worst]):.2e}")
    return M


def homogenizing_constraint(n: int, dtype=torch.float64, device=None) -> Tensor:
    """A_0 = e0 e0^T, so that x^T A_0 x = x0^2 = 1."""
    A0 = torch.zeros(n, n, dtype=dtype, device=device)
    A0[0, 0] = 1.0
    return A0


@dataclass
class QCQP:
    """Constraint template of a homogenized QCQP of size ``n``.

    Args:
        A: constraint matrices ``(m, n, n)`` (or a sequence of ``(n, n)``); symmetric.
        b: right-hand sides ``(m,)``; defaults to zeros.
        redundant: bool flags ``(m,)``: constraint implied by the others.
        names: optional labels, for reports.
        n_params: number of extra constraints supplied per call (``SDPRLayer.forward(Q, *A_params)``),
            each ``(B, n, n)`` or ``(n, n)`` with right-hand side ``param_b[k]`` (default 0).

    The homogenizing constraint is put first when ``A`` does not already start with it.
    """

    A: Tensor
    b: Tensor | None = None
    redundant: Tensor | None = None
    names: Sequence[str] | None = None
    n_params: int = 0
    param_b: Sequence[float] | None = None

    def __post_init__(self):
        A = self.A
        if not isinstance(A, torch.Tensor):
            A = torch.stack([torch.as_tensor(a, dtype=torch.float64) for a in A]) if len(A) else None
        if A is None:
            raise ValueError("A must hold at least one constraint matrix (or pass the homogenizing one)")
        if not A.is_floating_point():
            A = A.double()
        if A.dim() != 3 or A.shape[-1] != A.shape[-2]:
            raise ValueError(f"A must have shape (m, n, n), got {tuple(A.shape)}")
        check_matrices("A", A)
        m, n = A.shape[0], A.shape[-1]
        b = torch.zeros(m, dtype=A.dtype) if self.b is None else torch.as_tensor(self.b, dtype=A.dtype)
        if b.shape != (m,):
            raise ValueError(f"b must have shape ({m},) to match A, got {tuple(b.shape)}")
        if not torch.isfinite(b).all():
            raise ValueError("b contains NaN or inf")
        red = (torch.zeros(m, dtype=torch.bool) if self.redundant is None
               else torch.as_tensor(self.redundant, dtype=torch.bool))
        if red.shape != (m,):
            raise ValueError(f"redundant must have shape ({m},), got {tuple(red.shape)}")
        names = list(self.names) if self.names is not None else [f"c{i}" for i in range(m)]
        if len(names) != m:
            raise ValueError(f"names must have {m} entries, got {len(names)}")
        A0 = homogenizing_constraint(n, A.dtype, A.device)
        if not (torch.equal(A[0], A0) and float(b[0]) == 1.0):
            A = torch.cat([A0[None], A])
            b = torch.cat([b.new_ones(1), b])
            red = torch.cat([red.new_zeros(1), red])
            names = ["homogenizing"] + names
        if self.n_params < 0:
            raise ValueError("n_params must be >= 0")
        pb = [0.0] * self.n_params if self.param_b is None else [float(v) for v in self.param_b]
        if len(pb) != self.n_params:
            raise ValueError(f"param_b must have n_params={self.n_params} entries, got {len(pb)}")
        self.A, self.b, self.redundant, self.names, self.param_b = A, b, red, names, pb

    @property
    def n(self) -> int:
        return self.A.shape[-1]

    @property
    def m(self) -> int:
        """Number of fixed constraints (homogenizing included), parameters excluded."""
        return self.A.shape[0]

    def constraints(self, A_params: Sequence[Tensor] = (), batch: int = 1,
                    dtype=None, device=None) -> tuple[Tensor, Tensor]:
        """All constraints for a batch: ``A (B, m + k, n, n)`` and ``b (m + k,)``."""
        if len(A_params) != self.n_params:
            raise ValueError(f"expected {self.n_params} parametrized constraint matrices, got {len(A_params)}")
        dtype = dtype or self.A.dtype
        A = self.A.to(dtype=dtype, device=device).expand(batch, -1, -1, -1)
        b = self.b.to(dtype=dtype, device=device)
        if self.n_params:
            P = [check_matrices(f"A_params[{k}]", Ak, self.n, batch).to(dtype).expand(batch, -1, -1)
                 for k, Ak in enumerate(A_params)]
            A = torch.cat([A, torch.stack(P, 1)], 1)
            b = torch.cat([b, torch.tensor(self.param_b, dtype=dtype, device=device)])
        return A, b

    def check_cost(self, Q: Tensor) -> Tensor:
        """Validate the cost matrices ``(B, n, n)``; returns them with a batch dimension."""
        return check_matrices("Q", Q, self.n)

    def violation(self, x: Tensor, A_params: Sequence[Tensor] = ()) -> Tensor:
        """Largest |x^T A_i x - b_i| per item, ``(B,)``: zero for feasible points."""
        A, b = self.constraints(A_params, x.shape[0], x.dtype, x.device)
        return (torch.einsum("bi,bkij,bj->bk", x, A, x) - b).abs().amax(-1)
