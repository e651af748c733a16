"""Gray textures for the synthetic worlds, and a mip-mapped atlas to sample them fast.

Surfaces get real photographic texture (scikit-image ships brick, grass, gravel and several
photographs inside the package, so nothing is downloaded) plus procedural detail: window grids,
paving joints, planks, car bodies, low-frequency stains. Keypoint networks learn from texture
statistics, so photographs matter more than a pretty procedural look.

All materials are square ``size x size`` float32 gray images in [0, 1]. A tiled material repeats
(its edges are blended so the seams do not show); a clamped one (posters, car sides) maps once
onto its quad. :class:`TextureAtlas` packs every material at every mip level into one image, so a
whole frame is textured with two ``cv2.remap`` calls (trilinear filtering between levels), which
keeps distant ground and walls free of aliasing shimmer.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["photo", "make_tileable", "value_noise", "standard_materials", "TextureAtlas",
           "remap_points", "PHOTOS", "TILED_PHOTOS"]

# photographs bundled with scikit-image (checked to load without network access)
TILED_PHOTOS = ("brick", "grass", "gravel")
PHOTOS = ("camera", "astronaut", "chelsea", "coffee", "rocket", "coins", "page", "text", "moon",
          "clock", "hubble_deep_field", "immunohistochemistry", "cell", "retina")


def photo(name: str) -> np.ndarray:
    """A scikit-image bundled photograph as float32 gray in [0, 1]."""
    import skimage.data

    fn = getattr(skimage.data, name, None)
    if fn is None:
        raise ValueError(f"skimage.data has no image {name!r}")
    img = np.asarray(fn())
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 3:
        img = img[..., :3]
        img = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)
    img = img.astype(np.float32)
    lo, hi = float(img.min()), float(img.max())
    return (img - lo) / max(hi - lo, 1e-6)


def remap_points(image: np.ndarray, mx: np.ndarray, my: np.ndarray,
                 border: int = cv2.BORDER_REPLICATE) -> np.ndarray:
    """Bilinear samples of ``image`` at float pixel coordinates of any shape (cv2.remap).

    cv2.remap wants maps under 32767 rows, so flat coordinate lists are folded into rows of
    1024 samples. Pixel centres are at integer coordinates.
    """
    shape = mx.shape
    n = mx.size
    cols = 1024 if n > 1024 else max(n, 1)
    rows = -(-n // cols)
    fx = np.zeros(rows * cols, np.float32)
    fy = np.zeros(rows * cols, np.float32)
    fx[:n] = mx.reshape(-1)
    fy[:n] = my.reshape(-1)
    out = cv2.remap(image, fx.reshape(rows, cols), fy.reshape(rows, cols), cv2.INTER_LINEAR,
                    borderMode=border)
    if out.ndim == 3:
        return out.reshape(rows * cols, -1)[:n].reshape(*shape, out.shape[-1])
    return out.reshape(-1)[:n].reshape(shape)


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    interp = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_CUBIC
    return cv2.resize(img, (size, size), interpolation=interp)


def make_tileable(img: np.ndarray) -> np.ndarray:
    """Seamless tile: cross-fade with the copy shifted by half a period on both axes.

    The copy's content is continuous across the original's borders, and a weight that is 0 at
    the borders hides the original's seam. Dividing by the weights' norm keeps the contrast.
    """
    h, w = img.shape
    wy = np.sin(np.pi * (np.arange(h) + 0.5) / h) ** 2
    wx = np.sin(np.pi * (np.arange(w) + 0.5) / w) ** 2
    a = (wy[:, None] * wx[None, :]).astype(np.float32)
    shifted = np.roll(img, (h // 2, w // 2), axis=(0, 1))
    mean = img.mean()
    out = (a * (img - mean) + (1 - a) * (shifted - mean)) / np.sqrt(a * a + (1 - a) ** 2)
    return (out + mean).astype(np.float32)


def value_noise(rng: np.random.Generator, size: int, cells: int, octaves: int = 1) -> np.ndarray:
    """Tileable smooth noise, zero mean, unit std: cubic upsampling of a periodic random grid."""
    out = np.zeros((size, size), np.float32)
    amp = 1.0
    for o in range(octaves):
        n = max(2, cells * 2**o)
        if n > size:
            break
        g = rng.standard_normal((n, n)).astype(np.float32)
        big = cv2.resize(np.tile(g, (3, 3)), (3 * size, 3 * size), interpolation=cv2.INTER_CUBIC)
        out += amp * big[size:2 * size, size:2 * size]
        amp *= 0.5
    out -= out.mean()
    return out / max(float(out.std()), 1e-6)


def _normalise(img: np.ndarray, mean: float, std: float) -> np.ndarray:
    z = (img - img.mean()) / max(float(img.std()), 1e-6)
    return np.clip(mean + std * z, 0.02, 1.0).astype(np.float32)


def _rect(img: np.ndarray, y0: float, y1: float, x0: float, x1: float, value, size: int) -> None:
    img[int(y0 * size):int(y1 * size), int(x0 * size):int(x1 * size)] = value


def _facade(base: np.ndarray, rng: np.random.Generator, size: int, lit: float) -> np.ndarray:
    """One bay of a facade: base wall texture with a framed window (rows: top of image = up)."""
    img = base.copy()
    glass = 0.12 + 0.1 * value_noise(rng, size, 2) * 0.3
    yy = np.linspace(0, 1, size, dtype=np.float32)[:, None]
    glass = glass + 0.18 * yy * lit  # sky reflection gradient
    x0, x1, y0, y1 = 0.2, 0.8, 0.18, 0.72
    f = 0.03
    _rect(img, y0 - f, y1 + f, x0 - f, x1 + f, 0.85, size)  # frame
    win = img[int(y0 * size):int(y1 * size), int(x0 * size):int(x1 * size)]
    win[...] = np.clip(glass[int(y0 * size):int(y1 * size), int(x0 * size):int(x1 * size)], 0, 1)
    mid = int(0.5 * size)
    img[int(y0 * size):int(y1 * size), mid - 2:mid + 2] = 0.8  # mullion
    _rect(img, y1 + f, y1 + f + 0.04, x0 - 0.06, x1 + 0.06, 0.9, size)  # sill
    return np.clip(img, 0.02, 1.0)


def _planks(rng: np.random.Generator, size: int) -> np.ndarray:
    grain = cv2.resize(rng.standard_normal((size, 8)).astype(np.float32), (size, size),
                       interpolation=cv2.INTER_CUBIC)
    img = 0.45 + 0.06 * grain + 0.04 * value_noise(rng, size, 8)
    for x in range(0, size, size // 8):
        img[:, x:x + 2] = 0.15
    return np.clip(img, 0.02, 1).astype(np.float32)


def _paving(rng: np.random.Generator, size: int, gravel: np.ndarray) -> np.ndarray:
    img = _normalise(gravel, 0.6, 0.06) + 0.05 * value_noise(rng, size, 4)
    step = size // 4
    for k in range(0, size, step):
        img[k:k + 2, :] *= 0.55
        img[:, k:k + 2] *= 0.55
    return np.clip(img, 0.02, 1).astype(np.float32)


def _car(rng: np.random.Generator, size: int) -> np.ndarray:
    """Side of a car (clamped): body, window band, two dark wheels."""
    body = float(rng.uniform(0.25, 0.85))
    img = np.full((size, size), body, np.float32) + 0.03 * value_noise(rng, size, 3)
    _rect(img, 0.08, 0.42, 0.2, 0.82, 0.12, size)  # windows (top of image = roof)
    img[int(0.42 * size):int(0.46 * size)] *= 0.7
    img[int(0.6 * size):int(0.63 * size)] = body * 0.6  # door line
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for cx in (0.2, 0.8):
        r = np.hypot(xx - cx, yy - 0.9)
        img[r < 0.13] = 0.07
        img[r < 0.06] = 0.5
    return np.clip(img, 0.02, 1)


def standard_materials(rng: np.random.Generator, size: int = 256
                       ) -> list[tuple[str, np.ndarray, bool]]:
    """(name, texture, tiled) for the town: photographs plus procedural surfaces."""
    # skimage's brick wall is photographed with the courses vertical: turn it upright
    brick = _normalise(make_tileable(_resize(np.rot90(photo("brick")).copy(), size)), 0.5, 0.16)
    grass = _normalise(make_tileable(_resize(photo("grass"), size)), 0.42, 0.14)
    gravel = _normalise(make_tileable(_resize(photo("gravel"), size)), 0.5, 0.15)
    concrete = np.clip(0.62 + 0.07 * value_noise(rng, size, 3, 4)
                       + 0.03 * rng.standard_normal((size, size)).astype(np.float32), 0.02, 1)
    plaster = np.clip(0.7 + 0.05 * value_noise(rng, size, 2, 5), 0.02, 1)
    asphalt = np.clip(0.28 + 0.45 * (gravel - 0.5) * 0.35 + 0.025 * value_noise(rng, size, 16, 2),
                      0.02, 1)
    mats: list[tuple[str, np.ndarray, bool]] = [
        ("grass", grass, True), ("asphalt", asphalt.astype(np.float32), True),
        ("gravel", gravel, True), ("paving", _paving(rng, size, gravel), True),
        ("brick", brick, True), ("concrete", concrete.astype(np.float32), True),
        ("plaster", plaster.astype(np.float32), True), ("planks", _planks(rng, size), True),
        ("brick_windows", _facade(brick, rng, size, 1.0), True),
        ("concrete_windows", _facade(concrete.astype(np.float32), rng, size, 0.8), True),
        ("plaster_windows", _facade(plaster.astype(np.float32), rng, size, 1.2), True),
        ("metal", np.clip(0.55 + 0.04 * value_noise(rng, size, 1, 3), 0, 1).astype(np.float32), True),
    ]
    for k in range(4):
        mats.append((f"car{k}", _car(rng, size), False))
    for name in PHOTOS:
        mats.append((f"photo_{name}", np.clip(_resize(photo(name), size), 0.02, 1.0), False))
    return mats


@dataclass
class TextureAtlas:
    """All materials at all mip levels in one float32 image, sampled with ``cv2.remap``.

    Level ``l`` of material ``m`` is a ``size >> l`` square at column ``m * stride + pad`` and row
    ``rows[l] + pad``, surrounded by ``pad`` texels of wrap (tiled) or edge (clamped) border so
    bilinear filtering at tile edges stays inside the material.
    """

    image: np.ndarray
    size: int
    levels: int
    pad: int
    rows: np.ndarray       # (levels,) first row of each level band
    tiled: np.ndarray      # (M,) bool
    names: list[str]

    @classmethod
    def build(cls, materials: list[tuple[str, np.ndarray, bool]], size: int = 256,
              levels: int = 7, pad: int = 2) -> "TextureAtlas":
        if not materials:
            raise ValueError("at least one material is needed")
        if size < 2:
            raise ValueError(f"texture size must be >= 2, got {size}")
        levels = max(1, min(levels, size.bit_length()))  # down to 1 texel at most
        stride = size + 2 * pad
        heights = [(size >> l) + 2 * pad for l in range(levels)]
        rows = np.concatenate([[0], np.cumsum(heights)[:-1]]).astype(np.float32)
        width = stride * len(materials)
        if width > 32000:
            raise ValueError(f"{len(materials)} materials of size {size} exceed cv2.remap's "
                             "32767-pixel source limit; use a smaller texture size")
        atlas = np.zeros((int(sum(heights)), width), np.float32)
        for m, (name, tex, tiled) in enumerate(materials):
            tex = np.asarray(tex, np.float32)
            if tex.ndim != 2:
                raise ValueError(f"material {name!r} must be a 2-D gray image, got {tex.shape}")
            level = _resize(tex, size) if tex.shape != (size, size) else tex
            border = cv2.BORDER_WRAP if tiled else cv2.BORDER_REPLICATE
            for l in range(levels):
                n = size >> l
                if l > 0:
                    level = cv2.resize(level, (n, n), interpolation=cv2.INTER_AREA)
                padded = cv2.copyMakeBorder(level, pad, pad, pad, pad, border)
                r0, c0 = int(rows[l]), m * stride
                atlas[r0:r0 + n + 2 * pad, c0:c0 + n + 2 * pad] = padded
        return cls(image=atlas, size=size, levels=levels, pad=pad, rows=rows,
                   tiled=np.array([t for _, _, t in materials], bool),
                   names=[n for n, _, _ in materials])

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise ValueError(f"unknown material {name!r}; known: {', '.join(self.names)}") from None

    def sample(self, mat: np.ndarray, s: np.ndarray, t: np.ndarray, lod: np.ndarray) -> np.ndarray:
        """Trilinear lookup.

        mat: int material per sample; s, t: texture coordinates in repeats (t = 0 is the bottom
        row of the image, so quads built bottom-up show photographs upright); lod: log2 of the
        texels per pixel at level 0. All arrays share one shape (1-D or 2-D); returns float32.
        """
        shape = s.shape
        mat = mat.reshape(-1, 1)
        s = s.reshape(-1, 1).astype(np.float32)
        t = 1.0 - t.reshape(-1, 1).astype(np.float32)
        tiled = self.tiled[mat]
        s = np.where(tiled, s - np.floor(s), np.clip(s, 0.0, 1.0))
        t = np.where(tiled, t - np.floor(t), np.clip(t, 0.0, 1.0))
        lod = np.clip(lod.reshape(-1, 1), 0.0, self.levels - 1.0)
        l0 = np.floor(lod).astype(np.int32)
        frac = (lod - l0).astype(np.float32)
        l1 = np.minimum(l0 + 1, self.levels - 1)
        col = (mat * (self.size + 2 * self.pad) + self.pad).astype(np.float32)
        out = None
        for lv, w in ((l0, 1.0 - frac), (l1, frac)):
            n = (self.size >> lv).astype(np.float32) if isinstance(lv, np.ndarray) else self.size >> lv
            mx = col + s * n - 0.5
            my = self.rows[lv] + self.pad + t * n - 0.5
            v = remap_points(self.image, mx, my).reshape(-1, 1)
            out = w * v if out is None else out + w * v
        return out.reshape(shape)
