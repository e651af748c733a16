"""Sparsity patterns that split a moment / SOS relaxation into small blocks.

Correlative sparsity (Waki, Kim, Kojima, Muramatsu 2006): variables that never meet in a monomial of
the objective or in a common constraint need no joint moments. Their interaction graph is made chordal;
its maximal cliques, ordered so that each one meets the union of the earlier ones inside a single
earlier clique (running intersection), index one moment matrix each.

Term sparsity (TSSOS, Wang, Magron, Lasserre 2021): inside a moment matrix over basis z, entry (i, j)
matters only if z_i z_j is in the support S of the data (or is an even square). That graph is closed to
a chordal graph (its maximal cliques) or to complete connected components ("block" closure), the
support grows by the products the blocks now contain, and the procedure repeats until it stabilises.
Both are relaxations of the dense hierarchy: bounds are lower than or equal to the dense ones, equal
on many structured problems (chains, sums of local squares).
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from .newton import row_keys

EXTENSIONS = ("chordal", "block")
# networkx is imported inside the functions: it takes ~0.7 s, and most users of sdpr_loc.poly never
# build a sparse relaxation.


def interaction_graph(n: int, objective: np.ndarray, groups: Iterable[Sequence[int]] = ()):
    """Variables 0..n-1; an edge when two variables share a monomial of the objective (exponent rows
    ``objective (t, n)``) or a group (the variables of one constraint)."""
    import networkx as nx

    G = nx.Graph()
    G.add_nodes_from(range(n))
    for row in np.asarray(objective, dtype=np.int64).reshape(-1, n):
        v = np.flatnonzero(row).tolist()
        G.add_edges_from((a, b) for i, a in enumerate(v) for b in v[i + 1:])
    for grp in groups:
        v = sorted(set(int(i) for i in grp))
        G.add_edges_from((a, b) for i, a in enumerate(v) for b in v[i + 1:])
    return G


def chordal_cliques(G) -> list[np.ndarray]:
    """Maximal cliques of a chordal extension of G, in a running-intersection order.

    The extension is networkx's MCS-M (a minimal triangulation). The order walks a maximum-weight
    spanning tree of the clique graph (weights = intersection sizes), which is a clique tree for a
    chordal graph, so each clique's overlap with all earlier ones lies in its tree parent."""
    import networkx as nx

    H, _ = nx.complete_to_chordal_graph(G) if not nx.is_chordal(G) else (G, None)
    cliques = [np.array(sorted(c), dtype=np.int64) for c in nx.chordal_graph_cliques(H)]
    cliques.sort(key=lambda c: (c[0], len(c)))
    if len(cliques) <= 1:
        return cliques
    T = nx.Graph()
    T.add_nodes_from(range(len(cliques)))
    sets = [set(c.tolist()) for c in cliques]
    for i in range(len(sets)):
        for j in range(i + 1, len(sets)):
            w = len(sets[i] & sets[j])
            if w:
                T.add_edge(i, j, weight=w)
    order: list[int] = []
    for comp in nx.connected_components(T):
        tree = nx.maximum_spanning_tree(T.subgraph(comp))
        order += list(nx.bfs_tree(tree, min(comp)))
    return [cliques[i] for i in order]


def running_intersection(cliques: Sequence[np.ndarray]) -> bool:
    """True when every clique meets the union of the earlier ones inside one earlier clique."""
    seen: set = set()
    for k, c in enumerate(cliques):
        inter = set(c.tolist()) & seen
        if inter and not any(inter <= set(cliques[j].tolist()) for j in range(k)):
            return False
        seen |= set(c.tolist())
    return True


def term_blocks(B: np.ndarray, support: set, shifts: np.ndarray | None = None,
                extension: str = "block") -> list[np.ndarray]:
    """Blocks (index arrays into the basis rows ``B (k, n)``) of one term-sparsity step.

    Edge (i, j) when B_i + B_j + s is in ``support`` (a set of ``row_keys``) for some shift s in
    ``shifts`` (the exponents of a localizing polynomial; default: only 0). Diagonal entries are always
    kept. ``extension``: "chordal" (maximal cliques of a chordal extension) or "block" (connected
    components, completed)."""
    import networkx as nx

    if extension not in EXTENSIONS:
        raise ValueError(f"term-sparsity extension must be one of {EXTENSIONS}, got {extension!r}")
    k, n = B.shape
    shifts = np.zeros((1, n), dtype=np.int64) if shifts is None else np.asarray(shifts, dtype=np.int64)
    iu, ju = np.triu_indices(k, 1)
    hit = np.zeros(len(iu), dtype=bool)
    if len(iu):
        P = B[iu] + B[ju]
        for s in shifts:
            keys = row_keys(P + s)
            hit |= np.fromiter((key.tobytes() in support for key in keys), dtype=bool, count=len(keys))
    G = nx.Graph()
    G.add_nodes_from(range(k))
    G.add_edges_from(zip(iu[hit].tolist(), ju[hit].tolist()))
    if extension == "block":
        blocks = [np.array(sorted(c), dtype=np.int64) for c in nx.connected_components(G)]
    else:
        H = G if nx.is_chordal(G) else nx.complete_to_chordal_graph(G)[0]
        blocks = [np.array(sorted(c), dtype=np.int64) for c in nx.chordal_graph_cliques(H)]
    return sorted(blocks, key=lambda b: (b[0], len(b)))


def block_support(B: np.ndarray, blocks: Sequence[np.ndarray], shifts: np.ndarray | None = None) -> set:
    """Keys of every product B_i + B_j (+ shift) that some block contains."""
    out: set = set()
    n = B.shape[1]
    shifts = np.zeros((1, n), dtype=np.int64) if shifts is None else np.asarray(shifts, dtype=np.int64)
    for blk in blocks:
        iu, ju = np.triu_indices(len(blk))
        P = B[blk[iu]] + B[blk[ju]]
        for s in shifts:
            out.update(k.tobytes() for k in row_keys(P + s))
    return out
