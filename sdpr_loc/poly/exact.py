"""Exact (rational) SOS certificates from numerical Gram matrices (Peyrl & Parrilo, 2008).

A solver's Gram matrix satisfies coefficient matching and PSD-ness only to ~1e-8, which proves
nothing. Here: round Q to rationals, project it orthogonally (exactly) onto the affine space
{Q : z^T Q z = p}, and run LDL^T in Fraction arithmetic. Non-negative pivots prove Q PSD, hence
p = sum_i d_i (l_i^T z)^2 >= 0, with no floating point anywhere in the proof. The projection is
per monomial, because each Gram entry contributes to exactly one coefficient: every entry (i, j)
with z_i z_j = m moves by (p_m - current_m) / #entries(m). Works when the SDP has a strictly
feasible (positive definite) Gram matrix; ``proven.prove_nonnegative`` asks the solver for the most
interior one. This module is a leaf: it solves nothing (``proven.py`` combines it with ``Program``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Sequence

import numpy as np

from .gram import triu
from .polynomial import CONST, Monomial, Polynomial, as_monomial, as_polynomial


@dataclass
class ExactCertificate:
    """Outcome of an exact SOS check.

    Attributes:
        success: True when p = z^T G z with G rational and PSD has been proved exactly.
        reason: the obstruction when it failed ("" on success).
        polynomial: the polynomial checked (exact coefficients).
        basis: monomials z.
        gram: the exact rational Gram matrix G (k x k lists of Fractions) of the last attempt.
        denominator: rounding denominator that worked (None if the input was used as is).
        pivots, L: exact LDL^T factors, G = sum_i pivots[i] * L[i] L[i]^T (on success).
        witness: a rational point where p < 0, when one was found (proves p is NOT nonnegative).
        attempts: (denominator, reason) of the attempts made.
    """

    success: bool
    reason: str
    polynomial: Polynomial
    basis: list[Monomial]
    gram: list | None = None
    denominator: int | None = None
    pivots: list = field(default_factory=list)
    L: list = field(default_factory=list)
    witness: tuple | None = None
    attempts: list = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.success

    def squares(self) -> list[tuple[Fraction, Polynomial]]:
        """Exact (weight, q_i) with p = sum weight * q_i^2."""
        zs = [m.to_polynomial() for m in self.basis]
        out = []
        for d, row in zip(self.pivots, self.L):
            if d == 0:
                continue
            q = Polynomial(0)
            for c, z in zip(row, zs):
                if c != 0:
                    q = q + c * z
            out.append((d, q))
        return out

    def verify(self) -> bool:
        """Independent exact re-check: sum d_i q_i^2 == p, and every d_i >= 0."""
        if not self.success:
            return False
        total = Polynomial(0)
        for d, q in self.squares():
            if d < 0:
                return False
            total = total + d * q * q
        return total == self.polynomial

    def __str__(self) -> str:
        if not self.success:
            return f"not certified: {self.reason}"
        return "p = " + " + ".join(f"{d}*({q})^2" for d, q in self.squares())


def exact_coefficients(p) -> dict[tuple, Fraction]:
    """{monomial tuple: Fraction} of a polynomial with numeric coefficients (floats taken exactly)."""
    p = as_polynomial(p)
    p._require_numeric("the exact certificate")
    return {m: Fraction(c.get(CONST, 0)) for m, c in p._t.items()}


def _to_fraction(v, D: int | None) -> Fraction:
    if D is None:
        if isinstance(v, (int, Fraction)):
            return Fraction(v)
        return Fraction(float(v))
    return Fraction(round(float(v) * D), D)


def ldl_exact(G: list[list[Fraction]], names: Sequence[str] | None = None) -> tuple[bool, str, list, list]:
    """Exact LDL^T with diagonal pivoting; (psd, obstruction, pivots, rows of L), G = sum d_i l_i l_i^T.

    A negative pivot, or a zero pivot whose row is not zero, proves G is not PSD."""
    k = len(G)
    names = list(names) if names is not None else [f"position {i}" for i in range(k)]
    A = [row[:] for row in G]
    active = list(range(k))
    pivots, L = [], []
    while active:
        neg = min(active, key=lambda i: A[i][i])
        if A[neg][neg] < 0:
            d = A[neg][neg]
            return False, f"negative pivot {d} (~{float(d):.3g}) at basis monomial {names[neg]}", pivots, L
        j = max(active, key=lambda i: A[i][i])
        d = A[j][j]
        if d == 0:
            for i in active:
                for l in active:
                    if A[i][l] != 0:
                        return False, (f"zero pivot at basis monomial {names[i]} but nonzero entry "
                                       f"({names[i]}, {names[l]}) = {A[i][l]} in the Schur complement"), pivots, L
            break
        l = [Fraction(0)] * k
        for i in active:
            l[i] = A[i][j] / d
        active.remove(j)
        for i in active:
            li = l[i]
            if li == 0:
                continue
            Ai = A[i]
            dli = d * li
            for m in active:
                if l[m] != 0:
                    Ai[m] -= dli * l[m]
        pivots.append(d)
        L.append(l)
    return True, "", pivots, L


def check_gram_exact(p, basis: Sequence, Q, denominators: Sequence[int] | None = None) -> ExactCertificate:
    """Prove p = z^T G z with G rational PSD, starting from a numerical (or exact) Gram matrix Q.

    Tries Q as is when its entries are exact (int / Fraction), then Q rounded to multiples of 1/D for
    D in ``denominators`` (default 10, 10^2, ..., 10^12; small D snap to simple rationals, which
    rescues boundary cases such as p = (x^2 - 1)^2). Returns an ``ExactCertificate``.
    """
    p = as_polynomial(p)
    coeffs = exact_coefficients(p)
    basis = [as_monomial(b) for b in basis]
    k = len(basis)
    Qa = np.asarray(Q, dtype=object)
    if Qa.shape != (k, k):
        raise ValueError(f"Gram matrix must be {k}x{k} to match the basis, got shape {Qa.shape}")
    uids = sorted({u for b in basis for u, _ in b.powers} | {u for m in coeffs for u, _ in m})
    col = {u: j for j, u in enumerate(uids)}
    B = np.zeros((k, len(uids)), dtype=np.int64)
    for i, b in enumerate(basis):
        for u, e in b.powers:
            B[i, col[u]] = e
    if len(np.unique(B, axis=0)) != k:
        raise ValueError("the basis has repeated monomials")
    iu, ju = triu(k)
    groups: dict[tuple, list[int]] = {}
    for g, (i, j) in enumerate(zip(iu.tolist(), ju.tolist())):
        groups.setdefault(tuple((u, e) for u, e in zip(uids, (B[i] + B[j]).tolist()) if e), []).append(g)
    cert = ExactCertificate(False, "", p, basis)
    missing = [m for m, c in coeffs.items() if c != 0 and m not in groups]
    if missing:
        cert.reason = (f"monomial {Monomial._wrap(missing[0])} of p is not a product of two basis monomials, "
                       "so no Gram matrix over this basis can represent p")
        return cert
    exact_input = all(isinstance(v, (int, Fraction, np.integer)) for v in Qa.reshape(-1).tolist())
    Ds = ([None] if exact_input else []) + list(denominators or [10 ** e for e in range(1, 13)])
    for D in Ds:
        q = [_to_fraction(Qa[i, j], D) for i, j in zip(iu.tolist(), ju.tolist())]
        # exact orthogonal projection onto {Q : coefficients of z^T Q z = p}, one monomial at a time
        for m, gs in groups.items():
            n_entries = sum(1 if iu[g] == ju[g] else 2 for g in gs)
            cur = sum((q[g] if iu[g] == ju[g] else 2 * q[g]) for g in gs)
            delta = (coeffs.get(m, Fraction(0)) - cur) / n_entries
            if delta:
                for g in gs:
                    q[g] += delta
        G = [[Fraction(0)] * k for _ in range(k)]
        for g, (i, j) in enumerate(zip(iu.tolist(), ju.tolist())):
            G[i][j] = G[j][i] = q[g]
        ok, why, pivots, L = ldl_exact(G, [str(b) for b in basis])
        if ok:
            cert.success, cert.reason, cert.gram, cert.denominator = True, "", G, D
            cert.pivots, cert.L = pivots, L
            cert.attempts.append((D, ""))
            return cert
        cert.attempts.append((D, why))
        cert.gram = G
    tried = ", ".join("exact input" if D is None else f"1/{D}" for D, _ in cert.attempts)
    cert.reason = (f"rounded Gram matrix is not PSD after exact projection ({cert.attempts[-1][1]}; "
                   f"tried {tried}); the numerical Gram matrix is too close to singular or p is not SOS")
    return cert


def find_negative_point(p, samples: int = 4000, seed: int = 0):
    """Search a point where p < 0 (sampling + local descent); returns (x as Fractions, exact p(x)) or None."""
    from scipy.optimize import minimize

    p = as_polynomial(p)
    xs = p.indeterminates()
    if not xs:
        v = exact_coefficients(p).get((), Fraction(0))
        return ((), v) if v < 0 else None
    E, c, _ = p.to_arrays(xs)
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.uniform(-2, 2, (samples, len(xs))), rng.standard_normal((samples, len(xs))) * 5])
    vals = p.evaluate(X, xs)
    starts = X[np.argsort(vals)[:5]]
    found = []  # (denominator bound, value, point): the simplest rational witness wins
    for x0 in starts:
        r = minimize(lambda x: p.evaluate(x, xs), x0, method="Nelder-Mead",
                     options=dict(xatol=1e-10, fatol=1e-14, maxiter=4000))
        for cand in (r.x, x0):
            for D in (1, 10, 100, 10 ** 3, 10 ** 4, 10 ** 6):
                xf = tuple(Fraction(float(v)).limit_denominator(D) for v in cand)
                v = exact_coefficients(p.substitute(dict(zip(xs, xf)))).get((), Fraction(0))
                if v < 0:
                    found.append((D, v, xf))
                    break
    if not found:
        return None
    D, v, xf = min(found, key=lambda t: (t[0], t[1]))
    return xf, v
