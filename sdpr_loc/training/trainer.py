"""The training loop: keypoint network trained through the (certified) localization pipeline.

Each step: photometric jitter -> ``Localizer`` in soft mode -> pose + keypoint loss (items whose
pose is not certified are skipped and counted) -> backward (KKT gradients through the
registration) -> clip -> Adam -> warmup + cosine schedule. Each epoch ends with an evaluation of
the deployed path (hard matching, RANSAC, certified registration) on the validation pairs.

Exact resume: the data order is a function of (seed, epoch), augmentation of (seed, step, rank),
and the checkpoint holds model, optimizer, scheduler, RNG states, the position in the epoch and
the epoch's running sums; a killed run resumed from its last checkpoint repeats the
uninterrupted run's losses and weights bit for bit on CPU.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data._utils.collate import default_collate

from sdpr_loc.geometry.se3 import inverse
from sdpr_loc.vision.matching import as_cameras
from sdpr_loc.vision.network import KeypointNet
from sdpr_loc.vision.pipeline import Localizer

from . import distributed as D
from .checkpoint import (FORMAT, VERSION, CheckpointError, atomic_save, load_checkpoint, load_state_checked,
                         network_config_of, rng_state, save_network, set_rng_state)
from .config import Params
from .losses import LossWeights, pose_loss, total_loss
from .metrics import RunLog, pose_errors, summarize

Tensor = torch.Tensor

__all__ = ["Trainer", "augment", "evaluate"]

_EPOCH_SUMS = ("loss", "pose", "keypoint", "descriptor", "items", "skipped", "nonfinite", "steps")


def augment(images: Tensor, generator: torch.Generator) -> Tensor:
    """Photometric jitter of stereo frames ``(B, 2, H, W)``: per-frame gain and gamma (shared by
    left and right, like one exposure), per-pixel noise. Teaches invariance to lighting."""
    B = images.shape[0]
    gain = torch.empty(B, 1, 1, 1).uniform_(0.6, 1.4, generator=generator)
    gamma = torch.exp(torch.empty(B, 1, 1, 1).uniform_(-0.35, 0.35, generator=generator))
    noise = 0.01 * torch.randn(images.shape, generator=generator)
    out = (images.clamp(0, 1) ** gamma.to(images)) * gain.to(images) + noise.to(images)
    return out.clamp(0, 1)


def oriented(batch: dict, keypoints_from: str = "live") -> tuple[Tensor, Tensor, Tensor]:
    """(source, target, T_target_source) of a pair batch with the keypoints on ``keypoints_from``.

    Pair datasets give source = live frame, target = keyframe; "keyframe" swaps them, so the
    keyframe's keypoints are matched against the live frame, as map localization does.
    """
    src, trg, T = batch["source"].float(), batch["target"].float(), batch["T_target_source"]
    if keypoints_from == "keyframe":
        return trg, src, inverse(T.double()).to(T.dtype)
    return src, trg, T


@torch.no_grad()
def evaluate(localizer: Localizer, dataset: Dataset, batch_size: int = 4, max_pairs: int | None = None,
             trans_weight: float = 1.0, rot_weight: float = 10.0, keypoints_from: str = "live"
             ) -> dict[str, float]:
    """Deployed-path metrics on ``dataset``: pose errors (m, deg), certified and usable rates."""
    was = localizer.training
    localizer.eval()
    n = len(dataset) if max_pairs is None else min(len(dataset), int(max_pairs))
    loader = DataLoader(Subset(dataset, range(n)), batch_size=batch_size, shuffle=False)
    vals: dict[str, list[float]] = {"trans_err": [], "rot_err": [], "pose_loss": []}
    cert = usable = 0
    for batch in loader:
        src, trg, T_gt = oriented(batch, keypoints_from)
        res = localizer(src, trg, batch["camera"], mode="hard")
        T_gt = T_gt.to(res.T)
        te, re = pose_errors(res.T, T_gt)
        vals["trans_err"] += te.tolist()
        vals["rot_err"] += re.tolist()
        vals["pose_loss"] += pose_loss(res.T, T_gt, None, trans_weight, rot_weight)[1].tolist()
        cert += int(res.certificate.certified.sum())
        usable += int(res.usable.sum())
    localizer.train(was)
    out = summarize("val_", vals)
    out["val_certified_rate"] = cert / max(n, 1)
    out["val_usable_rate"] = usable / max(n, 1)
    out["val_pairs"] = float(n)
    return out


class Trainer:
    """Train (or fine-tune) a KeypointNet on pair datasets (items as in sdpr_loc.data.dataset).

    params: Params (see config/train.yaml). out_dir: checkpoints (``last.pt`` full state,
    ``model.pt`` / ``best.pt`` network only), ``steps.csv``, ``epochs.csv``, ``tb/``.
    device: None = CUDA if available. Under torchrun each process trains one DDP replica.
    save_replicas: every rank writes ``replica-rank{r}.pt`` at the end (to check DDP sync).
    """

    def __init__(self, params: Params, train_set: Dataset, val_set: Dataset | None = None,
                 out_dir: str | Path = "runs/train", device: str | torch.device | None = None,
                 save_replicas: bool = False):
        self.params, self.cfg = params, params.train
        self.train_set, self.val_set = train_set, val_set
        self.out = Path(out_dir)
        self.save_replicas = save_replicas
        self.dist = D.setup(device)
        self.device = self.dist.device
        cfg = self.cfg
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        net_cfg = params.network
        init = None
        if cfg.init_from:
            init = load_checkpoint(cfg.init_from)
            net_cfg = network_config_of(init, cfg.init_from)  # fine-tuning keeps the architecture
        self.network = KeypointNet(net_cfg)
        if init is not None:
            load_state_checked(self.network, init["model"], f"init_from checkpoint {cfg.init_from!r}")
        frozen = cfg.freeze_prefixes()
        for name, p in self.network.named_parameters():
            p.requires_grad_(not name.startswith(frozen) if frozen else True)
        self.trainable = [p for p in self.network.parameters() if p.requires_grad]
        if not self.trainable:
            raise ValueError(f"freeze={cfg.freeze!r} leaves no trainable parameters")
        self.network.to(self.device)
        self.localizer = Localizer(self.network, cfg.pose_block, params.localizer, generator_seed=cfg.seed)
        self.model = self.localizer
        if self.dist.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DDP(self.localizer, device_ids=ids)
        self.optimizer = torch.optim.Adam(self.trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.steps_per_epoch = len(D.epoch_batches(len(train_set), cfg.batch_size, cfg.seed, 0,
                                                   self.dist.rank, self.dist.world_size))
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.loss_weights = LossWeights(pose=cfg.pose_weight, keypoint=cfg.keypoint_weight,
                                        descriptor=cfg.descriptor_weight, trans=cfg.trans_weight,
                                        rot=cfg.rot_weight, huber_delta=cfg.huber_delta)
        self.epoch = self.step_in_epoch = self.global_step = 0
        self.sums = dict.fromkeys(_EPOCH_SUMS, 0.0)
        self.best = math.inf
        self.log: RunLog | None = None

    # ------------------------------------------------------------------------------------------
    def _lr_factor(self, step: int) -> float:
        cfg = self.cfg
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        span = max(1, self.total_steps - cfg.warmup_steps)
        cos = 0.5 * (1 + math.cos(math.pi * min(1.0, (step - cfg.warmup_steps) / span)))
        return (cfg.lr_min + (cfg.lr - cfg.lr_min) * cos) / cfg.lr

    def state_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION,
                "model": {k: v.detach().cpu() for k, v in self.network.state_dict().items()},
                "config": self.network.config.to_dict(), "localizer": self.params.localizer.to_dict(),
                "params": self.params.to_flat(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "rng": rng_state(), "epoch": self.epoch,
                "step_in_epoch": self.step_in_epoch, "global_step": self.global_step,
                "sums": dict(self.sums), "best": self.best}

    def save(self, name: str = "last.pt") -> Path | None:
        """Full training state (rank 0 only; replicas are identical)."""
        if not self.dist.main:
            return None
        return atomic_save(self.state_dict(), self.out / name)

    def resume(self, path: str | Path | None = None) -> bool:
        """Restore the full state from ``path`` (default ``out_dir/last.pt``); False if absent."""
        path = Path(path) if path is not None else self.out / "last.pt"
        if not path.exists():
            return False
        need = ("model", "config", "optimizer", "scheduler", "rng", "epoch", "step_in_epoch",
                "global_step", "sums")
        ck = load_checkpoint(path, require=need)
        if network_config_of(ck, str(path)) != self.network.config:
            raise CheckpointError(f"{str(path)!r} was trained with network config {ck['config']}, "
                                  f"this run has {self.network.config.to_dict()}")
        load_state_checked(self.network, ck["model"], f"checkpoint {str(path)!r}")
        try:
            self.optimizer.load_state_dict(ck["optimizer"])
            self.scheduler.load_state_dict(ck["scheduler"])
        except (ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(f"{str(path)!r}: optimizer/scheduler state does not fit "
                                  f"(different freeze or parameters?): {e}") from None
        set_rng_state(ck["rng"])
        self.epoch, self.step_in_epoch = int(ck["epoch"]), int(ck["step_in_epoch"])
        self.global_step = int(ck["global_step"])
        self.sums = {k: float(ck["sums"].get(k, 0.0)) for k in _EPOCH_SUMS}
        self.best = float(ck.get("best", math.inf))
        changed = {k: (v, self.params.to_flat().get(k)) for k, v in ck.get("params", {}).items()
                   if self.params.to_flat().get(k) != v}
        if changed and self.dist.main:
            print(f"resume: parameters differ from the checkpoint's (old, new): {changed}")
        return True

    # ------------------------------------------------------------------------------------------
    def train_step(self, batch: dict) -> dict:
        cfg = self.cfg
        self.model.train()
        src, trg, T_gt = oriented(batch, cfg.keypoints_from)
        if cfg.augment:
            g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.global_step * 131 + self.dist.rank)
            src, trg = augment(src, g), augment(trg, g)
        B = src.shape[0]
        res = self.model(src.to(self.device), trg.to(self.device), batch["camera"], mode="soft")
        terms = total_loss(res, T_gt.to(self.device), as_cameras(batch["camera"], B),
                           tuple(src.shape[-2:]), self.loss_weights, cfg.uncertified)
        # every trainable parameter in the graph, even if a batch registers nothing (DDP needs it)
        loss = terms.total + 0.0 * sum(p.sum() for p in self.trainable)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
        gnorm = float(torch.nn.utils.clip_grad_norm_(self.trainable, clip))
        finite = math.isfinite(gnorm)  # gradients are all-reduced: every rank agrees
        if finite:
            self.optimizer.step()
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        loss_v, pose_v, kp_v, desc_v, skipped = D.all_reduce_sum(
            [float(terms.total.detach()), float(terms.pose), float(terms.keypoint), float(terms.descriptor),
             float(terms.skipped)], self.device)
        w = self.dist.world_size
        return {"step": self.global_step + 1, "epoch": self.epoch, "loss": loss_v / w, "pose": pose_v / w,
                "keypoint": kp_v / w, "descriptor": desc_v / w, "skipped": int(skipped), "items": B * w, "grad_norm": gnorm,
                "nonfinite": int(not finite), "lr": lr}

    def fit(self, resume: bool = False, max_steps: int | None = None,
            on_step: Callable[[dict], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> list[dict]:
        """Run to the configured number of epochs (or ``max_steps`` global steps, then save).

        Returns this call's step records. ``on_step(record)`` runs after each step (and after
        its checkpoint, if one was due). ``should_stop()`` is asked after each step: true on any
        process (a Ctrl-C, a stop service), every process ends after this same step with the full
        state saved (``last.pt``, resumable) and the network in ``model.pt``, as after ``max_steps``.
        """
        if resume:
            self.resume()
        self.log = RunLog(self.out, self.cfg.tensorboard, self.global_step if resume else None, self.dist.main)
        history: list[dict] = []
        try:
            while self.epoch < self.cfg.epochs:
                if self._run_epoch(history, max_steps, on_step, should_stop):
                    self.save()
                    if self.dist.main:  # model.pt always holds the latest weights
                        save_network(self.out / "model.pt", self.network, self.params.localizer,
                                     {"epoch": self.epoch, "global_step": self.global_step})
                    break
                self._end_epoch()
            if self.save_replicas:
                save_network(self.out / f"replica-rank{self.dist.rank}.pt", self.network)
        finally:
            self.log.close()
        D.barrier()
        return history

    def _run_epoch(self, history: list[dict], max_steps: int | None, on_step, should_stop=None) -> bool:
        from tqdm import tqdm

        cfg = self.cfg
        batches = D.epoch_batches(len(self.train_set), cfg.batch_size, cfg.seed, self.epoch,
                                  self.dist.rank, self.dist.world_size)
        # own generator: creating the loader must not draw from the global RNG (exact resume)
        loader = DataLoader(self.train_set, batch_sampler=batches[self.step_in_epoch:],
                            num_workers=cfg.num_workers, collate_fn=default_collate,
                            generator=torch.Generator().manual_seed(cfg.seed + self.epoch))
        bar = tqdm(loader, total=len(batches), initial=self.step_in_epoch, desc=f"epoch {self.epoch}",
                   disable=not (cfg.progress and self.dist.main), leave=False)
        for batch in bar:
            t0 = time.perf_counter()
            rec = self.train_step(batch)
            rec["time_s"] = time.perf_counter() - t0
            self.global_step += 1
            self.step_in_epoch += 1
            for k in ("loss", "pose", "keypoint", "descriptor"):
                self.sums[k] += rec[k]
            for k in ("items", "skipped", "nonfinite"):
                self.sums[k] += rec[k]
            self.sums["steps"] += 1
            self.log.write("steps", rec)
            bar.set_postfix(loss=f"{rec['loss']:.3g}", skipped=rec["skipped"])
            history.append(rec)
            if self.global_step % cfg.checkpoint_every == 0:
                self.save()
            if on_step is not None:
                on_step(rec)
            if max_steps is not None and self.global_step >= max_steps:
                return True
            # every process must stop after the same step (the next one's collectives would hang)
            if should_stop is not None and D.all_reduce_sum([float(bool(should_stop()))], self.device)[0] > 0:
                return True
        return False

    def _end_epoch(self) -> None:
        s, n = self.sums, max(self.sums["steps"], 1)
        row = {"step": self.global_step, "epoch": self.epoch, "loss": s["loss"] / n, "pose": s["pose"] / n,
               "keypoint": s["keypoint"] / n, "descriptor": s["descriptor"] / n, "skipped": int(s["skipped"]), "items": int(s["items"]),
               "skipped_rate": s["skipped"] / max(s["items"], 1), "nonfinite_steps": int(s["nonfinite"]),
               "lr": self.optimizer.param_groups[0]["lr"]}
        if self.val_set is not None and len(self.val_set) and (self.epoch + 1) % self.cfg.eval_every == 0:
            if self.dist.main:
                row.update(evaluate(self.localizer, self.val_set, self.cfg.batch_size, self.cfg.eval_max_pairs,
                                    self.cfg.trans_weight, self.cfg.rot_weight, self.cfg.keypoints_from))
            D.barrier()
        self.log.write("epochs", row)
        if self.dist.main:
            print(f"epoch {self.epoch}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                     for k, v in row.items() if k != "epoch"))
        self.epoch += 1
        self.step_in_epoch = 0
        self.sums = dict.fromkeys(_EPOCH_SUMS, 0.0)
        score = row.get("val_pose_loss_mean", row["loss"])
        if self.dist.main:
            meta = {"epoch": self.epoch, "global_step": self.global_step}
            save_network(self.out / "model.pt", self.network, self.params.localizer, meta)
            if score < self.best:
                self.best = score
                save_network(self.out / "best.pt", self.network, self.params.localizer, meta)
        self.save()
