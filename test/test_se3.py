"""SO(3)/SE(3) maps against scipy's Rotation (an independent implementation) and identities."""
import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from torch.autograd import gradcheck

from sdpr_loc.geometry import se3

F64 = torch.float64


def _axes(n, gen):
    return torch.nn.functional.normalize(torch.randn(n, 3, generator=gen, dtype=F64), dim=-1)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


ANGLES = [0.0, 1e-12, 1e-7, 1e-3, 0.099, 0.101, 0.5, 2.0, math.pi - 1e-3, math.pi - 1e-9]


@pytest.mark.parametrize("angle", ANGLES)
def test_so3_exp_matches_scipy_and_log_roundtrips(angle, gen):
    w = _axes(64, gen) * angle
    R = se3.so3_exp(w)
    ref = Rotation.from_rotvec(w.numpy()).as_matrix()
    np.testing.assert_allclose(R.numpy(), ref, atol=1e-14)
    w_back = se3.so3_log(R)
    # Near pi the axis sign is ambiguous: compare rotations, and the angle itself.
    np.testing.assert_allclose(se3.so3_exp(w_back).numpy(), ref, atol=1e-14)
    np.testing.assert_allclose(w_back.norm(dim=-1).numpy(), angle, atol=1e-13)
    if angle < 3.0:
        np.testing.assert_allclose(w_back.numpy(), w.numpy(), atol=1e-14)


def test_so3_log_exactly_pi_and_batched_shapes(gen):
    for axis in torch.eye(3, dtype=F64):
        R = se3.so3_exp(axis * math.pi)
        w = se3.so3_log(R)
        assert torch.isfinite(w).all()
        np.testing.assert_allclose(w.abs().numpy(), (axis * math.pi).numpy(), atol=1e-15)
    w = torch.randn(2, 5, 7, 3, generator=gen, dtype=F64)
    R = se3.so3_exp(w)
    assert R.shape == (2, 5, 7, 3, 3)
    assert se3.so3_log(R).shape == (2, 5, 7, 3)


def test_hat_vee():
    w = torch.tensor([[1.0, -2.0, 3.0]], dtype=F64)
    v = torch.tensor([[0.5, 0.25, -4.0]], dtype=F64)
    W = se3.hat(w)
    torch.testing.assert_close(W @ v[0], torch.linalg.cross(w, v))
    torch.testing.assert_close(W.transpose(-1, -2), -W)
    torch.testing.assert_close(se3.vee(W), w)


@pytest.mark.parametrize("angle", [0.0, 1e-9, 0.05, 1.0, 3.0, math.pi - 1e-6])
def test_se3_exp_log_roundtrip_and_translation_formula(angle, gen):
    xi = torch.cat([torch.randn(32, 3, generator=gen, dtype=F64), _axes(32, gen) * angle], -1)
    T = se3.se3_exp(xi)
    torch.testing.assert_close(se3.se3_log(T), xi, atol=1e-12, rtol=0)
    # Independent reference for t: V rho = integral_0^1 exp(s phi) rho ds (Gauss-Legendre).
    s, wts = np.polynomial.legendre.leggauss(40)
    s, wts = (s + 1) / 2, wts / 2
    Rs = Rotation.from_rotvec(np.einsum("k,nj->knj", s, xi[:, 3:].numpy()).reshape(-1, 3))
    Rs = Rs.as_matrix().reshape(len(s), -1, 3, 3)
    t_ref = np.einsum("k,knij,nj->ni", wts, Rs, xi[:, :3].numpy())
    np.testing.assert_allclose(T[:, :3, 3].numpy(), t_ref, atol=1e-12)
    np.testing.assert_allclose(T[:, 3].numpy(), np.tile([0, 0, 0, 1.0], (32, 1)))


def test_compose_inverse_transform_points(gen):
    T1 = se3.se3_exp(torch.randn(4, 6, generator=gen, dtype=F64))
    T2 = se3.se3_exp(torch.randn(4, 6, generator=gen, dtype=F64))
    eye = torch.eye(4, dtype=F64).expand(4, 4, 4)
    torch.testing.assert_close(se3.compose(T1, se3.inverse(T1)), eye)
    torch.testing.assert_close(se3.inverse(T1), torch.linalg.inv(T1))
    torch.testing.assert_close(se3.compose(T1, T2), T1 @ T2)
    torch.testing.assert_close(se3.inverse(se3.compose(T1, T2)),
                               se3.compose(se3.inverse(T2), se3.inverse(T1)))
    p = torch.randn(4, 10, 3, generator=gen, dtype=F64)
    ph = torch.cat([p, torch.ones(4, 10, 1, dtype=F64)], -1)
    torch.testing.assert_close(se3.transform_points(T1, p), (ph @ T1.transpose(-1, -2))[..., :3])
    # broadcasting: one transform, a batch of point sets
    assert se3.transform_points(T1[0], p).shape == (4, 10, 3)
    R, t = se3.split_T(T1)
    torch.testing.assert_close(se3.make_T(R, t), T1)


def test_quaternion_against_scipy(gen):
    R = se3.random_rotation(200, generator=gen)
    q = se3.quaternion_from_R(R)
    q_ref = Rotation.from_matrix(R.numpy()).as_quat()  # scipy is (x, y, z, w) too
    q_ref *= np.sign(q_ref[:, 3:])
    np.testing.assert_allclose(q.numpy(), q_ref, atol=1e-14)
    assert (q[:, 3] >= 0).all()
    np.testing.assert_allclose(se3.R_from_quaternion(q).numpy(), R.numpy(), atol=1e-14)
    # unnormalised input and the 180-degree cases (w = 0) that break the naive formula
    np.testing.assert_allclose(se3.R_from_quaternion(3 * q).numpy(), R.numpy(), atol=1e-14)
    for axis in torch.eye(3, dtype=F64):
        q_pi = se3.quaternion_from_R(se3.so3_exp(axis * math.pi))
        np.testing.assert_allclose(q_pi.abs().numpy(), torch.cat([axis, axis.new_zeros(1)]),
                                   atol=1e-15)
    with pytest.raises(ValueError, match="zero quaternion"):
        se3.R_from_quaternion(torch.zeros(4, dtype=F64))


def test_random_rotation_is_uniform_and_orthonormal(gen):
    R = se3.random_rotation((5000,), generator=gen)
    torch.testing.assert_close(R.transpose(-1, -2) @ R, torch.eye(3, dtype=F64).expand(5000, 3, 3))
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(5000, dtype=F64))
    # Haar measure: E[R] = 0 and the angle has density (1 - cos a) / pi, so E[angle] = pi/2 + 2/pi.
    assert R.mean(0).abs().max() < 0.05
    angle = se3.so3_log(R).norm(dim=-1)
    assert abs(angle.mean().item() - (math.pi / 2 + 2 / math.pi)) < 0.03
    assert se3.random_rotation(3, dtype=torch.float32).dtype == torch.float32


def test_rotation_angle_and_pose_error_are_precise(gen):
    R = se3.random_rotation(50, generator=gen)
    for angle in [0.0, 1e-10, 1e-5, 1.0, math.pi - 1e-10]:
        dR = se3.so3_exp(_axes(50, gen) * angle)
        np.testing.assert_allclose(se3.rotation_angle(R, R @ dR).numpy(), angle, atol=1e-14)
    t1 = torch.randn(50, 3, generator=gen, dtype=F64)
    t2 = t1 + torch.tensor([3.0, 0.0, 4.0], dtype=F64)
    np.testing.assert_allclose(se3.translation_distance(t1, t2).numpy(), 5.0)
    rot, trans = se3.pose_error(se3.make_T(R, t1), se3.make_T(R @ dR, t2))
    np.testing.assert_allclose(rot.numpy(), math.pi - 1e-10, atol=1e-14)
    np.testing.assert_allclose(trans.numpy(), 5.0)


@pytest.mark.parametrize("angle", [0.0, 1e-8, 0.1, 1.0, math.pi - 1e-3])
def test_gradcheck_float64(angle, gen):
    w = (_axes(3, gen) * angle).requires_grad_()
    assert gradcheck(se3.so3_exp, (w,))
    xi = torch.cat([torch.randn(3, 3, generator=gen, dtype=F64), w.detach()], -1)
    assert gradcheck(se3.se3_exp, (xi.requires_grad_(),))
    # se3_log on the manifold (T0 exp(delta)) and so3_log on a raw matrix input
    T0 = se3.se3_exp(xi.detach())
    delta = torch.zeros(3, 6, dtype=F64, requires_grad=True)
    assert gradcheck(lambda d: se3.se3_log(se3.compose(T0, se3.se3_exp(d))), (delta,))
    assert gradcheck(se3.so3_log, (se3.so3_exp(w.detach()).requires_grad_(),))


def test_gradients_finite_at_identity():
    w = torch.zeros(2, 3, dtype=F64, requires_grad=True)
    R = se3.so3_exp(w)
    (se3.so3_log(R).sum() + se3.rotation_angle(R, R).sum()
     + se3.translation_distance(w, w).sum()).backward()
    assert torch.isfinite(w.grad).all()
    torch.testing.assert_close(w.grad, torch.ones(2, 3, dtype=F64))  # d log(exp(w)) / dw = I


def test_float32_roundtrip(gen):
    xi = torch.randn(100, 6, generator=gen, dtype=F64)
    xi[:, 3:] = torch.nn.functional.normalize(xi[:, 3:], dim=-1) * torch.rand(100, 1, dtype=F64,
                                                                                  generator=gen) * 3
    xi32 = xi.float()
    T = se3.se3_exp(xi32)
    assert T.dtype == torch.float32
    torch.testing.assert_close(se3.se3_log(T), xi32, atol=2e-5, rtol=0)


@pytest.mark.parametrize("fn, args, msg", [
    (se3.so3_exp, (torch.zeros(4, 2),), r"w must have shape \(\.\.\., 3\), got \(4, 2\)"),
    (se3.so3_log, (torch.zeros(3, 4),), r"R must have shape \(\.\.\., 3, 3\)"),
    (se3.se3_exp, (torch.zeros(5),), r"xi must have shape \(\.\.\., 6\)"),
    (se3.inverse, (torch.zeros(3, 3),), r"T must have shape \(\.\.\., 4, 4\)"),
    (se3.transform_points, (torch.eye(4), torch.zeros(5, 2)), r"p must have shape"),
    (se3.so3_exp, (torch.zeros(3, dtype=torch.int64),), "floating point"),
    (se3.R_from_quaternion, ([0, 0, 0, 1],), "torch.Tensor"),
])
def test_shape_errors(fn, args, msg):
    with pytest.raises(ValueError, match=msg):
        fn(*args)
