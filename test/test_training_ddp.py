"""DDP: `torchrun` with 2 CPU processes (gloo) trains a few steps through the CLI; the replicas
must end with bit-identical weights (gradients were averaged, not trained apart)."""
import csv
import os
import subprocess
import sys

import torch

from sdpr_loc.training.checkpoint import load_checkpoint
from test_training_trainer import make_bags


def test_torchrun_two_cpu_replicas_stay_identical(tmp_path_factory, tmp_path):
    teach, repeat = make_bags(tmp_path_factory.getbasetemp() / "sdpr_train_bags")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "sdpr_loc.cli", "train", "--teach", str(teach), "--repeat", str(repeat), "--out", str(out),
           "--device", "cpu", "--epochs", "1", "--no-progress", "--save-replicas",
           "--cache-dir", str(teach.parent / "cache"),
           "--set", "width=4", "--set", "cell=8", "--set", "max_disparity=24", "--set", "batch_size=2",
           "--set", "val_fraction=0.0", "--set", "tensorboard=false", "--set", "warmup_steps=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0 = load_checkpoint(out / "replica-rank0.pt")["model"]
    r1 = load_checkpoint(out / "replica-rank1.pt")["model"]
    assert r0.keys() == r1.keys()
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    # and they did train: the weights moved away from the shared initialisation
    torch.manual_seed(0)
    from sdpr_loc.vision.network import KeypointNet, NetworkConfig
    init = KeypointNet(NetworkConfig(width=4, cell=8)).state_dict()
    assert not torch.equal(init["detector.weight"], r0["detector.weight"])
    steps = list(csv.DictReader(open(out / "steps.csv")))
    assert len(steps) >= 3 and all(int(s["items"]) == 4 for s in steps)   # 2 per rank x 2 ranks
