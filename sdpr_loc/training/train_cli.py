"""``sdpr-loc train``: train or fine-tune the keypoint network from teach/repeat rosbags.

Examples::

    sdpr-loc train --teach day.mcap --repeat night.mcap --out runs/night
    sdpr-loc train --config config/train.yaml --teach a_day.mcap b_day.mcap \\
        --repeat a_night.mcap b_night.mcap --set epochs=20 --set lr=1e-4
    sdpr-loc train --teach day.mcap --repeat dusk.mcap --init-from models/keypoints.pt \\
        --freeze encoder --out runs/finetune
    sdpr-loc train ... --resume                      # continue runs/... from its last.pt
    torchrun --nproc_per_node=2 -m sdpr_loc.cli train ...   # DDP (gloo on CPU, nccl on GPU)

The i-th ``--teach`` bag pairs with the i-th ``--repeat`` bag (same world, ground truth in one
frame). Without ``--val-teach/--val-repeat`` the last ``val_fraction`` of the pairs validates.

Real drives have no teach/repeat pair: ``--odometry BAG ...`` trains on consecutive frames of each
bag instead (frame i is the keyframe, frame i + ``--stride`` the live frame; ground truth needed),
e.g. imported KITTI sequences; ``--val-odometry`` bags validate::

    sdpr-loc train --odometry kitti00.mcap --val-odometry kitti01.mcap --init-from models/keypoints.pt

"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Callable

from torch.utils.data import ConcatDataset, Subset

from sdpr_loc.argtypes import positive
from sdpr_loc.errors import UsageError

__all__ = ["add_arguments", "run", "build_datasets"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None,
                        help="ROS parameter file with trainer_node.ros__parameters (default: the "
                             "package's config/train.yaml; a file may set only some keys)")
    parser.add_argument("--teach", nargs="+", type=Path, help="teach (keyframe) bag(s)")
    parser.add_argument("--repeat", nargs="+", type=Path, help="repeat (live) bag(s), one per --teach bag")
    parser.add_argument("--odometry", nargs="+", type=Path, default=None,
                        help="instead of --teach/--repeat: consecutive-frame pairs of these bags")
    parser.add_argument("--val-odometry", nargs="+", type=Path, default=None,
                        help="validation bag(s) of consecutive-frame pairs")
    parser.add_argument("--stride", type=positive(int), default=1, help="--odometry: frames between the pair (1)")
    parser.add_argument("--val-teach", nargs="+", type=Path, default=None, help="validation teach bag(s)")
    parser.add_argument("--val-repeat", nargs="+", type=Path, default=None, help="validation repeat bag(s)")
    parser.add_argument("--out", type=Path, default=Path("runs/train"),
                        help="run directory: checkpoints, steps.csv, epochs.csv, tb/ (default runs/train)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt (exact)")
    parser.add_argument("--init-from", default=None, help="fine-tune from this checkpoint (e.g. models/*.pt)")
    parser.add_argument("--freeze", default=None,
                        help="comma list of frozen parts: encoder, decoder, detector, score, projection")
    parser.add_argument("--epochs", type=positive(int), default=None, help="override epochs")
    parser.add_argument("--max-steps", type=positive(int), default=None, help="stop (and save) after this many steps")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="bag index cache (default OUT/cache)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any parameter of the config (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--save-replicas", action="store_true",
                        help="each DDP rank writes OUT/replica-rank<r>.pt at the end (sync check)")


def _pairs(teach: list[Path], repeat: list[Path], data, cache_dir: Path):
    from sdpr_loc.data.dataset import PairDataset

    if len(teach) != len(repeat):
        raise UsageError(f"need one --repeat bag per --teach bag, got {len(teach)} and {len(repeat)}")
    sets = [PairDataset(t, r, max_dist=data.max_dist, max_angle_deg=data.max_angle_deg,
                        keyframe_spacing=data.keyframe_spacing, cache_dir=cache_dir)
            for t, r in zip(teach, repeat)]
    empty = [f"{t} / {r}" for (t, r), s in zip(zip(teach, repeat), sets) if len(s) == 0]
    if empty:
        raise UsageError(f"no pairs within max_dist={data.max_dist} m and max_angle_deg="
                         f"{data.max_angle_deg} for: {empty}")
    return sets[0] if len(sets) == 1 else ConcatDataset(sets)


def _odometry_pairs(bags: list[Path], stride: int, cache_dir: Path):
    from sdpr_loc.data.dataset import OdometryDataset

    sets = [OdometryDataset(b, stride=stride, cache_dir=cache_dir) for b in bags]
    empty = [str(b) for b, s in zip(bags, sets) if len(s) == 0]
    if empty:
        raise UsageError(f"no consecutive-frame pairs with ground truth (stride {stride}) in: {empty}")
    return sets[0] if len(sets) == 1 else ConcatDataset(sets)


def build_datasets(args, params):
    """(train, val) datasets from the bag arguments; val may be None."""
    cache = args.cache_dir or args.out / "cache"
    odometry = getattr(args, "odometry", None)
    if odometry and (args.teach or args.repeat):
        raise UsageError("pass either --odometry or --teach/--repeat, not both")
    if not odometry and not (args.teach and args.repeat):
        raise UsageError("pass --teach and --repeat bags, or --odometry bags")
    if odometry:
        full = _odometry_pairs(odometry, args.stride, cache)
        if args.val_odometry:
            return full, _odometry_pairs(args.val_odometry, args.stride, cache)
    else:
        full = _pairs(args.teach, args.repeat, params.data, cache)
    if args.val_teach or args.val_repeat:
        val = _pairs(args.val_teach or [], args.val_repeat or [], params.data, cache)
        return full, val
    n_val = int(round(len(full) * params.data.val_fraction))
    if n_val == 0:
        return full, None
    if n_val >= len(full):
        raise UsageError(f"val_fraction={params.data.val_fraction} leaves no training pairs of {len(full)}")
    # contiguous split: neighbouring frames are near duplicates, so a random split would leak
    return Subset(full, range(len(full) - n_val)), Subset(full, range(len(full) - n_val, len(full)))


def run(args) -> int:
    from .config import load_params, parse_override
    from .trainer import Trainer

    overrides = dict(parse_override(s) for s in args.set)
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.init_from is not None:
        overrides["init_from"] = args.init_from
    if args.freeze is not None:
        overrides["freeze"] = args.freeze
    if args.no_progress:
        overrides["progress"] = False
    params = load_params(args.config, overrides)
    if args.resume and not (args.out / "last.pt").exists():
        raise FileNotFoundError(f"--resume: {args.out / 'last.pt'} does not exist")
    train, val = build_datasets(args, params)
    trainer = Trainer(params, train, val, out_dir=args.out, device=args.device,
                      save_replicas=args.save_replicas)
    stop, restore = _stop_on_ctrl_c()
    try:
        trainer.fit(resume=args.resume, max_steps=args.max_steps, should_stop=stop.is_set)
    finally:
        restore()
        from .distributed import teardown
        teardown()
    if trainer.dist.main:
        if stop.is_set():
            print(f"stopped at step {trainer.global_step}; the same command with --resume continues it",
                  file=sys.stderr)
        print(f"checkpoints in {args.out}: last.pt (resume), model.pt, best.pt")
    return 0


def _stop_on_ctrl_c() -> tuple[threading.Event, Callable[[], None]]:
    """(stop, restore): the first Ctrl-C sets ``stop``, so training ends after the current step
    with everything saved (it used to end in a traceback, losing the steps since the last
    checkpoint); a second one aborts at once (the last checkpoint is whole: files are written
    atomically). ``restore()`` puts the previous handler back. Outside the main thread (where
    Python cannot handle signals) Ctrl-C keeps its default."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        return stop, lambda: None

    def on_sigint(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("\nCtrl-C: stopping after this step and saving (Ctrl-C again to abort)", file=sys.stderr, flush=True)

    old = signal.signal(signal.SIGINT, on_sigint)
    return stop, lambda: signal.signal(signal.SIGINT, old)
