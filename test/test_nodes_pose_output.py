"""The base's pose and covariance from the camera's (static camera-to-base extrinsic)."""
import numpy as np
import pytest

pytestmark = pytest.mark.ros
pytest.importorskip("rclpy")

from scipy.spatial.transform import Rotation  # noqa: E402

from sdpr_loc.geometry.se3 import se3_exp_np  # noqa: E402
from sdpr_loc.nodes.pose_output import move_covariance, parse_extrinsic  # noqa: E402


def test_base_covariance_matches_sampled_camera_errors():
    """ROS order (x y z, rotations about the parent's fixed axes): perturb the camera pose with
    samples of its covariance, carry the rigid extrinsic along, measure the base's spread."""
    rng = np.random.default_rng(0)
    T_c = se3_exp_np(np.array([3.0, -1.0, 0.5, 0.2, -0.4, 1.1]))
    T_cb = parse_extrinsic([0.1, 1.2, -1.6, 0.5, -0.5, 0.5, 0.5])     # a forward camera on a base
    A = rng.normal(size=(6, 6)) * np.r_[[0.05] * 3, [0.01] * 3]
    cov_c = A @ A.T
    d = rng.multivariate_normal(np.zeros(6), cov_c, 20000)
    T_b = T_c @ T_cb
    Rp = Rotation.from_rotvec(d[:, 3:]).as_matrix() @ T_c[:3, :3]     # rotation about fixed axes
    tb = np.einsum("nij,j->ni", Rp, T_cb[:3, 3]) + T_c[:3, 3] + d[:, :3]
    rb = Rotation.from_matrix(np.einsum("nij,jk,lk->nil", Rp, T_cb[:3, :3], T_b[:3, :3])).as_rotvec()
    emp = np.cov(np.c_[tb - T_b[:3, 3], rb].T)
    got = move_covariance(cov_c, T_c[:3, 3], T_b[:3, 3])
    assert np.allclose(got, emp, atol=0.03 * np.abs(emp).max())
    assert np.allclose(move_covariance(cov_c, T_c[:3, 3], T_c[:3, 3]), cov_c)


def test_extrinsic_parameter_is_checked():
    assert parse_extrinsic([]) is None
    T = parse_extrinsic([1, 2, 3, 0, 0, 0, 1])
    assert np.allclose(T, np.array([[1, 0, 0, 1], [0, 1, 0, 2], [0, 0, 1, 3], [0, 0, 0, 1]]))
    with pytest.raises(ValueError, match="7 finite numbers"):
        parse_extrinsic([1, 2, 3])
    with pytest.raises(ValueError, match="unit norm"):
        parse_extrinsic([0, 0, 0, 0, 0, 0, 2])
