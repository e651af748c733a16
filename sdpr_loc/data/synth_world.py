"""Synthetic 3D worlds: textured planar quads and boxes around a closed road.

A world is a list of parallelogram quads (ground, box faces, posters), the boxes that cast
shadows, street lamps, and a :class:`LoopRoad` that vehicles drive. World frame: x east, y north,
z up (REP 103), metres; the ground is z = 0. :func:`make_world` builds a small town (buildings
with facades, parked cars, lamp posts, bins, walls, billboards with photographs) from a seed.
Everything random comes from that seed, so a world is reproducible and shared by the teach and
the repeat drives.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .textures import TextureAtlas, standard_materials

__all__ = ["Quad", "Box", "LoopRoad", "World", "make_world", "check_seed", "TEXTURE_METRES"]

# metres covered by one repeat of each tiled material (u, v)
TEXTURE_METRES = {
    "grass": (2.0, 2.0), "asphalt": (3.0, 3.0), "gravel": (1.5, 1.5), "paving": (2.0, 2.0),
    "brick": (1.6, 1.6), "concrete": (4.0, 4.0), "plaster": (4.0, 4.0), "planks": (1.6, 1.6),
    "brick_windows": (3.0, 3.2), "concrete_windows": (3.2, 3.4), "plaster_windows": (3.0, 3.2),
    "metal": (2.0, 2.0),
}


@dataclass
class Quad:
    """Parallelogram ``origin + a * u + b * v``, a, b in [0, 1], seen from the side of u x v.

    Texture: ``s = a * repeats[0] + offset[0]``, ``t = b * repeats[1] + offset[1]`` with t
    growing towards the image top (build vertical quads bottom-up). ``box`` is the owning box
    (its own faces cannot shadow it), -1 for none.
    """

    origin: np.ndarray
    u: np.ndarray
    v: np.ndarray
    material: int
    repeats: tuple[float, float] = (1.0, 1.0)
    offset: tuple[float, float] = (0.0, 0.0)
    albedo: float = 1.0
    box: int = -1
    ground: bool = False

    @property
    def normal(self) -> np.ndarray:
        n = np.cross(self.u, self.v)
        return n / np.linalg.norm(n)

    def corners(self) -> np.ndarray:
        o, u, v = self.origin, self.u, self.v
        return np.stack([o, o + u, o + u + v, o + v])


@dataclass
class Box:
    """Upright box: base centre (x, y, z0), size (length along yaw, width, height), yaw (rad)."""

    center: np.ndarray
    size: np.ndarray
    yaw: float

    def axes(self) -> tuple[np.ndarray, np.ndarray]:
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        return np.array([c, s, 0.0]), np.array([-s, c, 0.0])

    def corners(self) -> np.ndarray:
        """(8, 3): bottom four then top four."""
        ex, ey = self.axes()
        l, w, h = self.size
        base = [self.center + sx * ex * l / 2 + sy * ey * w / 2
                for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
        bottom = np.stack(base)
        return np.concatenate([bottom, bottom + [0.0, 0.0, h]])

    def footprint(self) -> np.ndarray:
        return self.corners()[:4, :2]


class LoopRoad:
    """A closed road centreline driven counter-clockwise; lateral offsets are + to the left.

    points: (M, 2) densely sampled centreline (not repeating the first point).
    """

    def __init__(self, points: np.ndarray, half_width: float = 5.0, sidewalk: float = 2.5,
                 lane_offset: float = 1.75, edge_line: float = 3.6) -> None:
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 8:
            raise ValueError(f"road points must be (M >= 8, 2), got {pts.shape}")
        self.points = pts
        seg = np.roll(pts, -1, axis=0) - pts
        seglen = np.linalg.norm(seg, axis=1)
        if np.any(seglen <= 0):
            raise ValueError("road points must be distinct")
        self.s = np.concatenate([[0.0], np.cumsum(seglen)])
        self.length = float(self.s[-1])
        self.half_width = half_width
        self.sidewalk = sidewalk
        self.lane_offset = lane_offset
        self.edge_line = edge_line
        tang = np.roll(pts, -1, axis=0) - np.roll(pts, 1, axis=0)
        self.tangent = tang / np.linalg.norm(tang, axis=1, keepdims=True)
        self._tree = None
        self._fields: dict = {}

    def at(self, s: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Centreline point (..., 2) and heading (...) at arc length s (wraps around)."""
        s = np.mod(np.asarray(s, dtype=np.float64), self.length)
        pts = np.vstack([self.points, self.points[:1]])
        xy = np.stack([np.interp(s, self.s, pts[:, 0]), np.interp(s, self.s, pts[:, 1])], -1)
        tan = np.vstack([self.tangent, self.tangent[:1]])
        tx, ty = np.interp(s, self.s, tan[:, 0]), np.interp(s, self.s, tan[:, 1])
        return xy, np.arctan2(ty, tx)

    def frame(self, s: np.ndarray | float, lateral: np.ndarray | float = 0.0
              ) -> tuple[np.ndarray, np.ndarray]:
        """Point at arc length s shifted ``lateral`` metres to the left, and the road heading."""
        xy, yaw = self.at(s)
        left = np.stack([-np.sin(yaw), np.cos(yaw)], -1)
        return xy + np.asarray(lateral)[..., None] * left, yaw

    def signed_distance(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Signed lateral distance (+ left) to the centreline and arc length of the nearest point."""
        from scipy.spatial import cKDTree

        if self._tree is None:
            self._tree = cKDTree(self.points)
        xy = np.asarray(xy, dtype=np.float64)
        flat = xy.reshape(-1, 2)
        _, idx = self._tree.query(flat)
        m = len(self.points)
        best_d = np.full(len(flat), np.inf)
        best_sd = np.zeros(len(flat))
        best_s = np.zeros(len(flat))
        for k in (-2, -1, 0, 1):  # exact projection on the segments around the nearest sample
            i0 = (idx + k) % m
            i1 = (i0 + 1) % m
            a, b = self.points[i0], self.points[i1]
            ab = b - a
            L = np.linalg.norm(ab, axis=1)
            tpar = np.clip(np.einsum("ij,ij->i", flat - a, ab) / L**2, 0.0, 1.0)
            proj = a + tpar[:, None] * ab
            diff = flat - proj
            d = np.linalg.norm(diff, axis=1)
            cross = ab[:, 0] * diff[:, 1] - ab[:, 1] * diff[:, 0]
            better = d < best_d
            best_d = np.where(better, d, best_d)
            best_sd = np.where(better, np.where(cross >= 0, d, -d), best_sd)
            best_s = np.where(better, self.s[i0] + tpar * L, best_s)
        shape = xy.shape[:-1]
        return best_sd.reshape(shape), np.mod(best_s, self.length).reshape(shape)

    @property
    def dash_period(self) -> float:
        """Centre-line dash period (about 9 m), a whole fraction of the loop."""
        return self.length / max(1, round(self.length / 9.0))

    def fields(self, lo: float, hi: float, res: float) -> dict:
        """Raster of (signed distance, cos, sin of the dash phase) over [lo, hi]^2 for shading.

        Distance fields interpolate linearly, so lane markings stay sharp at any view distance
        even from a coarse grid. The dash period divides the loop length (no seam at s = 0).
        """
        key = (lo, hi, res)
        if key not in self._fields:
            n = int(np.ceil((hi - lo) / res)) + 1
            g = lo + res * np.arange(n)
            X, Y = np.meshgrid(g, g)
            d, s = self.signed_distance(np.stack([X, Y], -1))
            ph = 2 * np.pi * s / self.dash_period
            img = np.stack([d, np.cos(ph), np.sin(ph)], -1).astype(np.float32)
            self._fields[key] = {"image": img, "lo": lo, "res": res}
        return self._fields[key]


def _loop_points(rng: np.random.Generator, radius: float, n: int = 2400) -> np.ndarray:
    phi = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = np.full(n, radius)
    for k, amp in ((2, 0.09), (3, 0.05), (4, 0.025)):
        r += radius * rng.uniform(0.3, 1.0) * amp * np.cos(k * phi + rng.uniform(0, 2 * np.pi))
    return np.stack([r * np.cos(phi), r * np.sin(phi)], -1)


class World:
    """Textured quads, shadow-casting boxes, lamps and an optional road. Build, then render.

    seed: drives every random choice of :func:`make_world` and the procedural textures.
    materials: (name, texture, tiled) list; default: :func:`standard_materials`.
    """

    def __init__(self, seed: int = 0, texture_size: int = 256,
                 materials: list[tuple[str, np.ndarray, bool]] | None = None) -> None:
        self.seed = int(seed)
        self.texture_size = int(texture_size)
        if materials is None:
            materials = standard_materials(np.random.default_rng([self.seed, 1]), texture_size)
        self.materials = list(materials)
        self.quads: list[Quad] = []
        self.boxes: list[Box] = []
        self.lamps: list[np.ndarray] = []
        self.road: LoopRoad | None = None
        self.extent: float = 0.0
        self._atlas: TextureAtlas | None = None
        self._compiled: dict | None = None
        self._lightmaps: dict = {}

    # ----- building -----
    def _changed(self) -> None:
        self._compiled = None
        self._lightmaps.clear()

    def material(self, name: str) -> int:
        for i, (n, _, _) in enumerate(self.materials):
            if n == name:
                return i
        raise ValueError(f"unknown material {name!r}; known: "
                         + ", ".join(n for n, _, _ in self.materials))

    def add_material(self, name: str, texture: np.ndarray, tiled: bool = True) -> int:
        """Register a gray texture (any size, float [0, 1]); returns its index."""
        tex = np.asarray(texture, dtype=np.float32)
        if tex.ndim != 2:
            raise ValueError(f"texture {name!r} must be 2-D gray, got shape {tex.shape}")
        if any(n == name for n, _, _ in self.materials):
            raise ValueError(f"material {name!r} exists already")
        self.materials.append((name, np.clip(tex, 0.0, 1.0), bool(tiled)))
        self._atlas = None
        self._changed()
        return len(self.materials) - 1

    def add_quad(self, origin, u, v, material: str | int, *,
                 metres: tuple[float, float] | None = None, snap: bool = False,
                 offset: tuple[float, float] = (0.0, 0.0), albedo: float = 1.0, box: int = -1,
                 ground: bool = False) -> int:
        """Add a parallelogram; ``metres`` = size of one texture repeat (None: stretch once).

        snap rounds the repeat counts to whole numbers (whole windows on a facade).
        """
        o, u, v = (np.asarray(x, dtype=np.float64).reshape(3) for x in (origin, u, v))
        area = np.linalg.norm(np.cross(u, v))
        if not area > 1e-9:
            raise ValueError("quad edges u and v must be non-zero and not parallel")
        mat = self.material(material) if isinstance(material, str) else int(material)
        if not 0 <= mat < len(self.materials):
            raise ValueError(f"material index {mat} out of range")
        if metres is None:
            metres = TEXTURE_METRES.get(self.materials[mat][0]) if self.materials[mat][2] else None
        if metres is None:
            reps = (1.0, 1.0)
        else:
            reps = (np.linalg.norm(u) / metres[0], np.linalg.norm(v) / metres[1])
            if snap:
                reps = tuple(float(max(1, round(r))) for r in reps)
        self.quads.append(Quad(o, u, v, mat, (float(reps[0]), float(reps[1])),
                               (float(offset[0]), float(offset[1])), float(albedo), int(box),
                               bool(ground)))
        self._changed()
        return len(self.quads) - 1

    def add_box(self, center, size, yaw: float = 0.0, *, material: str = "concrete",
                faces: dict[str, str] | None = None, top: bool = True, snap: bool = False,
                albedo: float = 1.0, rng: np.random.Generator | None = None,
                shadows: bool = True) -> int:
        """Upright box on its base centre; faces "+x", "-x", "+y", "-y" (local axes), "top".

        Vertical faces are built bottom-up so facade textures stand upright.
        """
        box = Box(np.asarray(center, dtype=np.float64).reshape(3),
                  np.asarray(size, dtype=np.float64).reshape(3), float(yaw))
        if np.any(box.size <= 0):
            raise ValueError(f"box size must be positive, got {box.size}")
        bid = len(self.boxes) if shadows else -1
        if shadows:
            self.boxes.append(box)
        faces = faces or {}
        ex, ey = box.axes()
        ez = np.array([0.0, 0.0, 1.0])
        l, w, h = box.size
        c = box.center
        for name, n, half, width in (("+x", ex, l / 2, w), ("-x", -ex, l / 2, w),
                                     ("+y", ey, w / 2, l), ("-y", -ey, w / 2, l)):
            right = np.cross(ez, n)
            origin = c + n * half - right * width / 2
            off = (0.0, 0.0) if rng is None or snap else tuple(rng.uniform(0, 1, 2))
            self.add_quad(origin, right * width, ez * h, faces.get(name, material), snap=snap,
                          offset=off, albedo=albedo, box=bid)
        if top:
            origin = c + ez * h - ex * l / 2 - ey * w / 2
            self.add_quad(origin, ex * l, ey * w, faces.get("top", material), albedo=albedo,
                          box=bid)
        return bid

    def add_lamp(self, position) -> None:
        self.lamps.append(np.asarray(position, dtype=np.float64).reshape(3))
        self._changed()

    # ----- compiled views used by the renderer -----
    @property
    def atlas(self) -> TextureAtlas:
        if self._atlas is None:
            self._atlas = TextureAtlas.build(self.materials, self.texture_size)
        return self._atlas

    def compiled(self) -> dict:
        """Quads as arrays: origins, edges, dual edges (for a, b), normals, texture data."""
        if self._compiled is None:
            if not self.quads:
                raise ValueError("the world has no quads to render")
            O = np.stack([q.origin for q in self.quads])
            U = np.stack([q.u for q in self.quads])
            V = np.stack([q.v for q in self.quads])
            N = np.cross(U, V)
            N /= np.linalg.norm(N, axis=1, keepdims=True)
            uu, vv, uv = (U * U).sum(1), (V * V).sum(1), (U * V).sum(1)
            det = uu * vv - uv**2
            Ud = (vv[:, None] * U - uv[:, None] * V) / det[:, None]  # a = Ud . (p - o)
            Vd = (uu[:, None] * V - uv[:, None] * U) / det[:, None]  # b = Vd . (p - o)
            reps = np.array([q.repeats for q in self.quads])
            size = self.texture_size
            # texels per metre along u and v at mip level 0 (for the level of detail)
            tpm = np.maximum(reps[:, 0] / np.sqrt(uu), reps[:, 1] / np.sqrt(vv)) * size
            self._compiled = {
                "O": O, "U": U, "V": V, "N": N, "Ud": Ud, "Vd": Vd,
                "corners": np.stack([q.corners() for q in self.quads]),
                "mat": np.array([q.material for q in self.quads], np.int32),
                "reps": reps.astype(np.float32),
                "offset": np.array([q.offset for q in self.quads], np.float32),
                "albedo": np.array([q.albedo for q in self.quads], np.float32),
                "tpm": tpm.astype(np.float32),
                "box": np.array([q.box for q in self.quads], np.int32),
                "ground": np.array([q.ground for q in self.quads], bool),
            }
        return self._compiled


# --------------------------------------------------------------------------------------------
# the town
# --------------------------------------------------------------------------------------------
def _overlaps(a: np.ndarray, b: np.ndarray, margin: float = 0.5) -> bool:
    """Separating-axis test of two convex footprints (4, 2), grown by ``margin``."""
    for poly in (a, b):
        for i in range(len(poly)):
            e = poly[(i + 1) % len(poly)] - poly[i]
            n = np.array([-e[1], e[0]]) / np.linalg.norm(e)
            pa, pb = a @ n, b @ n
            if pa.max() + margin < pb.min() or pb.max() + margin < pa.min():
                return False
    return True


def _edge_samples(fp: np.ndarray, step: float = 1.0) -> np.ndarray:
    pts = []
    for i in range(4):
        a, b = fp[i], fp[(i + 1) % 4]
        k = max(2, int(np.ceil(np.linalg.norm(b - a) / step)) + 1)
        pts.append(a + np.linspace(0, 1, k)[:, None] * (b - a))
    return np.concatenate(pts)


def check_seed(seed, what: str) -> None:
    """Seeds feed numpy's generators, which take ints >= 0: say so instead of numpy's traceback."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{what} must be an int >= 0, got {seed!r}")


def make_world(seed: int = 0, *, radius: float = 60.0, texture_size: int = 256) -> World:
    """A small town around a closed road (about 2*pi*radius metres long) from ``seed`` (an int >= 0)."""
    check_seed(seed, "world seed")
    world = World(seed, texture_size)
    rng = np.random.default_rng([int(seed), 2])
    road = LoopRoad(_loop_points(rng, radius))
    world.road = road
    hw, walk = road.half_width, road.sidewalk
    extent = radius * 1.25 + 60.0
    world.extent = extent
    world.add_quad([-extent, -extent, 0.0], [2 * extent, 0, 0], [0, 2 * extent, 0], "grass",
                   ground=True)
    footprints: list[np.ndarray] = []

    def free(fp: np.ndarray, clearance: float) -> bool:
        d, _ = road.signed_distance(_edge_samples(fp))
        if np.min(np.abs(d)) < clearance:
            return False
        if np.max(np.abs(fp)) > extent - 2:
            return False
        return not any(_overlaps(fp, other) for other in footprints)

    def place(s: float, lateral: float, size, yaw_extra: float = 0.0, clearance: float = hw + 0.3,
              **kw) -> tuple[Box, int] | None:
        xy, yaw = road.frame(s, lateral)
        box = Box(np.array([xy[0], xy[1], 0.0]), np.asarray(size, float), yaw + yaw_extra)
        fp = box.footprint()
        if not free(fp, clearance):
            return None
        footprints.append(fp)
        return box, world.add_box(box.center, box.size, box.yaw, rng=rng, **kw)

    facades = ["brick_windows", "concrete_windows", "plaster_windows", "brick_windows"]
    sides = ["brick", "concrete", "plaster", "brick"]
    photos = [n for n, _, _ in world.materials if n.startswith("photo_")]
    L = road.length
    # buildings on both sides, with gaps filled by walls, fences and billboards
    for side in (-1, 1):  # -1: right of travel (outside the loop), +1: left (inside)
        s = rng.uniform(0, 10)
        while s < L - 12:
            length, depth = rng.uniform(8, 22), rng.uniform(7, 14)
            height = rng.uniform(5, 16) if side < 0 else rng.uniform(4, 11)
            setback = hw + walk + rng.uniform(0.5, 4.0)
            lateral = side * (setback + depth / 2)
            k = rng.integers(len(facades))
            # local +y points left of travel: the road-facing face is -y on the left side
            front = "-y" if side > 0 else "+y"
            faces = {front: facades[k]}
            placed = place(s + length / 2, lateral, (length, depth, height),
                           material=sides[k], faces=faces, top=False, snap=True,
                           albedo=float(rng.uniform(0.75, 1.1)),
                           clearance=hw + walk)
            if placed and photos and rng.random() < 0.4:  # a poster on the road-facing wall
                box, bid = placed
                ex, ey = box.axes()
                n = -ey if side > 0 else ey
                right = np.cross([0.0, 0.0, 1.0], n)
                pw = min(rng.uniform(1.5, 3.5), length - 1.0)
                ph = pw * rng.uniform(0.6, 0.9)
                shift = rng.uniform(-(length - pw) / 2 + 0.3, (length - pw) / 2 - 0.3)
                o = (box.center + n * (depth / 2 + 0.03) + right * (shift - pw / 2)
                     + [0.0, 0.0, rng.uniform(0.4, 1.2)])
                world.add_quad(o, right * pw, [0.0, 0.0, ph], photos[rng.integers(len(photos))],
                               box=bid)
            gap = rng.uniform(2, 9) if rng.random() < 0.75 else rng.uniform(12, 22)
            if placed and gap > 6:
                g0 = s + length + 1.0
                kind = rng.random()
                if kind < 0.4 and photos:  # billboard with a photograph, on two posts
                    bw, bh = rng.uniform(3, 5), rng.uniform(2, 3)
                    lat = side * (hw + walk + rng.uniform(1, 3))
                    photo = photos[rng.integers(len(photos))]
                    front_b = "-y" if side > 0 else "+y"
                    for post in (-0.4, 0.4):
                        place(g0 + gap / 2 + post * bw, lat, (0.15, 0.15, 1.2), material="metal",
                              clearance=hw + 0.5)
                    xy, yaw = road.frame(g0 + gap / 2, lat)
                    world.add_box([xy[0], xy[1], 1.2], (bw, 0.15, bh), yaw, material="metal",
                                  faces={front_b: photo})
                elif kind < 0.8:  # low wall or fence along the sidewalk
                    wl = gap - 2.0
                    lat = side * (hw + walk + 0.4)
                    mat = ["brick", "planks", "concrete"][rng.integers(3)]
                    place(g0 + wl / 2, lat, (wl, 0.3, rng.uniform(0.8, 2.0)), material=mat,
                          clearance=hw + 1.0)
            s += length + gap
    # street lamps alternating sides, lamps at night
    s = rng.uniform(0, 10)
    side = 1
    while s < L - 5:
        lat = side * (hw + 0.6)
        xy, yaw = road.frame(s, lat)
        if place(s, lat, (0.18, 0.18, 5.5), material="metal", clearance=hw + 0.2):
            inward = -side * 1.0
            head_xy, _ = road.frame(s, lat + inward)
            world.add_box([head_xy[0], head_xy[1], 5.3], (0.5, 1.4, 0.2), yaw, material="metal",
                          shadows=False)
            world.add_lamp([head_xy[0], head_xy[1], 5.2])
        s += rng.uniform(24, 34)
        side = -side
    # parked cars on the kerb side of both lanes, bins and bollards on the sidewalks
    s = rng.uniform(0, 20)
    while s < L - 6:
        side = -1 if rng.random() < 0.6 else 1
        lat = side * (hw - 1.1)
        k = rng.integers(4)
        faces = {"+y": f"car{k}", "-y": f"car{k}"}
        place(s, lat, (4.4, 1.8, 1.45), float(rng.normal(0, 0.03)), material="metal",
              faces=faces, clearance=hw - 2.2, albedo=float(rng.uniform(0.6, 1.0)))
        s += rng.uniform(8, 30)
    for _ in range(int(L / 12)):
        s = rng.uniform(0, L)
        side = -1 if rng.random() < 0.5 else 1
        lat = side * (hw + rng.uniform(0.5, walk - 0.3))
        size = (0.6, 0.6, 1.1) if rng.random() < 0.5 else (0.25, 0.25, 0.9)
        place(s, lat, size, float(rng.uniform(0, 1.5)), material=["metal", "planks", "concrete"][
            rng.integers(3)], clearance=hw + 0.3)
    return world
