"""Global minimisation of univariate polynomials, the paper's first example.

p(x) = sum_k c_k x^k (degree d even, c_d > 0) is written over x = [1, x, ..., x^(d/2)] as a QCQP with
Hankel (moment) constraints x_i x_j = x_k x_l for i + j = k + l. For univariate polynomials the
relaxation is exact (nonnegative = SOS), so the certificate holds whenever the minimiser is unique.
"""
from __future__ import annotations

import itertools

import torch

from .certificate import Certificate
from .layer import SDPRLayer
from .qcqp import QCQP

Tensor = torch.Tensor


def hankel_qcqp(degree: int) -> QCQP:
    """Constraints making X = x x^T Hankel for x = [1, x, ..., x^k], k = degree / 2."""
    k = degree // 2
    n = k + 1
    A, names, red = [], [], []
    pairs_by_sum: dict[int, list[tuple[int, int]]] = {}
    for i, j in itertools.combinations_with_replacement(range(n), 2):
        pairs_by_sum.setdefault(i + j, []).append((i, j))
    for s, pairs in sorted(pairs_by_sum.items()):
        ref = pairs[0]
        for p in pairs[1:]:
            M = torch.zeros(n, n, dtype=torch.float64)
            for (i, j), sign in ((p, 1.0), (ref, -1.0)):
                M[i, j] += 0.5 * sign
                M[j, i] += 0.5 * sign
            A.append(M)
            names.append(f"x{p[0]}x{p[1]} = x{ref[0]}x{ref[1]}")
            # x_i x_j = x_0 x_{i+j} defines the moment curve; the rest follow from those.
            red.append(ref[0] != 0)
    return QCQP(A=torch.stack(A), redundant=torch.tensor(red), names=names)


def poly_cost_matrix(coeffs: Tensor) -> Tensor:
    """Q (B, k+1, k+1) with x^T Q x = p(x) on the moment curve; coeffs (B, d+1) lowest order first."""
    B, d1 = coeffs.shape
    n = (d1 - 1) // 2 + 1
    idx = torch.arange(n, device=coeffs.device)
    s = idx.view(-1, 1) + idx.view(1, -1)
    counts = torch.bincount(s.flatten(), minlength=d1).to(coeffs.dtype)
    return coeffs[:, s] / counts[s]


def poly_eval(coeffs: Tensor, x: Tensor) -> Tensor:
    powers = x.unsqueeze(-1) ** torch.arange(coeffs.shape[-1], device=x.device, dtype=x.dtype)
    return (coeffs * powers).sum(-1)


def stationary_points(coeffs: Tensor) -> Tensor:
    """Complex roots (B, d-1) of p' from the eigenvalues of its companion matrix (batched)."""
    d = coeffs.shape[-1] - 1
    k = torch.arange(1, d + 1, device=coeffs.device, dtype=coeffs.dtype)
    dp = coeffs[:, 1:] * k  # p'(x) coefficients, lowest first, degree d-1
    monic = dp[:, :-1] / dp[:, -1:]
    m = d - 1
    C = torch.zeros(coeffs.shape[0], m, m, dtype=coeffs.dtype, device=coeffs.device)
    if m > 1:
        C[:, 1:, :-1] = torch.eye(m - 1, dtype=coeffs.dtype, device=coeffs.device)
    C[:, :, -1] = -monic
    return torch.linalg.eigvals(C)


def global_minimiser_candidates(coeffs: Tensor, newton_steps: int = 3) -> Tensor:
    """The best real stationary point of p, polished by Newton on p' (the local solver)."""
    roots = stationary_points(coeffs)
    imag_tol = 1e-6 * (1 + roots.abs())
    real = roots.real
    values = poly_eval(coeffs.unsqueeze(1), real)
    values = torch.where(roots.imag.abs() <= imag_tol, values, torch.full_like(values, float("inf")))
    # a real root always exists (p' has odd degree); fall back to the smallest imaginary part
    none_real = torch.isinf(values).all(-1)
    if none_real.any():
        values[none_real] = poly_eval(coeffs[none_real].unsqueeze(1), real[none_real]) + roots.imag[none_real].abs()
    x = real.gather(1, values.argmin(-1, keepdim=True)).squeeze(1)
    d = coeffs.shape[-1] - 1
    k = torch.arange(1, d + 1, dtype=coeffs.dtype, device=coeffs.device)
    dp, ddp = coeffs[:, 1:] * k, coeffs[:, 2:] * k[1:] * k[:-1]
    for _ in range(newton_steps):
        step = poly_eval(dp, x) / poly_eval(ddp, x)
        x = torch.where(torch.isfinite(step) & (poly_eval(ddp, x) > 0), x - step, x)
    return x


class PolyMinLayer(torch.nn.Module):
    """x* = argmin_x p(x) for a batch of even-degree polynomials, certified and differentiable.

    ``forward(coeffs (B, degree+1), lowest order first) -> (x_star (B,), Certificate)``. The local
    solver takes the best real root of p' (companion matrix); the certificate proves it global. Items
    it cannot certify go to the SDP relaxation (keyword arguments go to ``SDPRLayer``).
    """

    def __init__(self, degree: int, **layer_kwargs):
        super().__init__()
        if degree < 2 or degree % 2:
            raise ValueError(f"degree must be an even integer >= 2, got {degree}")
        self.degree = degree
        self.layer = SDPRLayer(hankel_qcqp(degree), local_solver=self._local, **layer_kwargs)

    def _local(self, Q: Tensor, A: Tensor, b: Tensor) -> Tensor:
        # Recover the coefficients from the Hankel cost (sum along anti-diagonals) and solve in x.
        n = Q.shape[-1]
        idx = torch.arange(n, device=Q.device)
        s = (idx.view(-1, 1) + idx.view(1, -1)).flatten()
        coeffs = torch.zeros(Q.shape[0], 2 * n - 1, dtype=Q.dtype, device=Q.device)
        coeffs.index_add_(1, s, Q.flatten(1))
        x = global_minimiser_candidates(coeffs)
        return x.unsqueeze(-1) ** torch.arange(n, dtype=Q.dtype, device=Q.device)

    def forward(self, coeffs: Tensor) -> tuple[Tensor, Certificate]:
        if not isinstance(coeffs, torch.Tensor) or coeffs.dim() != 2 or coeffs.shape[-1] != self.degree + 1:
            shape = tuple(coeffs.shape) if isinstance(coeffs, torch.Tensor) else type(coeffs).__name__
            raise ValueError(f"coeffs must have shape (B, {self.degree + 1}), got {shape}")
        if not torch.isfinite(coeffs).all():
            raise ValueError("coeffs contain NaN or inf")
        if (coeffs[:, -1] <= 0).any():
            bad = (coeffs[:, -1] <= 0).nonzero().flatten().tolist()
            raise ValueError(f"leading coefficient must be > 0 (p unbounded below) for items {bad[:10]}")
        x, cert = self.layer(poly_cost_matrix(coeffs))
        return x[:, 1], cert
