"""ORB stereo front end: depth against the renderer's ground truth, descriptors, degenerate input."""
import numpy as np
import pytest
import torch

from sdpr_loc.data.room import StereoRoom, room_drive_poses
from sdpr_loc.data.synth import default_camera
from sdpr_loc.vision.classical import DESCRIPTOR_DIM, match_along_rows, orb_keypoints


@pytest.fixture(scope="module")
def scene():
    room, cam = StereoRoom(seed=3), default_camera(240, 320, fx=160.0)
    T = room_drive_poses(12)[7]
    left, right = room.stereo(T, cam)
    return room, cam, T, left, right


def test_depth_matches_ground_truth(scene):
    room, cam, T, left, right = scene
    kp = orb_keypoints(left, right, cam, n_features=400)
    valid = kp.valid[0].numpy()
    assert valid.sum() >= 150
    uv = kp.uv[0].numpy()[valid].astype(int)
    z = kp.points[0, :, 2].numpy()[valid]
    z_gt = room.depth(T, cam)[uv[:, 1], uv[:, 0]]
    rel = np.abs(z - z_gt) / z_gt
    near = z_gt < 15  # far points have sub-pixel disparities: their depth is legitimately loose
    assert np.median(rel[near]) < 0.02
    assert np.quantile(rel[near], 0.9) < 0.08
    # the disparity is sub-pixel: not all integers
    d = kp.disparity[0].numpy()[valid]
    assert np.mean(np.abs(d - np.round(d)) > 0.05) > 0.5


def test_bundle_shapes_and_properties(scene):
    _, cam, _, left, right = scene
    kp = orb_keypoints(left, right, cam, n_features=300)
    K = kp.uv.shape[1]
    assert 0 < K <= 300
    assert kp.descriptors.shape == (1, K, DESCRIPTOR_DIM)
    assert torch.allclose(kp.descriptors.norm(dim=-1), torch.ones(1, K), atol=1e-5)
    assert ((kp.scores >= 0) & (kp.scores <= 1)).all()
    v = kp.valid[0]
    W = kp.inv_cov[0][v].double()
    assert (torch.linalg.eigvalsh(W)[:, 0] > 0).all()             # PD where valid
    assert (kp.inv_cov[0][~v] == 0).all() and (kp.points[0][~v] == 0).all()
    assert (kp.points[0][v][:, 2] > 0).all()
    # the same image twice gives the same keypoints (deterministic)
    kp2 = orb_keypoints(left, right, cam, n_features=300)
    assert torch.equal(kp.uv, kp2.uv) and torch.equal(kp.valid, kp2.valid)


def test_uint8_input_equals_float_input(scene):
    _, cam, _, left, right = scene
    a = orb_keypoints(left, right, cam, n_features=200)
    b = orb_keypoints((left * 255 + 0.5).astype(np.uint8), (right * 255 + 0.5).astype(np.uint8), cam,
                      n_features=200)
    assert torch.equal(a.uv, b.uv) and torch.equal(a.valid, b.valid)


def test_black_frame_has_no_keypoints():
    cam = default_camera(240, 320, fx=160.0)
    z = np.zeros((240, 320), np.float32)
    kp = orb_keypoints(z, z, cam)
    assert kp.uv.shape == (1, 0, 2) and kp.valid.shape == (1, 0)
    assert kp.descriptors.shape == (1, 0, DESCRIPTOR_DIM)


def test_left_equals_right_gives_no_valid_point(scene):
    _, cam, _, left, _ = scene
    kp = orb_keypoints(left, left, cam)     # zero disparity everywhere: nothing can be triangulated
    assert kp.uv.shape[1] > 0
    assert int(kp.valid.sum()) == 0


def test_bad_inputs_raise(scene):
    _, cam, _, left, right = scene
    with pytest.raises(ValueError, match="differ in size"):
        orb_keypoints(left, right[:, :-1], cam)
    with pytest.raises(ValueError, match="gray"):
        orb_keypoints(np.stack([left] * 3, -1), right, cam)


def test_row_search_finds_a_known_shift():
    rng = np.random.default_rng(0)
    img = (rng.random((60, 200)) * 255).astype(np.float32)
    import cv2

    img = cv2.GaussianBlur(img, (0, 0), 1.2)
    shift = 13.4                                                      # sub-pixel, to the left
    M = np.float32([[1, 0, -shift], [0, 1, 0]])
    right = cv2.warpAffine(img, M, (200, 60), flags=cv2.INTER_CUBIC)
    u = np.array([80, 100, 120, 150])
    v = np.array([20, 30, 40, 30])
    d, ncc, ok = match_along_rows(img, right, u, v, max_disparity=40)
    assert ok.all()
    assert np.abs(d - shift).max() < 0.2
    assert (ncc > 0.95).all()
