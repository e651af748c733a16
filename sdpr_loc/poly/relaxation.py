"""Which moment matrices a relaxation has (the plan), and their assembly into one conic problem.

A plan is a list of PSD blocks, each a monomial basis B (k, n) with an optional localizing
polynomial g (the block is M_B(g y), entries L_y(g z_i z_j)), plus equality rows L_y(h z) = 0 for
multiplier monomials z. The dense hierarchy has one block per constraint over all monomials; the
sparse ones (``sparsity.py``) split the bases by cliques and term-sparsity blocks. Moments are
indexed by the exponents that actually occur, so n = 200 costs what its blocks cost.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from .conic import ConicProblem
from .newton import row_keys
from .polynomial import exponents_up_to
from .sparsity import block_support, chordal_cliques, interaction_graph, term_blocks

SPARSITY = ("dense", "correlative", "term", "combined")


@dataclass
class Plan:
    """cliques: variable index arrays; psd: [(B (k, n), (E, c) or None, clique index)];
    eqs: [(B (k, n), (E, c))]; full[l]: index of clique l's full moment block (or None)."""

    cliques: list
    psd: list = field(default_factory=list)
    eqs: list = field(default_factory=list)
    full: list = field(default_factory=list)


def _lift(E_local: np.ndarray, clique: np.ndarray, n: int) -> np.ndarray:
    E = np.zeros((len(E_local), n), dtype=np.int64)
    E[:, clique] = E_local
    return E


def relaxation_plan(problem, d: int, sparsity: str, term_steps: int = 1, extension: str = "block") -> Plan:
    """Blocks of the order-d relaxation of a ``MomentProblem`` under a sparsity pattern."""
    xs = problem.x
    return plan_blocks(problem.n, problem.f.to_arrays(xs)[:2], [g.to_arrays(xs)[:2] for g in problem.g],
                       [h.to_arrays(xs)[:2] for h in problem.h], d, sparsity, term_steps, extension)


def plan_blocks(n: int, f, gs, hs, d: int, sparsity: str, term_steps: int = 1, extension: str = "block",
                prune: bool = False) -> Plan:
    """Blocks for objective terms f = (E, c), inequalities / equalities as lists of (E, c), order d.
    ``prune`` (SOS side, no constraints): drop basis monomials whose Gram diagonal is forced to 0."""
    if sparsity not in SPARSITY:
        raise ValueError(f"sparsity must be one of {SPARSITY}, got {sparsity!r}")
    if sparsity in ("correlative", "combined"):
        groups = [np.flatnonzero(E.any(0)) for E, _ in gs + hs]
        cliques = chordal_cliques(interaction_graph(n, f[0], groups))
    else:
        cliques = [np.arange(n)]
    home = []  # each constraint lives in the first clique that holds all its variables
    for E, _ in gs + hs:
        used = set(np.flatnonzero(E.any(0)).tolist())
        home.append(next(i for i, c in enumerate(cliques) if used <= set(c.tolist())))
    ng = len(gs)
    plan = Plan(cliques=cliques)
    bases = [_lift(exponents_up_to(len(c), d), c, n) for c in cliques]
    if prune:
        bases = diagonal_prune_blocks(bases, f[0])
    loc = [(_lift(exponents_up_to(len(cliques[home[i]]), d - math.ceil(_deg(E) / 2)), cliques[home[i]], n), (E, c))
           for i, (E, c) in enumerate(gs)]
    for j, (E, c) in enumerate(hs):
        cl = cliques[home[ng + j]]
        plan.eqs.append((_lift(exponents_up_to(len(cl), 2 * d - _deg(E)), cl, n), (E, c)))
    if sparsity in ("dense", "correlative"):
        for l, B in enumerate(bases):
            plan.full.append(len(plan.psd))
            plan.psd.append((B, None, l))
        plan.psd += [(B, g, home[i]) for i, (B, g) in enumerate(loc)]
        return plan
    # term sparsity: grow the support from the data and the even squares until the blocks settle
    data = np.vstack([f[0]] + [E for E, _ in gs + hs]) if gs or hs else f[0]
    base_support = {k.tobytes() for k in row_keys(data)}
    for B in bases:
        base_support.update(k.tobytes() for k in row_keys(2 * B))
    support, blocks = set(base_support), None
    for _ in range(term_steps):
        new = [term_blocks(B, support, None, extension) for B in bases]
        new_loc = [term_blocks(B, support, g[0], extension) for B, g in loc]
        if blocks is not None and _same(new, blocks[0]) and _same(new_loc, blocks[1]):
            break
        blocks = (new, new_loc)
        support = set(base_support)
        for B, blk in zip(bases, new):
            support |= block_support(B, blk)
        for (B, g), blk in zip(loc, new_loc):
            support |= block_support(B, blk, g[0])
    for l, (B, blk) in enumerate(zip(bases, blocks[0])):
        plan.full.append(len(plan.psd) if len(blk) == 1 and len(blk[0]) == len(B) else None)
        plan.psd += [(B[b], None, l) for b in blk]
    for i, ((B, g), blk) in enumerate(zip(loc, blocks[1])):
        plan.psd += [(B[b], g, home[i]) for b in blk]
    return plan


def diagonal_prune_blocks(bases: list, S: np.ndarray) -> list:
    """Drop rows b (from every block) with 2b outside the support S and not the product of two distinct
    rows of any block: z^T Q z could not produce x^2b with a nonzero Q_bb, so Q_bb = 0. Repeated until
    stable (removals can expose more)."""
    support = {k.tobytes() for k in row_keys(S)}
    while True:
        off: set = set()
        for B in bases:
            iu, ju = np.triu_indices(len(B), 1)
            off.update(k.tobytes() for k in row_keys(B[iu] + B[ju]))
        keep = [np.array([k.tobytes() in support or k.tobytes() in off for k in row_keys(2 * B)], dtype=bool)
                for B in bases]
        if all(k.all() for k in keep):
            return [B for B in bases if len(B)]
        bases = [B[k] for B, k in zip(bases, keep)]


def _deg(E: np.ndarray) -> int:
    return int(E.sum(1).max()) if len(E) else 0


def _same(a, b) -> bool:
    return all(len(x) == len(y) and all(np.array_equal(u, v) for u, v in zip(x, y)) for x, y in zip(a, b))


class MomentSDP:
    """The conic problem of a plan: variables are the moments y (y[0] = 1 for the monomial 1)."""

    def __init__(self, problem, plan: Plan):
        self.n = problem.n
        self._index: dict = {}
        self._rows: list = []
        self.columns(np.zeros((1, self.n), dtype=np.int64))
        blocks = []
        for B, g, _ in plan.psd:
            k = len(B)
            iu, ju = np.triu_indices(k)
            P = B[iu] + B[ju]
            E, c = (np.zeros((1, self.n), dtype=np.int64), np.ones(1)) if g is None else g
            rows = np.tile(np.arange(len(iu)), len(c))
            cols = np.concatenate([self.columns(P + e) for e in E])
            blocks.append((rows, cols, np.repeat(c, len(iu)), k))
        eqs = []
        for B, (E, c) in plan.eqs:
            rows = np.tile(np.arange(len(B)), len(c))
            cols = np.concatenate([self.columns(B + e) for e in E])
            eqs.append((rows, cols, np.repeat(c, len(B)), len(B)))
        E, c = problem.f.to_arrays(problem.x)[:2]
        Ny = len(self._index)
        cost = np.zeros(Ny)
        if len(c):
            np.add.at(cost, self.columns(E), c)
        prob = ConicProblem(Ny, c=cost)
        first = sp.csr_matrix(([1.0], ([0], [0])), shape=(1, Ny))
        prob.add_zero(first, [1.0])
        self._eq = [sp.csr_matrix((vals, (rows, cols)), shape=(m, Ny)) for rows, cols, vals, m in eqs]
        self._psd = [(sp.csr_matrix((vals, (rows, cols)), shape=(k * (k + 1) // 2, Ny)), k)
                     for rows, cols, vals, k in blocks]
        for E in self._eq:
            prob.add_zero(E, np.zeros(E.shape[0]))
        for M, k in self._psd:
            prob.add_psd(M, np.zeros(M.shape[0]), k)
        self.problem = prob
        self.exponents = np.array(self._rows, dtype=np.int64).reshape(-1, self.n)

    def sos_problem(self) -> ConicProblem:
        """The conic dual: max t s.t. c - t e_0 - A_eq^T l - sum_k A_k^T (w * z_k) = 0, Z_k PSD (the SOS
        side: f - t = sum of localized SOS terms + equality multipliers). Variables [t, l, z_1, ...];
        w = 1 on diagonals, 2 off them, so that <Z, M(y)> = sum_{i<=j} w_ij Z_ij M_ij. The multipliers
        of its equality rows are the moments y. Interior-point solvers are markedly more accurate on
        this side for the sparse chained problems (the moment side stops at 1e-5..1e-3)."""
        Ny = len(self.problem.c)
        cols = [sp.csr_matrix(([1.0], ([0], [0])), shape=(Ny, 1))] + [E.T.tocsr() for E in self._eq]
        sizes = []
        for M, k in self._psd:
            iu, ju = np.triu_indices(k)
            cols.append((M.T @ sp.diags(np.where(iu == ju, 1.0, 2.0))).tocsr())
            sizes.append(k)
        A = sp.hstack(cols).tocsr()
        nv = A.shape[1]
        prob = ConicProblem(nv, c=np.r_[-1.0, np.zeros(nv - 1)])
        prob.add_zero(A, self.problem.c)
        off = 1 + sum(E.shape[0] for E in self._eq)
        for k in sizes:
            m = k * (k + 1) // 2
            prob.add_psd(sp.csr_matrix((np.ones(m), (np.arange(m), off + np.arange(m))), shape=(m, nv)), np.zeros(m), k)
            off += m
        return prob

    def columns(self, E: np.ndarray) -> np.ndarray:
        """Moment column of each exponent row (new rows get new columns while building)."""
        index, rows = self._index, self._rows
        out = np.empty(len(E), dtype=np.int64)
        for i, (key, row) in enumerate(zip(row_keys(E), np.asarray(E))):
            b = key.tobytes()
            j = index.get(b)
            if j is None:
                j = index[b] = len(rows)
                rows.append(row)
            out[i] = j
        return out

    def matrix(self, y: np.ndarray, B: np.ndarray) -> np.ndarray:
        """Moment matrix (k, k) over basis rows B from a solved moment vector."""
        k = len(B)
        I, J = np.triu_indices(k)
        M = np.zeros((k, k))
        M[I, J] = y[self.columns(B[I] + B[J])]
        M[J, I] = M[I, J]
        return M
