"""Rigorous lower bounds from float SOS solutions; exact arithmetic stays below the solver."""
import ast
from fractions import Fraction
from pathlib import Path

import numpy as np

from sdpr_loc.poly import Indeterminate, Polynomial, proven_lower_bound
from sdpr_loc.poly.exact import exact_coefficients


def test_proven_bound_on_rosenbrock_is_valid_and_tight():
    x = [Indeterminate(f"r{i}") for i in range(8)]
    f = 1 + sum((100 * (x[i] - x[i - 1] ** 2) ** 2 + (1 - x[i]) ** 2 for i in range(1, 8)), Polynomial(0))
    pb = proven_lower_bound(f, sparsity="correlative")
    assert pb.proven, pb.reason
    assert isinstance(pb.lower, Fraction)
    f_at_one = exact_coefficients(f.substitute({xi: 1 for xi in x})).get((), Fraction(0))
    assert f_at_one == 1 and pb.lower <= f_at_one  # the minimum, evaluated exactly
    assert pb.lower > 1 - 1e-4
    assert pb.value <= pb.lower and pb.value <= pb.float_bound
    pts = np.random.default_rng(0).uniform(-2, 2, (2000, 8))
    assert (f.evaluate(pts, x) >= float(pb.lower) - 1e-12).all()


def test_proven_bound_with_a_nonzero_minimum_below_float_noise():
    x, y = Indeterminate("u"), Indeterminate("v")
    f = (x ** 2 - 1) ** 2 + (y - x) ** 2 + Polynomial(1) / 3  # minimum exactly 1/3 at x = y = +-1
    pb = proven_lower_bound(f)
    assert pb.proven, pb.reason
    assert Fraction(1, 3) - Fraction(1, 10 ** 6) < pb.lower <= Fraction(1, 3)


def test_not_sos_is_reported_not_proven():
    x, y = Indeterminate("mx"), Indeterminate("my")
    motzkin = x ** 4 * y ** 2 + x ** 2 * y ** 4 - 3 * x ** 2 * y ** 2 + 1  # >= 0 but f - t is never SOS
    pb = proven_lower_bound(motzkin, margins=(1e-8,))
    assert not pb.proven and pb.lower is None and "margin" in pb.reason


def test_exact_module_is_a_leaf():
    """exact.py imports no solver-side module (issue 17): proofs that solve live in proven.py."""
    src = Path(__file__).resolve().parents[1] / "sdpr_loc" / "poly" / "exact.py"
    mods = {n.module for n in ast.walk(ast.parse(src.read_text())) if isinstance(n, ast.ImportFrom)}
    assert not mods & {"program", "proven", "moment", "psatz"}, mods
