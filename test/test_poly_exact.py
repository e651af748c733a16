"""Exact (rational) certificates: proofs that need no floating point, and refusals with reasons."""
from fractions import Fraction

import numpy as np
import pytest
import sympy

from sdpr_loc.poly import Indeterminate, Program, check_gram_exact, prove_nonnegative
from sdpr_loc.poly.exact import ldl_exact


def gram_example():
    x1, x2 = Indeterminate("x1"), Indeterminate("x2")
    return x1, x2, 2 * x1 ** 4 + 5 * x2 ** 4 - x1 ** 2 * x2 ** 2 + 2 * x1 ** 3 * x2 + 2 * x1 + 2


def _sympy_identity(cert) -> bool:
    """Independent re-check in sympy: sum_i d_i q_i^2 - p == 0 and all d_i >= 0."""
    total = sum(sympy.Rational(d.numerator, d.denominator) * q.to_sympy() ** 2 for d, q in cert.squares())
    return sympy.expand(total - cert.polynomial.to_sympy()) == 0 and all(d >= 0 for d, _ in cert.squares())


def test_prove_gram_example_exactly():
    *_, p = gram_example()
    cert = prove_nonnegative(p)
    assert cert.success, cert.reason
    assert all(isinstance(v, Fraction) for row in cert.gram for v in row)
    assert cert.verify() and _sympy_identity(cert)
    assert str(cert).startswith("p = ")


def test_exact_check_from_program_result_and_tutorial_gram():
    x1, x2, p = gram_example()
    prog = Program()
    g = prog.add_sos_constraint(p)
    res = prog.solve()
    cert = res.exact_certificate(g)
    assert cert.success and cert.verify()
    # the tutorial's exact Gram matrix is accepted as is, without rounding
    Qt = [[Fraction(v, 3) for v in row] for row in
          [[6, 3, 0, -2, 0, -2], [3, 4, 0, 0, 0, 0], [0, 0, 4, 0, 0, 0],
           [-2, 0, 0, 6, 3, -4], [0, 0, 0, 3, 5, 0], [-2, 0, 0, -4, 0, 15]]]
    cert = check_gram_exact(p, g.basis, np.array(Qt, dtype=object))
    assert cert.success and cert.denominator is None and _sympy_identity(cert)


def test_refuses_polynomial_that_is_negative_somewhere():
    x = Indeterminate("x")
    p = x ** 4 - 3 * x ** 2 + 1  # p(1) = -1
    cert = prove_nonnegative(p)
    assert not cert.success and not cert.verify()
    assert "not a sum of squares" in cert.reason and "not nonnegative" in cert.reason
    xw, val = cert.witness
    assert val < 0 and p.substitute({x: xw[0]}) == val  # exact rational evaluation
    # any Gram matrix that matches the coefficients is refused with a concrete obstruction
    Q = np.array([[1.0, 0.0, -1.5], [0.0, 0.0, 0.0], [-1.5, 0.0, 1.0]])
    cert = check_gram_exact(p, [1, x, x ** 2], Q)
    assert not cert.success and "negative pivot" in cert.reason


def test_refuses_motzkin_nonnegative_but_not_sos():
    x, y = Indeterminate("x"), Indeterminate("y")
    motzkin = x ** 4 * y ** 2 + x ** 2 * y ** 4 - 3 * x ** 2 * y ** 2 + 1
    cert = prove_nonnegative(motzkin)
    assert not cert.success and cert.witness is None
    assert "not a sum of squares" in cert.reason


def test_boundary_case_rescued_by_snapping_to_simple_rationals():
    """(x^2 - 1)^2 has only singular Gram matrices; coarse rounding lands on the exact one."""
    x = Indeterminate("x")
    cert = prove_nonnegative((x ** 2 - 1) ** 2)
    assert cert.success and cert.verify()


def test_missing_monomial_and_bad_shapes():
    x = Indeterminate("x")
    cert = check_gram_exact(x ** 3 + 1, [1, x], np.eye(2))
    assert not cert.success and "not a product of two basis monomials" in cert.reason
    with pytest.raises(ValueError, match="2x2"):
        check_gram_exact(x ** 2 + 1, [1, x], np.eye(3))
    a = Program().new_continuous_variables(1)[0]
    with pytest.raises(ValueError, match="numeric coefficients"):
        check_gram_exact(a * x ** 2, [x], np.eye(1))


def test_ldl_exact_matches_eigenvalues_on_random_rational_matrices():
    rng = np.random.default_rng(0)
    for _ in range(20):
        A = rng.integers(-3, 4, (4, 3))
        M = A @ A.T + np.diag(rng.integers(-1, 2, 4))  # sometimes indefinite, sometimes singular
        ok, why, d, L = ldl_exact([[Fraction(int(v)) for v in row] for row in M])
        assert ok == (np.linalg.eigvalsh(M.astype(float)).min() >= -1e-12), why
        if ok:
            R = sum(float(di) * np.outer([float(v) for v in l], [float(v) for v in l]) for di, l in zip(d, L))
            np.testing.assert_allclose(R if len(d) else np.zeros_like(M), M, atol=1e-12)
