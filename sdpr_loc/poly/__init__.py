"""Polynomial optimisation front end: state a polynomial problem, get its SOS / moment relaxation,
its solution and a checkable certificate; order-1 problems feed the certify layer (``SDPRLayer``).

- ``Program``: Drake-style SOS programs (indeterminates, decision variables, SOS constraints with
  Newton-polytope bases, linear costs / constraints) handed to Clarabel or SCS directly.
- ``sos_decomposition``: p = sum_i w_i q_i^2 from a Gram matrix.
- ``check_gram_exact`` / ``prove_nonnegative``: rational-arithmetic proofs of nonnegativity;
  ``proven_lower_bound``: rigorous lower bounds on min f from float (sparse) SOS solutions.
- ``MomentProblem(...).solve(sparsity=...)`` / ``add_sos_constraint(..., sparsity=...)``: correlative
  and term (TSSOS) sparsity, for problems with hundreds of variables.
- ``MomentProblem``: Lasserre hierarchy, flatness test, minimiser extraction, ``to_qcqp`` hand-off.
- ``add_nonnegative_on_interval`` / ``_box`` / ``_set``: Positivstellensatz certificates.
"""
from .decompose import SOSDecomposition, sos_decomposition
from .exact import ExactCertificate, check_gram_exact, find_negative_point
from .gram import Gram
from .moment import MomentProblem, MomentResult, extract_minimizers, qcqp_from_polynomials
from .newton import newton_half_basis, sos_basis
from .polynomial import (Comparison, Indeterminate, Monomial, Polynomial, Variable, as_monomial, as_polynomial,
                         monomials_up_to)
from .program import Program, Result
from .proven import ProvenBound, prove_nonnegative, proven_lower_bound
from .psatz import PsatzCertificate, add_nonnegative_on_box, add_nonnegative_on_interval, add_nonnegative_on_set

__all__ = [
    "Program", "Result", "Gram", "Polynomial", "Monomial", "Indeterminate", "Variable", "Comparison",
    "as_polynomial", "as_monomial", "monomials_up_to", "newton_half_basis", "sos_basis",
    "SOSDecomposition", "sos_decomposition", "ExactCertificate", "check_gram_exact", "prove_nonnegative",
    "find_negative_point", "MomentProblem", "MomentResult", "extract_minimizers", "qcqp_from_polynomials",
    "ProvenBound", "proven_lower_bound", "PsatzCertificate", "add_nonnegative_on_interval", "add_nonnegative_on_box", "add_nonnegative_on_set",
]
