"""Paper example 2 (stereo calibration through certified localization): gradients, local minima, errors."""
import pytest
import torch

from sdpr_loc.cli import main
from sdpr_loc.examples.stereo_cal import (TRUE_CAMERA, find_local_minima, initial_camera, local_register,
                                          make_problem)
from sdpr_loc.geometry import register
from sdpr_loc.geometry.calibration import PARAMS, calibrate_stereo, calibration_loss, pose_loss
from sdpr_loc.geometry.newton_registration import newton_register, weighted_cost
from sdpr_loc.geometry.se3 import make_T, so3_exp
from sdpr_loc.geometry.stereo import StereoCamera, stereo_points


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny batched linear algebra: on a loaded machine extra threads only contend."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_stereo_points_match_the_camera_model_and_are_differentiable():
    cam = StereoCamera(480.0, 470.0, 5.0, -3.0, 0.3)
    prob = make_problem(K=2, camera=cam, seed=4)
    pix = prob.pixels
    uvd = torch.stack([pix[..., 0], pix[..., 1], pix[..., 0] - pix[..., 2]], -1)
    P, W = stereo_points(pix, cam.intrinsics(), 0.5)
    P_ref, _ = cam.triangulate(uvd)
    W_ref, _ = cam.inverse_covariance(uvd, 0.5)
    assert torch.allclose(P, P_ref, rtol=1e-12, atol=1e-12) and torch.allclose(W, W_ref, rtol=1e-12)
    intr = cam.intrinsics().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: tuple(stereo_points(pix[:, :5], p, 0.5)), (intr,))


def _reference_loss(params, prob, init):
    """Independent reference: damped Newton (no KKT backward), converged, from fixed initial poses."""
    trg, W = stereo_points(prob.pixels, params, 0.5)
    src = prob.board.expand(len(trg), -1, -1)
    R, t, minimum = newton_register(src, trg, W, init)
    assert minimum.all()
    return float(pose_loss(R, t, prob.T_ref).mean())


@pytest.mark.parametrize("b", [0.24, 0.27])
def test_gradient_through_certified_layer_matches_finite_differences(b):
    prob = make_problem(K=4, seed=2)
    p = torch.tensor([484.5, 484.5, 0.0, 0.0, b], dtype=torch.float64, requires_grad=True)
    loss, reg = calibration_loss(p, prob.board, prob.pixels, prob.T_ref)
    assert reg.certificate.certified.all(), reg.certificate.reason
    # Newton from the true poses; with 0.5 px noise the frontal pose's true pose can lie in the basin
    # of the other (tilt-flipped) minimum, so such items start from the certified pose instead
    init = prob.T_ref.clone()
    trg, W = stereo_points(prob.pixels, p.detach(), 0.5)
    src = prob.board.expand(len(trg), -1, -1)
    R, t, _ = newton_register(src, trg, W, init)
    other = weighted_cost(src, trg, W, R, t) > reg.cost.detach() * (1 + 1e-9)
    init[other] = make_T(reg.R.detach(), reg.t.detach())[other]
    assert abs(float(loss.detach()) - _reference_loss(p.detach(), prob, init)) < 1e-8 * max(1.0, float(loss.detach()))
    loss.backward()
    fds = []
    for i, name in enumerate(PARAMS):
        h = 1e-4 if name in ("fx", "fy", "cx", "cy") else 1e-7
        e = torch.zeros(5, dtype=torch.float64)
        e[i] = h
        fd = (_reference_loss(p.detach() + e, prob, init) - _reference_loss(p.detach() - e, prob, init)) / (2 * h)
        fds.append(fd)
    # relative 1e-6, where a component is below 1% of the largest relative to 1% of the largest
    # (finite differences of a Newton solve converged to ~1e-12 carry ~1e-9 absolute noise)
    scale = max(abs(f) for f in fds)
    for name, g, fd in zip(PARAMS, p.grad.tolist(), fds):
        assert abs(g - fd) <= 1e-6 * max(abs(fd), 1e-2 * scale), (name, g, fd)


def test_local_baseline_sits_in_a_local_minimum_that_is_not_certified():
    prob = make_problem()
    start = initial_camera("b", 0.30)
    minima = find_local_minima(prob, start)
    assert int(minima.found.sum()) >= 2, "the example no longer finds local minima"
    k = minima.found.nonzero().flatten()
    trg, W = stereo_points(prob.pixels, start.intrinsics(), 0.5)
    src = prob.board.expand(len(trg), -1, -1)
    sdp = register(src[k], trg[k], inv_cov=W[k], method="sdp")       # independent global reference
    assert sdp.certificate.certified.all()
    loc = local_register(src[k], trg[k], W[k], minima.init[k])
    assert (loc.cost > 1.01 * sdp.cost).all()                           # higher than the global cost
    assert not loc.certificate.certified.any()                          # and the certificate says so
    assert (loc.certificate.min_eig < -1e-7).all()
    # it is a genuine local minimum: small random pose perturbations all raise the cost
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        d = 1e-4 * torch.randn(len(k), 6, generator=g, dtype=torch.float64)
        c = weighted_cost(src[k], trg[k], W[k], so3_exp(d[:, :3]) @ loc.R.detach(), loc.t.detach() + d[:, 3:])
        assert (c > loc.cost).all()


def test_degenerate_boards_and_bad_inputs_raise_clear_errors():
    prob = make_problem(K=2)
    cam = TRUE_CAMERA
    with pytest.raises(ValueError, match="collinear"):
        line = prob.board.clone()
        line[:, 2] = 0.0
        calibrate_stereo(line, prob.pixels, prob.T_ref, cam)
    with pytest.raises(ValueError, match="at least 3 points"):
        calibrate_stereo(prob.board[:2], prob.pixels[:, :2], prob.T_ref, cam)
    with pytest.raises(ValueError, match="behind the camera"):
        flip = prob.T_ref.clone()
        flip[:, :3, :] *= -1  # camera turned away from the board
        calibrate_stereo(prob.board, prob.pixels, make_T(flip[:, :3, :3] @ torch.diag(torch.tensor(
            [1.0, -1.0, 1.0], dtype=torch.float64)), flip[:, :3, 3]), cam)
    with pytest.raises(ValueError, match="disparity"):
        swapped = prob.pixels[..., [2, 1, 0]]
        calibrate_stereo(prob.board, swapped, prob.T_ref, cam)
    with pytest.raises(ValueError, match=r"pixels must have shape \(K, N, 3\)"):
        calibrate_stereo(prob.board, prob.pixels[:1], prob.T_ref, cam)
    with pytest.raises(ValueError, match="NaN"):
        bad = prob.pixels.clone()
        bad[0, 0, 0] = float("nan")
        calibrate_stereo(prob.board, bad, prob.T_ref, cam)
    with pytest.raises(ValueError, match="free must name"):
        calibrate_stereo(prob.board, prob.pixels, prob.T_ref, cam, free=("focal",))
    with pytest.raises(ValueError, match="positive"):
        stereo_points(prob.pixels, torch.tensor([484.5, 484.5, 0.0, 0.0, -0.24], dtype=torch.float64))


def test_calibrate_stereo_recovers_the_baseline_noise_free():
    prob = make_problem(K=10, sigma_px=0.0)
    cal = calibrate_stereo(prob.board, prob.pixels, prob.T_ref, initial_camera("b", 0.30), steps=25)
    assert abs(cal.camera.baseline - 0.24) < 1e-5
    assert all(r.certified == 10 for r in cal.history)


def test_command_prints_the_two_final_lines(tmp_path, capsys):
    assert main(["stereo-cal", "--poses", "4", "--steps", "2", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2].startswith("local_final_baseline: ") and lines[-1].startswith("sdpr_final_baseline: ")
    float(lines[-2].split(": ")[1]), float(lines[-1].split(": ")[1])
    assert (tmp_path / "stereo_cal_b.png").stat().st_size > 0


def test_all_five_parameters_recovered_from_five_percent_off_noise_free():
    prob = make_problem(K=6, sigma_px=0.0, tilt_deg=25.0)
    cal = calibrate_stereo(prob.board, prob.pixels, prob.T_ref, initial_camera("all", 0.3), free=PARAMS,
                           steps=25, optimizer="lbfgs")
    got = cal.camera.intrinsics().tolist()
    for name, g, t in zip(PARAMS, got, TRUE_CAMERA.intrinsics().tolist()):
        assert abs(g - t) <= 1e-4 * (abs(t) if t else TRUE_CAMERA.fx), (name, g, t)
