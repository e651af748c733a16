"""Stereo drives as real rosbag2 files (sqlite3 or mcap), read and written with ``rosbags``.

No ROS install is needed: ``rosbags`` serialises standard messages (sensor_msgs/Image,
sensor_msgs/CameraInfo, geometry_msgs/PoseStamped) with the Kilted typestore by default, so the
bags carry the same type hashes as the installed ROS 2 interfaces and open in any ROS 2 tool.

Layout
------
* A path ending in ``.mcap`` or ``.db3`` is a single storage file (metadata embedded, which
  ``ros2 bag`` and ``rosbags`` both read); any other path is a standard rosbag2 directory with
  ``metadata.yaml``.
* Topics (defaults in :class:`StereoTopics`): left/right ``sensor_msgs/Image`` (rectified),
  left/right ``sensor_msgs/CameraInfo`` (right ``P[0,3] = -fx * baseline``), optional
  ``geometry_msgs/PoseStamped`` ground truth: ``T_world_camera`` of the left optical frame.

Reading streams message by message (never the whole bag), pairs left and right by header stamp
within a tolerance, and converts mono8, mono16, rgb8 and bgr8 to float gray in [0, 1].
"""
from __future__ import annotations

import functools
import hashlib
import os
import shutil
import sqlite3
import struct
import tempfile
from collections import deque
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from sdpr_loc.errors import UsageError
from sdpr_loc.geometry.stereo import StereoCamera  # only its constructor is used here

from .errors import (BagError, EmptyBagError, ImageSizeMismatchError, MissingCameraInfoError, MissingTopicError,
                     TopicTypeError, UnreadableBagError)
from .messages import (camera_from_infos, camera_info_fields, check_encoding, decode_image, encode_image,
                       ns_to_sec_nanosec, pose_fields, pose_to_matrix, stamp_to_ns)

__all__ = [
    "StereoFrame", "StereoTopics", "StereoBag", "BagIndex", "write_stereo_bag",
    "camera_to_infos", "matrix_to_pose", "bag_checksum", "bag_files", "open_reader",
]

DISTROS = {"kilted": "ROS2_KILTED", "jazzy": "ROS2_JAZZY"}
IMAGE_T = "sensor_msgs/msg/Image"
INFO_T = "sensor_msgs/msg/CameraInfo"
POSE_T = "geometry_msgs/msg/PoseStamped"
_STORAGE_SUFFIX = {".mcap": "mcap", ".db3": "sqlite3"}


# --------------------------------------------------------------------------------------------
# data types
# --------------------------------------------------------------------------------------------
@dataclass
class StereoFrame:
    """One synchronized stereo frame.

    left, right: (H, W) float32 gray in [0, 1], rectified.
    camera: the rectified stereo model (right camera at +baseline along the left camera's x).
    stamp_ns: header stamp of the left image, nanoseconds since the epoch.
    pose: (4, 4) float64 ``T_world_camera`` or None: maps points from the left camera optical
        frame (x right, y down, z forward) into the world frame, i.e. ``p_w = R p_c + t`` with
        ``t`` the camera centre in world coordinates.
    """

    left: np.ndarray
    right: np.ndarray
    camera: StereoCamera
    stamp_ns: int
    pose: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name in ("left", "right"):
            img = np.asarray(getattr(self, name))
            if img.ndim != 2:
                raise ValueError(f"StereoFrame.{name} must be (H, W) gray, got shape {img.shape}")
        if self.left.shape != self.right.shape:
            raise ImageSizeMismatchError(
                f"StereoFrame: left {self.left.shape} and right {self.right.shape} differ in size")
        if self.pose is not None:
            pose = np.asarray(self.pose, dtype=np.float64)
            if pose.shape != (4, 4):
                raise ValueError(f"StereoFrame.pose must be (4, 4), got {pose.shape}")
            self.pose = pose


@dataclass(frozen=True)
class StereoTopics:
    """Topic names of a stereo drive (conventional defaults; ``pose`` may be None)."""

    left: str = "/stereo/left/image_rect"
    right: str = "/stereo/right/image_rect"
    left_info: str = "/stereo/left/camera_info"
    right_info: str = "/stereo/right/camera_info"
    pose: str | None = "/ground_truth/pose"

    @classmethod
    def make(cls, topics: "StereoTopics | Mapping[str, str | None] | None") -> "StereoTopics":
        """Accept a StereoTopics, a dict of overrides, or None (all defaults)."""
        if topics is None:
            return cls()
        if isinstance(topics, cls):
            return topics
        names = {f.name for f in fields(cls)}
        unknown = set(topics) - names
        if unknown:
            raise ValueError(f"unknown topic keys {sorted(unknown)}; expected some of {sorted(names)}")
        return replace(cls(), **dict(topics))


@dataclass
class BagIndex:
    """Per-frame table of a stereo bag, built in one streaming pass, for random access.

    stamps (N,) int64 header stamps; log_ns (N, 2) int64 bag times of the left and right
    messages; cameras (N, 7) float64 [fx, fy, cx, cy, baseline, width, height]; poses (N, 4, 4)
    float64 T_world_camera, NaN where the bag has no ground truth for the frame.
    """

    stamps: np.ndarray
    log_ns: np.ndarray
    cameras: np.ndarray
    poses: np.ndarray

    def __len__(self) -> int:
        return int(self.stamps.shape[0])

    @property
    def has_pose(self) -> np.ndarray:
        return ~np.isnan(self.poses[:, 0, 0])

    def camera(self, i: int) -> StereoCamera:
        fx, fy, cx, cy, b, w, h = self.cameras[i]
        return StereoCamera(fx=float(fx), fy=float(fy), cx=float(cx), cy=float(cy),
                            baseline=float(b), width=int(w), height=int(h))

    def save(self, path: str | os.PathLike) -> None:
        np.savez(path, stamps=self.stamps, log_ns=self.log_ns, cameras=self.cameras,
                 poses=self.poses)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "BagIndex":
        with np.load(path) as z:
            return cls(z["stamps"], z["log_ns"], z["cameras"], z["poses"])


# --------------------------------------------------------------------------------------------
# rosbags messages of the fields in .messages (the typestore is the writer's)
# --------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _typestore(distro: str):
    from rosbags.typesys import Stores, get_typestore

    key = DISTROS.get(str(distro).lower())
    if key is None:
        raise ValueError(f"unknown ROS distro {distro!r}; expected one of {sorted(DISTROS)}")
    return get_typestore(getattr(Stores, key))


def _time(ts, stamp_ns: int):
    sec, nanosec = ns_to_sec_nanosec(stamp_ns)
    return ts.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)


def matrix_to_pose(ts, T: np.ndarray):
    """(4, 4) transform -> geometry_msgs/Pose of typestore ``ts``; ValueError unless the rotation
    is orthonormal with det +1 (ground truth is written as given, never repaired)."""
    T = np.asarray(T, dtype=np.float64)
    R = T[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-6) or np.linalg.det(R) < 0:
        raise ValueError("pose rotation is not orthonormal with det +1")
    (x, y, z), q = pose_fields(T)
    G = ts.types
    return G["geometry_msgs/msg/Pose"](
        position=G["geometry_msgs/msg/Point"](x=float(x), y=float(y), z=float(z)),
        orientation=G["geometry_msgs/msg/Quaternion"](x=float(q[0]), y=float(q[1]), z=float(q[2]),
                                                     w=float(q[3])),
    )


def camera_to_infos(ts, camera: StereoCamera, stamp_ns: int,
                    frame_ids: tuple[str, str]) -> tuple[Any, Any]:
    """Left and right sensor_msgs/CameraInfo (typestore ``ts``) of a rectified stereo model."""
    G = ts.types
    if camera.width is None or camera.height is None:
        raise ValueError("camera.width and camera.height are needed to write CameraInfo")
    out = []
    for info, fid in zip(camera_info_fields(camera), frame_ids):
        out.append(G[INFO_T](
            header=G["std_msgs/msg/Header"](stamp=_time(ts, stamp_ns), frame_id=fid),
            height=int(info["height"]), width=int(info["width"]), distortion_model=info["distortion_model"],
            d=np.asarray(info["d"], dtype=np.float64), k=np.asarray(info["k"], dtype=np.float64),
            r=np.asarray(info["r"], dtype=np.float64), p=np.asarray(info["p"], dtype=np.float64),
            binning_x=0, binning_y=0,
            roi=G["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                      do_rectify=False),
        ))
    return out[0], out[1]


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------
def _resolve_output(path: Path, storage: str | None) -> tuple[str, bool]:
    """-> (storage, single_file)."""
    suffix_storage = _STORAGE_SUFFIX.get(path.suffix.lower())
    if storage is not None and storage not in ("mcap", "sqlite3"):
        raise UsageError(f"storage must be 'mcap' or 'sqlite3', got {storage!r}")
    if suffix_storage:
        if storage is not None and storage != suffix_storage:
            raise UsageError(f"{path.name}: suffix {path.suffix} means {suffix_storage}, "
                             f"but storage={storage!r} was asked for")
        return suffix_storage, True
    return storage or "mcap", False


def write_stereo_bag(path: str | os.PathLike, frames: Iterable[StereoFrame], *,
                     storage: str | None = None,
                     topics: StereoTopics | Mapping[str, str | None] | None = None,
                     distro: str = "kilted",
                     encoding: str | tuple[str, str] = "mono8",
                     frame_ids: tuple[str, str] = ("stereo_left_optical_frame",
                                                   "stereo_right_optical_frame"),
                     world_frame: str = "world",
                     overwrite: bool = False) -> int:
    """Write stereo frames to a rosbag2; returns the number of frames written.

    path: ``*.mcap`` / ``*.db3`` -> one storage file; anything else -> a rosbag2 directory in
        ``storage`` format ("mcap" default, or "sqlite3").
    frames: iterable of :class:`StereoFrame`, consumed lazily (streaming); each frame writes
        left/right Image and CameraInfo stamped with ``stamp_ns`` (bag time = header stamp) and,
        when ``frame.pose`` is set and ``topics.pose`` is not None, a PoseStamped in
        ``world_frame``.
    encoding: one of mono8, mono16, rgb8, bgr8, or a (left, right) pair.
    distro: "kilted" (default) or "jazzy" typestore.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    path = Path(path)
    storage, single = _resolve_output(path, storage)
    tp = StereoTopics.make(topics)
    ts = _typestore(distro)
    enc_l, enc_r = (encoding, encoding) if isinstance(encoding, str) else tuple(encoding)
    for enc in (enc_l, enc_r):   # before any file is touched
        check_encoding(enc, "write")
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True (CLI: --force) to replace it")
        remove_bag(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    tmp = None
    if single:  # rosbags writes directories: write next to the target, then move the file out
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        bagdir = tmp / path.stem
    else:
        bagdir = path
    G = ts.types
    count = 0
    try:
        with Writer(bagdir, version=9, storage_plugin=plugin) as w:
            c_l = w.add_connection(tp.left, IMAGE_T, typestore=ts)
            c_r = w.add_connection(tp.right, IMAGE_T, typestore=ts)
            c_il = w.add_connection(tp.left_info, INFO_T, typestore=ts)
            c_ir = w.add_connection(tp.right_info, INFO_T, typestore=ts)
            c_p = w.add_connection(tp.pose, POSE_T, typestore=ts) if tp.pose else None
            for fr in frames:
                t = int(fr.stamp_ns)
                if t < 0:
                    raise ValueError(f"frame {count}: negative stamp {t}")
                info_l, info_r = camera_to_infos(ts, _sized(fr.camera, fr.left.shape), t, frame_ids)
                for conn, img, enc, fid in ((c_l, fr.left, enc_l, frame_ids[0]),
                                            (c_r, fr.right, enc_r, frame_ids[1])):
                    msg = G[IMAGE_T](header=G["std_msgs/msg/Header"](stamp=_time(ts, t), frame_id=fid),
                                     **encode_image(img, enc))
                    w.write(conn, t, ts.serialize_cdr(msg, IMAGE_T))
                w.write(c_il, t, ts.serialize_cdr(info_l, INFO_T))
                w.write(c_ir, t, ts.serialize_cdr(info_r, INFO_T))
                if c_p is not None and fr.pose is not None:
                    msg = G[POSE_T](
                        header=G["std_msgs/msg/Header"](stamp=_time(ts, t), frame_id=world_frame),
                        pose=matrix_to_pose(ts, fr.pose))
                    w.write(c_p, t, ts.serialize_cdr(msg, POSE_T))
                count += 1
        if single:
            suffix = ".mcap" if storage == "mcap" else ".db3"
            os.replace(bagdir / (bagdir.name + suffix), path)
    except BaseException:
        if not single:
            shutil.rmtree(bagdir, ignore_errors=True)
        raise
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return count


def _sized(camera: StereoCamera, shape: tuple[int, int]) -> StereoCamera:
    """Camera with width/height filled from the image (and checked against it if set)."""
    h, w = shape
    if camera.width is not None and camera.height is not None:
        if (int(camera.width), int(camera.height)) != (w, h):
            raise ImageSizeMismatchError(
                f"camera is {camera.width}x{camera.height} but the images are {w}x{h}")
        return camera
    return replace(camera, width=w, height=h)


def remove_bag(path: Path) -> None:
    """Remove an existing bag at ``path``, refusing anything that does not look like one."""
    if path.is_dir() and not path.is_symlink():
        if not (path / "metadata.yaml").exists():
            raise FileExistsError(f"{path} is a directory without metadata.yaml; not removing it")
        shutil.rmtree(path)
    elif path.suffix.lower() in _STORAGE_SUFFIX or path.is_symlink():
        path.unlink()
    else:
        raise FileExistsError(f"{path} exists and is not a bag; not removing it")


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------
def bag_files(path: str | os.PathLike) -> list[Path]:
    """The files that make up a bag (storage files and metadata.yaml), sorted."""
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.iterdir()
                      if p.is_file() and (p.suffix in (".mcap", ".db3", ".zstd") or p.name == "metadata.yaml"))
    return [path]


def bag_checksum(path: str | os.PathLike) -> str:
    """blake2b (128 bit) over the bag's files, names and contents: the bag's identity for caches."""
    path = Path(path)
    if not path.exists():
        raise UnreadableBagError(f"bag {str(path)!r} does not exist")
    h = hashlib.blake2b(digest_size=16)
    for f in bag_files(path):
        h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()


# errors raised by rosbags' storage backends and the CDR decoder on damaged input
_READ_ERRORS: tuple[type[BaseException], ...] = (
    sqlite3.Error, struct.error, EOFError, OSError, KeyError, IndexError, AssertionError,
    TypeError, ValueError)
try:
    import apsw as _apsw

    _READ_ERRORS += (_apsw.Error,)
except ImportError:  # pragma: no cover
    pass


def _unreadable(path: Path, err: BaseException) -> UnreadableBagError:
    return UnreadableBagError(f"cannot read bag {str(path)!r}: {type(err).__name__}: {err} "
                              "(is the file truncated or corrupt?)")


def open_reader(path: str | os.PathLike):
    """An opened rosbags ``Reader`` of ``path``; UnreadableBagError naming it when it is not a bag.

    The one place a bag file is opened: rosbags' own errors (``ReaderError: File magic is
    invalid.``, YAML and sqlite errors) become a BagError with the path.
    """
    from rosbags.rosbag2 import Reader
    from rosbags.rosbag2.errors import ReaderError

    path = Path(path)
    if not path.exists():
        raise UnreadableBagError(f"bag {str(path)!r} does not exist")
    if path.is_dir() and not (path / "metadata.yaml").exists():
        raise UnreadableBagError(f"{str(path)!r} is a directory without metadata.yaml, not a rosbag2")
    try:
        reader = Reader(path)
        reader.open()
    except (ReaderError, *_READ_ERRORS) as err:
        raise _unreadable(path, err) from err
    return reader


@dataclass
class _Pair:
    stamp: int
    left: Any
    right: Any
    log_l: int
    log_r: int
    camera: StereoCamera | None = None


class StereoBag:
    """A rosbag2 stereo drive as an iterable of :class:`StereoFrame` (streaming).

    path: bag directory, or a single ``.mcap`` / ``.db3`` file.
    topics: :class:`StereoTopics` or a dict overriding some defaults; ``pose=None`` ignores
        ground truth. A missing pose topic is allowed (frames get ``pose=None``).
    tolerance_ns: left/right images pair when their header stamps differ by at most this; the
        same window matches ground-truth poses to frames.
    camera: use this model instead of the bag's CameraInfo (for bags without it).

    Left and right are paired greedily in stamp order; an image without a partner inside the
    tolerance is skipped and counted in ``dropped``. Camera info is the latest one received.
    ``len()`` is the smaller of the left/right message counts (exact when the topics are
    one-to-one, as in bags from :func:`write_stereo_bag`). ``bag[i]`` uses :meth:`index`.
    """

    def __init__(self, path: str | os.PathLike, *,
                 topics: StereoTopics | Mapping[str, str | None] | None = None,
                 tolerance_ns: int = 5_000_000, camera: StereoCamera | None = None,
                 max_buffer: int = 256) -> None:
        self.path = Path(path)
        self.topics = StereoTopics.make(topics)
        self.tolerance_ns = int(tolerance_ns)
        if self.tolerance_ns < 0:
            raise ValueError("tolerance_ns must be >= 0")
        self.camera_override = camera
        self.max_buffer = int(max_buffer)
        self.dropped = 0
        self._index: BagIndex | None = None
        self._reader = None
        self._reader_pid = None
        self._conns: dict[str, Any] = {}
        self._reader_open()  # validates topics now, so a bad bag fails at construction

    # ----- opening and validation -----
    def _wrap(self, err: BaseException) -> UnreadableBagError:
        return _unreadable(self.path, err)

    def _reader_open(self):
        """A rosbags Reader, opened once per process (safe with DataLoader workers)."""
        if self._reader is not None and self._reader_pid == os.getpid():
            return self._reader
        reader = open_reader(self.path)
        self._reader, self._reader_pid = reader, os.getpid()
        try:
            self._conns = self._check_connections(reader)
        except BaseException:
            self.close()
            raise
        return reader

    def _connections(self) -> dict[str, Any]:
        self._reader_open()
        return self._conns

    def _check_connections(self, reader) -> dict[str, Any]:
        """Connections per role (left, right, ...); raises when a required topic is absent."""
        by_topic: dict[str, list] = {}
        for c in reader.connections:
            by_topic.setdefault(c.topic, []).append(c)
        have = ", ".join(f"{t} [{cs[0].msgtype}]" for t, cs in sorted(by_topic.items())) or "no topics"
        tp = self.topics
        conns: dict[str, Any] = {}
        wanted = [("left", tp.left, IMAGE_T, True), ("right", tp.right, IMAGE_T, True),
                  ("left_info", tp.left_info, INFO_T, self.camera_override is None),
                  ("right_info", tp.right_info, INFO_T, self.camera_override is None),
                  ("pose", tp.pose, POSE_T, False)]
        for key, topic, msgtype, required in wanted:
            if topic is None:
                continue
            cs = by_topic.get(topic)
            if not cs:
                if not required:
                    continue
                if key.endswith("info"):
                    raise MissingCameraInfoError(
                        f"bag {str(self.path)!r} has no camera info topic {topic!r} "
                        f"(it has: {have}); pass camera=StereoCamera(...) or the right topic name")
                raise MissingTopicError(
                    f"bag {str(self.path)!r} has no topic {topic!r} for the {key} image; "
                    f"it has: {have}")
            bad = [c.msgtype for c in cs if c.msgtype != msgtype]
            if bad:
                raise TopicTypeError(
                    f"topic {topic!r} in {str(self.path)!r} carries {bad[0]}, expected {msgtype}")
            conns[key] = cs
        return conns

    def require_frames(self) -> "StereoBag":
        """``self`` if the bag has stereo frames, else EmptyBagError (for commands that need a drive)."""
        if len(self) == 0:
            self.close()
            raise EmptyBagError(f"bag {str(self.path)!r} has no stereo frames (no messages on "
                                f"{self.topics.left!r} and {self.topics.right!r})")
        return self

    def close(self) -> None:
        if self._reader is not None and self._reader_pid == os.getpid():
            try:
                self._reader.close()
            except Exception:  # noqa: BLE001 - closing a damaged reader must not mask errors
                pass
        self._reader = None

    def __enter__(self) -> "StereoBag":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:  # picklable for DataLoader workers: reopen lazily
        state = self.__dict__.copy()
        state["_reader"] = None
        state["_reader_pid"] = None
        state["_conns"] = {}  # rosbags connections point at their reader
        return state

    # ----- metadata -----
    @property
    def topic_counts(self) -> dict[str, int]:
        """Message count per topic in use (from the bag's metadata, no reading)."""
        return {k: sum(c.msgcount for c in cs) for k, cs in self._connections().items()}

    def __len__(self) -> int:
        counts = self.topic_counts
        return min(counts["left"], counts["right"])

    @property
    def has_pose(self) -> bool:
        return "pose" in self._connections()

    # ----- streaming -----
    def _messages(self, start: int | None = None, stop: int | None = None,
                  keys: Sequence[str] | None = None) -> Iterator[tuple[str, int, Any]]:
        """(key, log time, deserialized message) in bag time order; storage errors wrapped."""
        from rosbags.rosbag2.errors import ReaderError

        ts = _typestore("kilted")  # CDR layouts of these types are identical in Jazzy and Kilted
        reader = self._reader_open()
        key_of = {}
        conns = []
        for key, cs in self._conns.items():
            if keys is None or key in keys:
                for c in cs:
                    key_of[c.id] = key
                    conns.append(c)
        types = {"left": IMAGE_T, "right": IMAGE_T, "left_info": INFO_T, "right_info": INFO_T,
                 "pose": POSE_T}
        it = reader.messages(connections=conns, start=start, stop=stop)
        while True:
            try:
                conn, t, raw = next(it)
                key = key_of[conn.id]
                msg = ts.deserialize_cdr(raw, types[key])
            except StopIteration:
                return
            except BagError:
                raise
            except (ReaderError, *_READ_ERRORS) as err:
                raise self._wrap(err) from err
            yield key, t, msg

    def _camera(self, infos: dict[str, Any]) -> StereoCamera | None:
        if self.camera_override is not None:
            return self.camera_override
        if infos.get("left_info") is None or infos.get("right_info") is None:
            return None
        return camera_from_infos(infos["left_info"], infos["right_info"])

    def _pairs(self, start: int | None = None, stop: int | None = None
               ) -> Iterator[tuple[_Pair, np.ndarray | None]]:
        """Synchronised (pair, pose) in stamp order, without decoding the pixels."""
        tol = self.tolerance_ns
        lefts: deque = deque()
        rights: deque = deque()
        pending: deque[_Pair] = deque()
        poses: deque[tuple[int, np.ndarray]] = deque()
        infos: dict[str, Any] = {}
        camera: StereoCamera | None = self._camera(infos)
        last_pose = -(2**63)
        use_pose = "pose" in self._connections() and self.topic_counts["pose"] > 0

        def match_pose(stamp: int) -> np.ndarray | None:
            best, best_d = None, tol + 1
            for s, T in poses:
                d = abs(s - stamp)
                if d < best_d:
                    best, best_d = T, d
            return best

        def emit(p: _Pair) -> tuple[_Pair, np.ndarray | None]:
            T = match_pose(p.stamp) if use_pose else None
            while poses and poses[0][0] < p.stamp - tol:
                poses.popleft()
            return p, T

        for key, t, msg in self._messages(start, stop):
            if key == "left":
                lefts.append((stamp_to_ns(msg.header.stamp), t, msg))
            elif key == "right":
                rights.append((stamp_to_ns(msg.header.stamp), t, msg))
            elif key == "pose":
                s = stamp_to_ns(msg.header.stamp)
                poses.append((s, pose_to_matrix(msg.pose)))
                last_pose = max(last_pose, s)
            else:
                infos[key] = msg
                camera = self._camera(infos)
            while lefts and rights:
                sl, sr = lefts[0][0], rights[0][0]
                if abs(sl - sr) <= tol:
                    (_, tl, ml), (_, tr, mr) = lefts.popleft(), rights.popleft()
                    pending.append(_Pair(sl, ml, mr, tl, tr))
                elif sl < sr:
                    lefts.popleft()
                    self.dropped += 1
                else:
                    rights.popleft()
                    self.dropped += 1
            for q in (lefts, rights):
                while len(q) > self.max_buffer:  # the other side has gone quiet: do not hoard
                    q.popleft()
                    self.dropped += 1
            while pending:
                p = pending[0]
                if p.camera is None:
                    p.camera = camera
                if p.camera is None and len(pending) <= self.max_buffer:
                    break
                pose_ready = (not use_pose or last_pose >= p.stamp + tol
                              or any(s == p.stamp for s, _ in poses))
                if not pose_ready and len(pending) <= self.max_buffer:
                    break
                if p.camera is None:
                    raise self._no_info(p.stamp)
                yield emit(pending.popleft())
        while pending:
            p = pending.popleft()
            p.camera = p.camera or camera
            if p.camera is None:
                raise self._no_info(p.stamp)
            yield emit(p)

    def _no_info(self, stamp: int) -> MissingCameraInfoError:
        tp = self.topics
        return MissingCameraInfoError(
            f"bag {str(self.path)!r}: no CameraInfo on {tp.left_info!r} and {tp.right_info!r} "
            f"for the image pair at {stamp} ns; pass camera=StereoCamera(...) to read without it")

    def _frame(self, p: _Pair, pose: np.ndarray | None) -> StereoFrame:
        hl, wl, hr, wr = p.left.height, p.left.width, p.right.height, p.right.width
        if (hl, wl) != (hr, wr):
            raise ImageSizeMismatchError(
                f"bag {str(self.path)!r} at {p.stamp} ns: left image is {wl}x{hl}, right is {wr}x{hr}")
        cam = p.camera
        if cam.width is not None and cam.height is not None and (cam.width, cam.height) != (wl, hl):
            raise ImageSizeMismatchError(
                f"bag {str(self.path)!r} at {p.stamp} ns: images are {wl}x{hl} but CameraInfo "
                f"says {cam.width}x{cam.height}")
        left, right = decode_image(p.left), decode_image(p.right)
        return StereoFrame(left=left, right=right, camera=cam, stamp_ns=p.stamp, pose=pose)

    def frames(self, start_ns: int | None = None, stop_ns: int | None = None) -> Iterator[StereoFrame]:
        """Frames whose messages have bag time in [start_ns, stop_ns), streamed."""
        self.dropped = 0
        for p, pose in self._pairs(start_ns, stop_ns):
            yield self._frame(p, pose)

    def __iter__(self) -> Iterator[StereoFrame]:
        return self.frames()

    # ----- random access -----
    def index(self) -> BagIndex:
        """Per-frame stamps, bag times, cameras and poses (one pass without decoding pixels)."""
        if self._index is not None:
            return self._index
        stamps, logs, cams, poses = [], [], [], []
        for p, T in self._pairs():
            if (p.left.height, p.left.width) != (p.right.height, p.right.width):
                raise ImageSizeMismatchError(
                    f"bag {str(self.path)!r} at {p.stamp} ns: left image is "
                    f"{p.left.width}x{p.left.height}, right is {p.right.width}x{p.right.height}")
            c = p.camera
            stamps.append(p.stamp)
            logs.append((p.log_l, p.log_r))
            cams.append((c.fx, c.fy, c.cx, c.cy, c.baseline, p.left.width, p.left.height))
            poses.append(T if T is not None else np.full((4, 4), np.nan))
        n = len(stamps)
        self._index = BagIndex(
            stamps=np.asarray(stamps, dtype=np.int64).reshape(n),
            log_ns=np.asarray(logs, dtype=np.int64).reshape(n, 2),
            cameras=np.asarray(cams, dtype=np.float64).reshape(n, 7),
            poses=np.asarray(poses, dtype=np.float64).reshape(n, 4, 4))
        return self._index

    def set_index(self, index: BagIndex) -> None:
        """Use a previously built (e.g. cached) index for random access."""
        self._index = index

    def read(self, i: int) -> StereoFrame:
        """Frame ``i`` of :meth:`index`, read from its bag-time window only."""
        idx = self._index if self._index is not None else self.index()
        n = len(idx)
        if not -n <= i < n:
            raise IndexError(f"frame {i} out of range for a bag with {n} frames")
        i %= n
        stamp = int(idx.stamps[i])
        lo, hi = int(idx.log_ns[i].min()), int(idx.log_ns[i].max())
        found: dict[str, Any] = {}
        for key, _, msg in self._messages(lo, hi + 1, keys=("left", "right")):
            s = stamp_to_ns(msg.header.stamp)
            if abs(s - stamp) <= self.tolerance_ns and key not in found:
                found[key] = msg
        if len(found) < 2:
            raise UnreadableBagError(
                f"bag {str(self.path)!r} changed since it was indexed: frame {i} at {stamp} ns "
                "is no longer there")
        pose = idx.poses[i] if idx.has_pose[i] else None
        p = _Pair(stamp, found["left"], found["right"], lo, hi, camera=idx.camera(i))
        return self._frame(p, None if pose is None else pose.copy())

    def __getitem__(self, i: int) -> StereoFrame:
        return self.read(i)
