"""Proofs that need both a solver and exact arithmetic: they sit above ``program`` and ``exact``.

- ``prove_nonnegative``: p >= 0 everywhere, by an exact rational SOS decomposition.
- ``proven_lower_bound``: a rigorous lower bound on min f from a floating-point (sparse) SOS
  solution. The SDP asks for Gram matrices at least ``margin`` inside the PSD cone; the float solution
  (t, Q_k) is then taken exactly (floats are rationals), the exact residual r = f - t - sum_k z_k^T
  Q_k z_k is folded back into the Gram entries (orthogonal projection onto the coefficient-matching
  space, one monomial at a time), and each corrected Q_k is proven positive definite by exact integer
  elimination. Then f - t = sum_k z_k^T Q_k z_k >= 0 holds exactly, so min f >= t, with no floating
  point in the proof (the certified-roundoff recipe of Peyrl & Parrilo and Magron et al.).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Sequence

import numpy as np

from sdpr_loc.certify.verify import positive_definite_rounded

from .exact import ExactCertificate, check_gram_exact, exact_coefficients, find_negative_point
from .newton import sos_basis
from .polynomial import Polynomial, as_monomial, as_polynomial
from .program import Program


@dataclass
class ProvenBound:
    """min f >= ``lower`` (exact rational) when ``proven``; ``value`` is ``lower`` rounded down to a
    float; ``float_bound`` the solver's bound; ``margin`` the interior margin that worked."""

    proven: bool
    lower: Fraction | None
    value: float
    float_bound: float
    margin: float | None = None
    reason: str = ""
    attempts: list = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.proven


def _round_down(q: Fraction) -> float:
    v = float(q)
    return math.nextafter(v, -math.inf) if Fraction(v) > q else v


def _prove_grams(f: Polynomial, t: Fraction, grams: list, mats: list, margin: Fraction) -> str:
    """'' when f - t = sum_k z_k^T (mats_k + margin I + E_k) z_k with exactly PD blocks, else why not."""
    coeffs = exact_coefficients(f)
    coeffs[()] = coeffs.get((), Fraction(0)) - t
    entries: dict = {}  # monomial -> [(block, i, j)]
    Qs = []
    for b, (g, M) in enumerate(zip(grams, mats)):
        uids = [x.uid for x in g.indeterminates]
        k = g.size
        Q = [[Fraction(float(M[i, j])) + (margin if i == j else 0) for j in range(k)] for i in range(k)]
        Qs.append(Q)
        E = g.exps
        for i in range(k):
            for j in range(i, k):
                key = tuple((u, int(e)) for u, e in zip(uids, E[i] + E[j]) if e)
                entries.setdefault(key, []).append((b, i, j))
    for m, ijs in entries.items():
        cur = sum((Qs[b][i][j] if i == j else 2 * Qs[b][i][j]) for b, i, j in ijs)
        weight = sum(1 if i == j else 2 for _, i, j in ijs)
        delta = (coeffs.get(m, Fraction(0)) - cur) / weight
        if delta:
            for b, i, j in ijs:
                Qs[b][i][j] += delta
                if i != j:
                    Qs[b][j][i] += delta
    missing = [m for m, c in coeffs.items() if c != 0 and m not in entries]
    if missing:
        return f"monomial {missing[0]} of f is not a product of two basis monomials of any block"
    for b, Q in enumerate(Qs):
        den = 1
        for row in Q:
            for v in row:
                den = den * v.denominator // math.gcd(den, v.denominator)
        if not positive_definite_rounded([[int(v * den) for v in row] for row in Q], 0):
            return f"block {b} ({len(Q)}x{len(Q)}) is not provably positive definite after the exact correction"
    return ""


def proven_lower_bound(f, sparsity: str = "dense", margins: Sequence[float] = (1e-10, 1e-9, 1e-8, 1e-7, 1e-6, 1e-5),
                       solver: str = "clarabel", **solver_options) -> ProvenBound:
    """Rigorous lower bound on min_x f(x) (unconstrained, numeric coefficients) via max t s.t. f - t
    is SOS with the given sparsity. ``margins`` (relative to the largest coefficient of f) are tried in
    turn: a larger margin survives rounding more easily but costs about margin * sum_k |z_k(x*)|^2."""
    f = as_polynomial(f)
    f._require_numeric("proven_lower_bound")
    scale = max([abs(float(v)) for v in exact_coefficients(f).values()] + [1.0])
    out = ProvenBound(False, None, -math.inf, math.nan)
    for rel in margins:
        margin = Fraction(float(rel * scale))
        prog = Program()
        t = prog.new_continuous_variables(1, "t")[0]
        grams = prog.add_sos_constraint(f - t, sparsity=sparsity, margin=float(margin))
        grams = grams if isinstance(grams, list) else [grams]
        prog.add_linear_cost(-t)
        res = prog.solve(solver, **solver_options)
        if res.x is None:
            out.attempts.append((float(margin), f"SDP status {res.status}"))
            continue
        tf = res.value(t)
        out.float_bound = tf if math.isnan(out.float_bound) else out.float_bound
        why = _prove_grams(f, Fraction(tf), grams, [res.gram(g) for g in grams], margin)
        out.attempts.append((float(margin), why))
        if not why:
            out.proven, out.lower, out.value, out.margin = True, Fraction(tf), _round_down(Fraction(tf)), float(margin)
            out.float_bound = tf
            return out
    out.reason = "; ".join(f"margin {m:.1e}: {w}" for m, w in out.attempts)
    return out
def prove_nonnegative(p, solver: str = "clarabel", basis: Sequence | None = None,
                      denominators: Sequence[int] | None = None) -> ExactCertificate:
    """Prove p(x) >= 0 for all x exactly, or report why not (with a rational witness when p < 0 somewhere).

    Solves max t s.t. p - t * sum(z_i^2) is SOS over the Newton basis z, i.e. the Gram matrix with the
    largest minimum eigenvalue, so that rounding keeps it PSD; then ``check_gram_exact``.
    """
    p = as_polynomial(p)
    p._require_numeric("prove_nonnegative")
    z = [as_monomial(b) for b in basis] if basis is not None else sos_basis(p)[0]
    prog = Program()
    t = prog.new_continuous_variables(1, "t")[0]
    scale = max([abs(float(v)) for v in exact_coefficients(p).values()] + [1.0])
    norm2 = Polynomial(0)
    for m in z:
        norm2 = norm2 + m.to_polynomial() ** 2
    gram = prog.add_sos_constraint(p - t * norm2, basis=z)
    prog.add_linear_constraint(t, ub=scale)
    prog.add_linear_cost(-t)
    res = prog.solve(solver=solver)
    t_star = res.value(t) if res.x is not None and res.status in ("optimal", "optimal_inaccurate") else None
    if t_star is None or t_star < -1e-7 * scale:
        why = (f"the SDP is {res.status}" if t_star is None else
               f"every Gram matrix over the basis has a negative eigenvalue (best minimum eigenvalue {t_star:.3g})")
        cert = ExactCertificate(False, f"p is not a sum of squares over the basis {z}: {why}", p, z)
        w = find_negative_point(p)
        if w is not None:
            cert.witness = w
            cert.reason += (f"; p is not nonnegative: p(x) = {w[1]} (~{float(w[1]):.4g}) < 0 at the rational "
                            f"point x = ({', '.join(str(v) for v in w[0])}), evaluated exactly")
        else:
            cert.reason += "; no point with p < 0 was found (p may be nonnegative but not SOS, like Motzkin's)"
        return cert
    Q = res.gram(gram) + t_star * np.eye(len(z))
    cert = check_gram_exact(p, z, Q, denominators)
    if not cert.success and t_star <= 1e-7 * scale:
        cert.reason += (f"; the most interior Gram matrix has minimum eigenvalue {t_star:.2e}, i.e. p is on "
                        "the boundary of the SOS cone, where rounding cannot preserve PSD-ness")
    return cert
