"""Keyframe maps: construction from a drive, file round trip, safe loading, keyframe look-up."""
import numpy as np
import pytest

from sdpr_loc.data.maps import KeyframeMap, MapError, build_map
from sdpr_loc.data.room import StereoRoom
from sdpr_loc.data.synth import default_camera
from sdpr_loc.vision.classical import orb_keypoints
from sdpr_loc.vision.frames import KeypointFrame


@pytest.fixture(scope="module")
def teach():
    room, cam = StereoRoom(seed=1), default_camera(240, 320, fx=160.0)
    frames = list(room.frames(26, cam))
    kmap = build_map(iter(frames), orb_keypoints, every_m=1.0, every_deg=10, frontend="orb")
    return room, cam, frames, kmap


def test_keyframes_are_spaced(teach):
    _, _, frames, kmap = teach
    assert 4 <= len(kmap) <= 7                               # 5 m of drive, a keyframe a metre
    t = kmap.poses[:, :3, 3]
    assert (np.linalg.norm(np.diff(t, axis=0), axis=1) >= 1.0 - 1e-9).all()
    assert kmap.poses[0].tolist() == frames[0].pose.tolist()
    assert kmap.frontend == "orb" and kmap.descriptor_dim == 256
    for i in range(len(kmap)):
        kp = kmap.keyframe(i)
        assert kp.points.shape[1] >= 20 and bool(kp.valid.all())
        # points live in the keyframe's optical frame: in front of the camera
        assert (kp.points[0, :, 2] > 0).all()


def test_roundtrip_is_exact_and_atomic(teach, tmp_path):
    kmap = teach[3]
    path = kmap.save(tmp_path / "teach")                     # suffix added
    assert path.name == "teach.npz"
    assert [p.name for p in tmp_path.iterdir()] == ["teach.npz"]   # no temporary left behind
    back = KeyframeMap.load(path)
    for name in ("poses", "stamps", "offsets", "points", "inv_cov", "descriptors", "scores", "uv", "disparity"):
        assert np.array_equal(getattr(back, name), getattr(kmap, name)), name
    assert back.frontend == "orb" and back.frame_id == "map"


def test_files_written_whole_get_the_usual_permissions(teach, tmp_path):
    """A map (and a checkpoint) is readable as the umask allows, like any file the user writes:
    teach mode's map was 0600, unreadable to a localization launched under another user."""
    import os
    import stat

    import torch

    from sdpr_loc.training.checkpoint import atomic_save

    old = os.umask(0o022)
    try:
        paths = [teach[3].save(tmp_path / "m.npz"), atomic_save({"a": torch.ones(1)}, tmp_path / "c.pt")]
        os.umask(0o027)
        paths.append(teach[3].save(tmp_path / "g.npz"))
    finally:
        os.umask(old)
    assert [stat.S_IMODE(p.stat().st_mode) for p in paths] == [0o644, 0o644, 0o640]


def test_load_rejects_bad_files(teach, tmp_path):
    with pytest.raises(MapError, match="does not exist"):
        KeyframeMap.load(tmp_path / "nope.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file")
    with pytest.raises(MapError, match="cannot read"):
        KeyframeMap.load(junk)
    # a pickled object array must not be loaded (allow_pickle=False)
    evil = tmp_path / "evil.npz"
    np.savez(evil, format_version=np.int64(1), poses=np.array([object()], dtype=object))
    with pytest.raises(MapError):
        KeyframeMap.load(evil)
    # inconsistent arrays
    kmap = teach[3]
    bad = tmp_path / "bad.npz"
    np.savez(bad, format_version=np.int64(1), poses=kmap.poses, stamps=kmap.stamps, offsets=kmap.offsets,
             points=kmap.points[:-1], inv_cov=kmap.inv_cov, descriptors=kmap.descriptors,
             scores=kmap.scores, uv=kmap.uv, disparity=kmap.disparity)
    with pytest.raises(MapError, match="offsets|points"):
        KeyframeMap.load(bad)
    poses = kmap.poses.copy()
    poses[0, :3, :3] *= 2
    with pytest.raises(MapError, match="rigid"):
        KeyframeMap(poses=poses, stamps=kmap.stamps, offsets=kmap.offsets, points=kmap.points,
                    inv_cov=kmap.inv_cov, descriptors=kmap.descriptors, scores=kmap.scores, uv=kmap.uv,
                    disparity=kmap.disparity)


def test_nearest_keyframe(teach):
    kmap = teach[3]
    for i in range(len(kmap)):
        T = kmap.poses[i].copy()
        T[0, 3] += 0.1
        assert kmap.nearest(T)[0] == i
    # turned around: a keyframe facing the other way is far away even at the same place
    T = kmap.poses[2].copy()
    T[:3, :3] = T[:3, :3] @ np.diag([-1.0, 1.0, -1.0])
    d_same = kmap.nearest(kmap.poses[2], k=len(kmap))
    assert d_same[0] == 2
    assert list(kmap.nearest(T, k=2)) != [] and len(kmap.nearest(T, k=100)) == len(kmap)


def test_place_recognition_finds_the_right_keyframe(teach):
    room, cam, _, kmap = teach
    hits = 0
    poses = kmap.poses.copy()
    for i, T in enumerate(poses):
        T = T.copy()
        T[0, 3] += 0.15
        left, right = room.stereo(T, cam, gain=0.7)
        kp = orb_keypoints(left, right, cam)
        hits += int(i in kmap.candidates(KeypointFrame(kp).place_descriptors, k=3))
    assert hits >= len(kmap) - 1


def test_build_map_validation():
    with pytest.raises(ValueError):
        build_map([], orb_keypoints, every_m=0)
    empty = build_map([], orb_keypoints)
    assert len(empty) == 0 and empty.points.shape == (0, 3)
    with pytest.raises(MapError, match="no keyframes"):
        empty.nearest(np.eye(4))
