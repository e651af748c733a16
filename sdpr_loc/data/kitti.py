"""KITTI stereo folders (odometry and raw layouts) as :class:`~sdpr_loc.data.bags.StereoFrame` streams.

Odometry layout (``ROOT/sequences/NN``)::

    image_0/*.png, image_1/*.png   rectified left/right (cam0/cam1 gray; image_2/3 colour)
    calib.txt                      ``P0:`` ... ``P3:`` rectified 3x4 projections, row-major
    times.txt                      seconds since the first frame, one line per frame
    ROOT/poses/NN.txt (optional)   3x4 row-major ``[R|t]`` of cam0 at frame i in cam0 of frame 0

Raw layout (a drive folder ``DATE_drive_XXXX_sync``, calibration in it or in its parent)::

    image_00/data/*.png, image_01/data/*.png (image_02/03 colour), image_00/timestamps.txt
    oxts/data/*.txt (+ oxts/timestamps.txt)   GPS/IMU packets: lat, lon, alt, roll, pitch, yaw, ...
    calib_cam_to_cam.txt (P_rect_0N, R_rect_00), calib_velo_to_cam.txt, calib_imu_to_velo.txt

Raw poses use the standard OXTS conversion (Geiger et al., the KITTI devkit's
``convertOxtsToPose``): Mercator position scaled by the first latitude, rotation
``Rz(yaw) Ry(pitch) Rx(roll)``, giving ``T_world_imu``; the left camera's pose is
``T_world_imu @ inv(T_cam0_imu)`` with ``T_cam0_imu = R_rect_00 T_cam0_velo T_velo_imu``, re-based
so that frame 0 is the identity (as the odometry benchmark's poses are). Poses written to the bag
are ``T_world_camera`` of the chosen left camera (cam2 is offset from cam0 by its rectified
``P2[0,3]``).

Every malformed input raises :class:`KittiFormatError` naming the file, before anything is written.
"""
from __future__ import annotations

import datetime as _dt
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np

from sdpr_loc.geometry.stereo import StereoCamera

from .bags import StereoFrame

__all__ = ["KittiFormatError", "KittiDrive", "open_kitti", "oxts_poses", "read_projections",
           "read_pose_file", "nearest_rotation", "LAYOUTS"]

LAYOUTS = ("odometry", "raw")
EARTH_RADIUS = 6378137.0  # m, as in the KITTI devkit


class KittiFormatError(ValueError):
    """A KITTI folder is incomplete or malformed; the message names the file."""


@dataclass
class KittiDrive:
    """A KITTI stereo sequence ready to stream.

    left, right: image paths (N each); camera: the rectified pair (width/height from the first
    image); stamps_ns (N,) int64; poses (N, 4, 4) float64 ``T_world_camera`` of the left camera,
    or None; scale: image resize factor applied while reading (camera already adjusted);
    encoding: mono8 or mono16 (the images' bit depth).
    """

    left: list[Path]
    right: list[Path]
    camera: StereoCamera
    stamps_ns: np.ndarray
    poses: np.ndarray | None
    source: str
    scale: float = 1.0
    encoding: str = "mono8"

    def __len__(self) -> int:
        return len(self.left)

    def frames(self) -> Iterator[StereoFrame]:
        """Frames in order; images as uint8/uint16 gray (colour converted), resized by ``scale``."""
        for i in range(len(self)):
            left, right = _read_image(self.left[i], self.scale), _read_image(self.right[i], self.scale)
            if left.shape != right.shape:
                raise KittiFormatError(f"{self.right[i]}: {right.shape[1]}x{right.shape[0]} differs from "
                                       f"{self.left[i]}: {left.shape[1]}x{left.shape[0]}")
            if (left.shape[1], left.shape[0]) != (self.camera.width, self.camera.height):
                raise KittiFormatError(f"{self.left[i]}: {left.shape[1]}x{left.shape[0]} differs from the "
                                       f"first image's {self.camera.width}x{self.camera.height}")
            pose = None if self.poses is None else self.poses[i]
            yield StereoFrame(left=left, right=right, camera=self.camera, stamp_ns=int(self.stamps_ns[i]),
                              pose=pose)


# --------------------------------------------------------------------------------------------
# small readers
# --------------------------------------------------------------------------------------------
def _read_image(path: Path, scale: float = 1.0) -> np.ndarray:
    """(H, W) uint8 or uint16 gray of a PNG (colour -> gray); KittiFormatError when unreadable."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise KittiFormatError(f"{path}: not a readable image (truncated or not a PNG?)")
    if img.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if img.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        img = cv2.cvtColor(img, code)
    if img.dtype not in (np.uint8, np.uint16):
        raise KittiFormatError(f"{path}: unsupported pixel type {img.dtype} (need 8 or 16 bit)")
    if scale != 1.0:
        h, w = img.shape
        img = cv2.resize(img, _scaled_size(w, h, scale), interpolation=cv2.INTER_AREA)
    return img


def _scaled_size(w: int, h: int, scale: float) -> tuple[int, int]:
    return max(1, int(round(w * scale))), max(1, int(round(h * scale)))


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise KittiFormatError(f"{folder}: image folder missing")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")
    if not files:
        raise KittiFormatError(f"{folder}: no PNG images")
    return files


def _numbers(path: Path, line: str, lineno: int, count: int | None = None) -> np.ndarray:
    try:
        vals = np.array([float(v) for v in line.split()], dtype=np.float64)
    except ValueError:
        raise KittiFormatError(f"{path}:{lineno}: not a list of numbers: {line.strip()[:60]!r}") from None
    if count is not None and vals.size != count:
        raise KittiFormatError(f"{path}:{lineno}: expected {count} numbers, got {vals.size}")
    if not np.isfinite(vals).all():
        raise KittiFormatError(f"{path}:{lineno}: non-finite value")
    return vals


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise KittiFormatError(f"{path}: file missing")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise KittiFormatError(f"{path}: unreadable ({err})") from None
    return [ln for ln in text.splitlines() if ln.strip()]


def _keyed(path: Path) -> dict[str, tuple[str, int]]:
    """``key: values`` lines of a calibration file -> {key: (values text, line number)}."""
    out = {}
    for n, ln in enumerate(_lines(path), 1):
        if ":" in ln:
            k, v = ln.split(":", 1)
            out[k.strip()] = (v, n)
    return out


def _matrix(path: Path, table: dict, key: str, shape: tuple[int, int]) -> np.ndarray:
    if key not in table:
        raise KittiFormatError(f"{path}: no {key!r} entry (has {sorted(table)})")
    text, n = table[key]
    return _numbers(path, text, n, shape[0] * shape[1]).reshape(shape)


def read_projections(path: Path, left_key: str, right_key: str) -> StereoCamera:
    """Rectified stereo model from two 3x4 projections in a calibration file (width/height unset).

    The baseline is ``-(P_right[0,3] - P_left[0,3]) / fx`` and must be positive."""
    table = _keyed(path)
    Pl, Pr = _matrix(path, table, left_key, (3, 4)), _matrix(path, table, right_key, (3, 4))
    fx, fy, cx, cy = Pl[0, 0], Pl[1, 1], Pl[0, 2], Pl[1, 2]
    if not (fx > 0 and fy > 0):
        raise KittiFormatError(f"{path}: {left_key} has non-positive focal lengths fx={fx}, fy={fy}")
    if not (np.isclose(Pr[0, 0], fx, rtol=1e-6) and np.isclose(Pr[1, 2], cy, rtol=1e-6)):
        raise KittiFormatError(f"{path}: {left_key} and {right_key} are not a rectified pair "
                               f"(fx {fx} vs {Pr[0, 0]}, cy {cy} vs {Pr[1, 2]})")
    baseline = -(Pr[0, 3] - Pl[0, 3]) / fx
    if not baseline > 0:
        raise KittiFormatError(f"{path}: {right_key}[0,3] = {Pr[0, 3]} gives no positive baseline "
                               f"(expected -fx * B with B > 0)")
    return StereoCamera(fx=float(fx), fy=float(fy), cx=float(cx), cy=float(cy), baseline=float(baseline))


def nearest_rotation(R: np.ndarray) -> np.ndarray:
    """Closest rotation (Frobenius) to ``R (..., 3, 3)``: file poses carry ~1e-7 rounding."""
    U, _, Vt = np.linalg.svd(R)
    D = np.ones(R.shape[:-2] + (3,))
    D[..., 2] = np.sign(np.linalg.det(U @ Vt))
    return (U * D[..., None, :]) @ Vt


def _rigid(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.zeros(R.shape[:-2] + (4, 4))
    T[..., :3, :3], T[..., :3, 3], T[..., 3, 3] = R, t, 1.0
    return T


def read_pose_file(path: Path, n: int | None = None) -> np.ndarray:
    """(N, 4, 4) poses from 3x4 row-major lines; ``n``: the required line count."""
    lines = _lines(path)
    if n is not None and len(lines) != n:
        raise KittiFormatError(f"{path}: {len(lines)} pose lines for {n} frames")
    M = np.stack([_numbers(path, ln, i + 1, 12).reshape(3, 4) for i, ln in enumerate(lines)])
    dev = np.abs(M[:, :3, :3] @ np.swapaxes(M[:, :3, :3], 1, 2) - np.eye(3)).max((1, 2))
    if (dev > 1e-3).any():
        raise KittiFormatError(f"{path}:{int(np.argmax(dev)) + 1}: rotation is not orthonormal "
                               f"(|R R^T - I| = {dev.max():.2g})")
    return _rigid(nearest_rotation(M[:, :3, :3]), M[:, :3, 3])


# --------------------------------------------------------------------------------------------
# OXTS
# --------------------------------------------------------------------------------------------
def oxts_poses(packets: np.ndarray) -> np.ndarray:
    """``T_world_imu (N, 4, 4)`` from OXTS packets ``(N, >=6)`` [lat, lon, alt, roll, pitch, yaw].

    The KITTI devkit's conversion: Mercator scale ``s = cos(lat_0)``, position
    ``(s r lon, s r ln(tan((90 + lat) pi / 360)), alt)`` with r the earth radius (lat/lon in
    degrees), rotation ``Rz(yaw) Ry(pitch) Rx(roll)``; world axes east, north, up."""
    p = np.asarray(packets, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 6:
        raise ValueError(f"OXTS packets must be (N, >=6), got {p.shape}")
    lat, lon, alt, roll, pitch, yaw = (p[:, k] for k in range(6))
    s = math.cos(math.radians(lat[0]))
    t = np.stack([s * EARTH_RADIUS * np.radians(lon),
                  s * EARTH_RADIUS * np.log(np.tan(np.radians(90.0 + lat) / 2.0)), alt], 1)
    c, sn = np.cos, np.sin
    one, zero = np.ones_like(roll), np.zeros_like(roll)
    Rx = np.stack([one, zero, zero, zero, c(roll), -sn(roll), zero, sn(roll), c(roll)], 1).reshape(-1, 3, 3)
    Ry = np.stack([c(pitch), zero, sn(pitch), zero, one, zero, -sn(pitch), zero, c(pitch)], 1).reshape(-1, 3, 3)
    Rz = np.stack([c(yaw), -sn(yaw), zero, sn(yaw), c(yaw), zero, zero, zero, one], 1).reshape(-1, 3, 3)
    return _rigid(Rz @ Ry @ Rx, t)


def _raw_rigid(path: Path) -> np.ndarray:
    table = _keyed(path)
    return _rigid(_matrix(path, table, "R", (3, 3)), _matrix(path, table, "T", (3, 1))[:, 0])


def _timestamps(path: Path, n: int) -> np.ndarray:
    """Raw-layout timestamps ('2011-09-26 13:02:25.964389445', UTC) -> ns since the epoch."""
    lines = _lines(path)
    if len(lines) != n:
        raise KittiFormatError(f"{path}: {len(lines)} timestamps for {n} images")
    out = []
    for k, ln in enumerate(lines, 1):
        try:
            day, clock = ln.strip().split(" ")
            whole, _, frac = clock.partition(".")
            base = _dt.datetime.strptime(f"{day} {whole}", "%Y-%m-%d %H:%M:%S").replace(tzinfo=_dt.timezone.utc)
            ns = int(frac.ljust(9, "0")[:9]) if frac else 0
        except ValueError:
            raise KittiFormatError(f"{path}:{k}: not a timestamp: {ln.strip()[:40]!r}") from None
        out.append(int(base.timestamp()) * 1_000_000_000 + ns)
    return np.asarray(out, dtype=np.int64)


def _find_calib(root: Path, name: str) -> Path:
    for folder in (root, root.parent):
        if (folder / name).is_file():
            return folder / name
    raise KittiFormatError(f"{root / name}: file missing (looked in {root} and {root.parent})")


# --------------------------------------------------------------------------------------------
# layouts
# --------------------------------------------------------------------------------------------
def _pair_folders(left: Path, right: Path) -> tuple[list[Path], list[Path]]:
    lf, rf = _images(left), _images(right)
    if len(lf) != len(rf):
        raise KittiFormatError(f"{left} has {len(lf)} images but {right} has {len(rf)}")
    if [p.name for p in lf] != [p.name for p in rf]:
        bad = next(a.name for a, b in zip(lf, rf) if a.name != b.name)
        raise KittiFormatError(f"{left} and {right} hold differently named images (first: {bad})")
    return lf, rf


def _odometry(root: Path, sequence: str, cams: tuple[int, int]):
    seq = root / "sequences" / sequence
    if not seq.is_dir():
        raise KittiFormatError(f"{seq}: sequence folder missing")
    left, right = _pair_folders(seq / f"image_{cams[0]}", seq / f"image_{cams[1]}")
    calib = seq / "calib.txt"
    camera = read_projections(calib, f"P{cams[0]}", f"P{cams[1]}")
    offset = -_matrix(calib, _keyed(calib), f"P{cams[0]}", (3, 4))[0, 3] / camera.fx
    times = seq / "times.txt"
    lines = _lines(times)
    if len(lines) != len(left):
        raise KittiFormatError(f"{times}: {len(lines)} lines for {len(left)} images")
    secs = np.array([_numbers(times, ln, k + 1, 1)[0] for k, ln in enumerate(lines)])
    if (secs < 0).any() or (np.diff(secs) <= 0).any():
        raise KittiFormatError(f"{times}: times must be non-negative and increasing")
    stamps = np.rint(secs * 1e9).astype(np.int64)
    pose_file = root / "poses" / f"{sequence}.txt"
    poses = None
    if pose_file.exists():
        poses = read_pose_file(pose_file, len(left))
        if offset != 0.0:  # cam2's centre sits at x = -P2[0,3] / fx in cam0
            poses = poses @ _rigid(np.eye(3), np.array([offset, 0.0, 0.0]))
    return left, right, camera, stamps, poses, f"KITTI odometry {seq}"


def _raw(root: Path, cams: tuple[int, int]):
    left, right = _pair_folders(root / f"image_{cams[0]:02d}" / "data", root / f"image_{cams[1]:02d}" / "data")
    c2c = _find_calib(root, "calib_cam_to_cam.txt")
    camera = read_projections(c2c, f"P_rect_{cams[0]:02d}", f"P_rect_{cams[1]:02d}")
    stamps = _timestamps(root / f"image_{cams[0]:02d}" / "timestamps.txt", len(left))
    oxts_dir = root / "oxts" / "data"
    poses = None
    if oxts_dir.is_dir():
        files = sorted(oxts_dir.glob("*.txt"))
        if len(files) != len(left):
            raise KittiFormatError(f"{oxts_dir}: {len(files)} OXTS packets for {len(left)} images")
        packets = np.stack([_oxts_packet(f) for f in files])
        T_w_imu = oxts_poses(packets)
        table = _keyed(c2c)
        R_rect = _rigid(_matrix(c2c, table, "R_rect_00", (3, 3)), np.zeros(3))
        T_cam0_imu = (R_rect @ _raw_rigid(_find_calib(root, "calib_velo_to_cam.txt"))
                      @ _raw_rigid(_find_calib(root, "calib_imu_to_velo.txt")))
        T_w_cam0 = T_w_imu @ np.linalg.inv(T_cam0_imu)
        poses = np.linalg.inv(T_w_cam0[0]) @ T_w_cam0
        offset = -_matrix(c2c, table, f"P_rect_{cams[0]:02d}", (3, 4))[0, 3] / camera.fx
        poses = _rigid(nearest_rotation(poses[:, :3, :3]), poses[:, :3, 3])
        if offset != 0.0:
            poses = poses @ _rigid(np.eye(3), np.array([offset, 0.0, 0.0]))
    return left, right, camera, stamps, poses, f"KITTI raw {root}"


def _oxts_packet(path: Path) -> np.ndarray:
    lines = _lines(path)
    vals = _numbers(path, lines[0], 1) if lines else np.zeros(0)
    if vals.size < 6:
        raise KittiFormatError(f"{path}: an OXTS packet needs at least lat lon alt roll pitch yaw, "
                               f"got {vals.size} numbers")
    return vals[:6]


def detect_layout(root: Path) -> str:
    if (root / "sequences").is_dir():
        return "odometry"
    if (root / "image_00").is_dir() or (root / "oxts").is_dir():
        return "raw"
    raise KittiFormatError(f"{root}: neither a KITTI odometry folder (sequences/NN) nor a raw drive "
                           "(image_00/data, oxts/data)")


def open_kitti(root: str | os.PathLike, sequence: str | None = None, layout: str = "auto",
               cameras: str = "gray", scale: float = 1.0) -> KittiDrive:
    """Validate a KITTI folder completely (files, counts, calibration, poses) and return the drive.

    sequence: ``NN`` for the odometry layout (ignored for raw). cameras: ``gray`` (0/1) or
    ``color`` (2/3, converted to gray). scale: resize factor (0 < scale <= 1; 0.5 halves the
    images, camera intrinsics scaled to match: f' = s f, c' = s (c + 0.5) - 0.5).
    """
    root = Path(root)
    if not root.is_dir():
        raise KittiFormatError(f"{root}: folder missing")
    if cameras not in ("gray", "color"):
        raise ValueError(f"cameras must be 'gray' or 'color', got {cameras!r}")
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    layout = detect_layout(root) if layout == "auto" else layout
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS} or 'auto', got {layout!r}")
    cams = (0, 1) if cameras == "gray" else (2, 3)
    if layout == "odometry":
        if sequence is None:
            raise ValueError("the odometry layout needs --sequence NN")
        parts = _odometry(root, str(sequence), cams)
    else:
        parts = _raw(root, cams)
    left, right, camera, stamps, poses, source = parts
    if (np.diff(stamps) <= 0).any():
        raise KittiFormatError(f"{source}: timestamps are not increasing")
    first = _read_image(left[0])
    h, w = first.shape
    if scale != 1.0:
        w2, h2 = _scaled_size(w, h, scale)
        sx, sy = w2 / w, h2 / h
        camera = replace(camera, fx=camera.fx * sx, fy=camera.fy * sy, cx=(camera.cx + 0.5) * sx - 0.5,
                         cy=(camera.cy + 0.5) * sy - 0.5)
        w, h = w2, h2
    camera = replace(camera, width=w, height=h)
    enc = "mono16" if first.dtype == np.uint16 else "mono8"
    return KittiDrive(left, right, camera, stamps, poses, source, float(scale), enc)
