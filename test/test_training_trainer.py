"""Trainer on a small synthetic teach (day) / repeat (dusk) bag pair: learning, exact resume,
fine-tuning with frozen parts, checkpoint errors."""
import csv

import pytest
import torch
from torch.utils.data import Subset
from torch.utils.data._utils.collate import default_collate

from sdpr_loc.data.bags import write_stereo_bag
from sdpr_loc.data.dataset import PairDataset
from sdpr_loc.data.synth import default_camera, make_world, render_drive
from sdpr_loc.training.checkpoint import CheckpointError
from sdpr_loc.training.config import load_params
from sdpr_loc.training.losses import total_loss
from sdpr_loc.training.trainer import Trainer
from sdpr_loc.vision.matching import as_cameras

H, W = 64, 96
SMALL = {"cell": 8, "max_disparity": 24, "progress": False, "warmup_steps": 1, "tensorboard": False}


def make_bags(directory, frames=16):
    """Teach (day) and repeat (dusk) drives of one synthetic world as mcap bags."""
    directory.mkdir(parents=True, exist_ok=True)
    teach, repeat = directory / "teach.mcap", directory / "repeat.mcap"
    if not teach.exists():
        world = make_world(0)
        cam = default_camera(H, W)
        write_stereo_bag(teach, render_drive(world, "teach", "day", frames=frames, camera=cam))
        write_stereo_bag(repeat, render_drive(world, "repeat", "dusk", frames=frames, camera=cam))
    return teach, repeat


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    teach, repeat = make_bags(tmp_path_factory.getbasetemp() / "sdpr_train_bags")
    ds = PairDataset(teach, repeat, cache_dir=teach.parent / "cache")
    assert len(ds) >= 12
    return ds


def _soft_pose_loss(trainer, batch):
    with torch.no_grad():
        res = trainer.localizer(batch["source"], batch["target"], batch["camera"], mode="soft")
        B = batch["source"].shape[0]
        return total_loss(res, batch["T_target_source"], as_cameras(batch["camera"], B), (H, W),
                          trainer.loss_weights).pose.item()


def test_tiny_training_run_lowers_pose_loss(pairs, tmp_path):
    params = load_params(None, {**SMALL, "width": 8, "lr": 1e-3, "epochs": 8, "batch_size": 4,
                                "augment": False, "eval_every": 8})
    val = Subset(pairs, range(len(pairs) - 4, len(pairs)))
    trainer = Trainer(params, pairs, val, out_dir=tmp_path, device="cpu")
    batch = default_collate([pairs[i] for i in range(len(pairs))])
    before = _soft_pose_loss(trainer, batch)
    history = trainer.fit()
    after = _soft_pose_loss(trainer, batch)
    assert len(history) == 8 * trainer.steps_per_epoch >= 30
    assert after < 0.3 * before, (before, after)
    rows = list(csv.DictReader(open(tmp_path / "epochs.csv")))
    assert len(rows) == 8 and {"skipped", "skipped_rate", "val_trans_err_median", "val_certified_rate"} <= set(rows[0])
    assert rows[-1]["val_trans_err_median"] != ""                # evaluated on the last epoch
    for name in ("last.pt", "model.pt", "best.pt"):
        assert (tmp_path / name).exists()


def _weights(trainer):
    return {k: v.clone() for k, v in trainer.network.state_dict().items()}


class _Killed(Exception):
    pass


def _steps_csv(path):
    return [{k: v for k, v in r.items() if k != "time_s"} for r in csv.DictReader(open(path / "steps.csv"))]


def test_resume_after_kill_is_bit_exact(pairs, tmp_path):
    params = load_params(None, {**SMALL, "width": 4, "epochs": 2, "batch_size": 4, "checkpoint_every": 3,
                                "augment": True})
    full = Trainer(params, pairs, out_dir=tmp_path / "full", device="cpu")
    ref = full.fit()
    n = len(ref)
    assert n == 2 * full.steps_per_epoch and full.steps_per_epoch == 4

    def kill_at_7(rec):
        if rec["step"] == 7:
            raise _Killed

    first = Trainer(params, pairs, out_dir=tmp_path / "cut", device="cpu")
    with pytest.raises(_Killed):
        first.fit(on_step=kill_at_7)           # checkpoints at steps 3, 4 (epoch end), 6
    resumed = Trainer(params, pairs, out_dir=tmp_path / "cut", device="cpu")
    rest = resumed.fit(resume=True)
    assert [r["step"] for r in rest] == [7, 8]      # from the last checkpoint, mid-epoch
    for r, want in zip(rest, ref[6:]):
        for k in ("loss", "pose", "keypoint", "grad_norm", "lr", "skipped"):
            assert r[k] == want[k], (r["step"], k, r[k], want[k])
    wa, wb = _weights(full), _weights(resumed)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert _steps_csv(tmp_path / "full") == _steps_csv(tmp_path / "cut")   # log reads uninterrupted
    opt_a, opt_b = full.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(opt_a[i]["exp_avg_sq"], opt_b[i]["exp_avg_sq"]) for i in opt_a)


def test_a_stop_request_saves_that_step_and_resumes_exactly(pairs, tmp_path):
    """``should_stop`` (a Ctrl-C of `sdpr-loc train`, the trainer node's ~/stop) ends training after
    the current step with everything saved, though no checkpoint was due (checkpoint_every 100):
    resuming gives the uninterrupted run's weights bit for bit."""
    from sdpr_loc.training.checkpoint import load_checkpoint

    params = load_params(None, {**SMALL, "width": 4, "epochs": 2, "batch_size": 4, "checkpoint_every": 100,
                                "augment": True})
    full = Trainer(params, pairs, out_dir=tmp_path / "full", device="cpu")
    full.fit()
    cut = Trainer(params, pairs, out_dir=tmp_path / "cut", device="cpu")
    done = cut.fit(should_stop=lambda: cut.global_step >= 5)
    assert [r["step"] for r in done] == [1, 2, 3, 4, 5]
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["global_step"] == 5
    assert (tmp_path / "cut" / "model.pt").exists()
    resumed = Trainer(params, pairs, out_dir=tmp_path / "cut", device="cpu")
    assert [r["step"] for r in resumed.fit(resume=True)] == [6, 7, 8]
    wa, wb = _weights(full), _weights(resumed)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_the_first_ctrl_c_asks_for_a_stop_the_second_aborts():
    import os
    import signal

    from sdpr_loc.training.train_cli import _stop_on_ctrl_c

    before = signal.getsignal(signal.SIGINT)
    stop, restore = _stop_on_ctrl_c()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.is_set()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        restore()
    assert signal.getsignal(signal.SIGINT) is before


def test_finetune_freezes_and_checkpoint_errors(pairs, tmp_path):
    base = load_params(None, {**SMALL, "width": 4, "epochs": 1, "batch_size": 4})
    Trainer(base, pairs, out_dir=tmp_path / "base", device="cpu").fit(max_steps=1)
    Trainer(base, pairs, out_dir=tmp_path / "base2", device="cpu").fit()
    model = tmp_path / "base2" / "model.pt"
    # fine-tune: the checkpoint's architecture wins over the config's width
    ft = load_params(None, {**SMALL, "width": 16, "epochs": 1, "batch_size": 4, "init_from": str(model),
                            "freeze": "encoder,decoder"})
    tr = Trainer(ft, pairs, out_dir=tmp_path / "ft", device="cpu")
    assert tr.network.config.width == 4
    w0 = _weights(tr)
    tr.fit(max_steps=2)
    w1 = _weights(tr)
    assert all(torch.equal(w0[k], w1[k]) for k in w0 if k.startswith(("enc.", "dec.")))
    assert not torch.equal(w0["detector.weight"], w1["detector.weight"])
    # resuming with another architecture names the mismatch
    other = load_params(None, {**SMALL, "width": 8, "epochs": 1, "batch_size": 4})
    with pytest.raises(CheckpointError, match="network config"):
        Trainer(other, pairs, out_dir=tmp_path / "base", device="cpu").resume()
    # a damaged last.pt is reported, not silently restarted
    last = tmp_path / "base" / "last.pt"
    last.write_bytes(last.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        Trainer(base, pairs, out_dir=tmp_path / "base", device="cpu").fit(resume=True)
    with pytest.raises(ValueError, match="no trainable parameters"):
        Trainer(load_params(None, {**SMALL, "width": 4, "freeze": "encoder,decoder,detector,score"}),
                pairs, out_dir=tmp_path / "x", device="cpu")
