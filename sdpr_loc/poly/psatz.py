"""Positivstellensatz helpers: nonnegativity on intervals, boxes and basic semialgebraic sets.

p >= 0 on {g_i >= 0, h_j = 0} is certified by p = s_0 + sum_i s_i g_i + sum_j l_j h_j with s_i SOS and
l_j free (Putinar; sufficient, and exact in the limit of the degree for compact sets). For a
univariate p on an interval the certificate with bounded degrees is exact (Markov-Lukacs):
  deg p = 2m:     p = s(x) + (x - a)(b - x) t(x),   deg s <= 2m, deg t <= 2m - 2
  deg p = 2m + 1: p = (x - a) s(x) + (b - x) t(x),  deg s, deg t <= 2m
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .gram import Gram
from .polynomial import Indeterminate, Polynomial, as_number
from .program import Program


@dataclass
class PsatzCertificate:
    """p = s0 + sum_i s_i g_i + sum_j l_j h_j, as handles into the program.

    Attributes:
        s0: Gram matrix of the remainder s0 (None when the certificate has no free SOS term).
        multipliers: (g_i, s_i, Gram of s_i) for every inequality.
        equality_multipliers: (h_j, l_j) for every equality.
    """

    s0: Gram | None
    multipliers: list = field(default_factory=list)
    equality_multipliers: list = field(default_factory=list)


def _even_floor(d: int) -> int:
    return d - (d % 2)


def add_nonnegative_on_set(prog: Program, p, inequalities: Sequence = (), equalities: Sequence = (),
                           degree: int | None = None) -> PsatzCertificate:
    """Constrain p >= 0 on {g_i >= 0, h_j = 0} through a Putinar certificate of total degree ``degree``.

    s_i gets degree 2 * floor((degree - deg g_i) / 2) in all indeterminates of the data, l_j degree
    degree - deg h_j; the remainder s0 = p - sum s_i g_i - sum l_j h_j is constrained SOS (Newton basis).
    Default degree: the largest degree of p, g_i, h_j rounded up to even.
    """
    p = prog._poly(p, "add_nonnegative_on_set")
    gs = [prog._poly(g, "inequality") for g in inequalities]
    hs = [prog._poly(h, "equality") for h in equalities]
    named = [(f"inequality {i}", g) for i, g in enumerate(gs)] + [(f"equality {j}", h) for j, h in enumerate(hs)]
    for what, q in named:
        if q.has_decision_variables():
            raise ValueError(f"{what} must not depend on decision variables (the product with a multiplier "
                             "would not be affine)")
    data = [p, *gs, *hs]
    uids = sorted({x.uid for q in data for x in q.indeterminates()})
    if not uids:
        raise ValueError("add_nonnegative_on_set: the data has no indeterminates")
    xs = [Indeterminate(_uid=u) for u in uids]
    D = degree if degree is not None else max(q.degree() for q in data)
    if isinstance(D, bool) or not isinstance(D, (int, np.integer)) or D < 0:
        raise ValueError(f"degree must be an integer >= 0, got {degree!r}")
    D = int(D) + int(D) % 2
    rest = p
    cert = PsatzCertificate(None)
    for i, g in enumerate(gs):
        dm = _even_floor(D - g.degree())
        if dm < 0:
            raise ValueError(f"degree {D} is below the degree {g.degree()} of inequality {i}")
        s, gram = prog.new_sos_polynomial(xs, dm)
        rest = rest - s * g
        cert.multipliers.append((g, s, gram))
    for j, h in enumerate(hs):
        dl = D - h.degree()
        if dl < 0:
            raise ValueError(f"degree {D} is below the degree {h.degree()} of equality {j}")
        l = prog.new_free_polynomial(xs, dl, name=f"l{j}_")
        rest = rest - l * h
        cert.equality_multipliers.append((h, l))
    cert.s0 = prog.add_sos_constraint(rest)
    return cert


def add_nonnegative_on_box(prog: Program, p, indeterminates: Sequence[Indeterminate], lower: Sequence[float],
                           upper: Sequence[float], degree: int | None = None) -> PsatzCertificate:
    """p >= 0 on the box lower <= x <= upper, with g_i = (x_i - lower_i)(upper_i - x_i) >= 0."""
    xs = list(np.asarray(indeterminates, dtype=object).reshape(-1))
    lo, hi = list(np.atleast_1d(lower)), list(np.atleast_1d(upper))
    if not (len(xs) == len(lo) == len(hi)) or not xs:
        raise ValueError("box needs one lower and one upper bound per indeterminate, got "
                         f"{len(xs)} indeterminates, {len(lo)} lower, {len(hi)} upper bounds")
    gs = []
    for x, a, b in zip(xs, lo, hi):
        if not isinstance(x, Indeterminate):
            raise ValueError(f"box coordinates must be Indeterminates, got {type(x).__name__}")
        a, b = as_number(a, "lower bound"), as_number(b, "upper bound")
        if not a < b:
            raise ValueError(f"empty or degenerate box side for {x.name}: lower {a} >= upper {b}")
        gs.append((x - a) * (b - x))
    return add_nonnegative_on_set(prog, p, gs, degree=degree)


def add_nonnegative_on_interval(prog: Program, p, x: Indeterminate, lower, upper) -> PsatzCertificate:
    """Univariate p(x) >= 0 on [lower, upper], exactly (Markov-Lukacs form, see module docstring)."""
    p = prog._poly(p, "add_nonnegative_on_interval")
    if not isinstance(x, Indeterminate):
        raise ValueError(f"x must be an Indeterminate, got {type(x).__name__}")
    others = [y.name for y in p.indeterminates() if y.uid != x.uid]
    if others:
        raise ValueError(f"add_nonnegative_on_interval needs a univariate polynomial in {x.name}; p also "
                         f"depends on {others} (use add_nonnegative_on_box / add_nonnegative_on_set)")
    a, b = as_number(lower, "lower"), as_number(upper, "upper")
    if not a < b:
        raise ValueError(f"interval needs lower < upper, got [{a}, {b}]")
    d = p.degree()
    cert = PsatzCertificate(None)
    if d % 2 == 0:
        g = (x - a) * (b - x)
        if d >= 2:
            t, gram_t = prog.new_sos_polynomial([x], d - 2)
            cert.multipliers.append((g, t, gram_t))
            p = p - g * t
        cert.s0 = prog.add_sos_constraint(p)
        return cert
    rhs = Polynomial(0)
    for g in (x - a, b - x):
        s, gram = prog.new_sos_polynomial([x], d - 1)
        cert.multipliers.append((g, s, gram))
        rhs = rhs + g * s
    prog.add_equality_between_polynomials(p, rhs)
    return cert
