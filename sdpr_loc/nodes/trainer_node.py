"""trainer_node: offline fine-tuning of the keypoint network from rosbag2 files, as a ROS node.

Services (std_srvs/Trigger): ``~/start`` (validate the parameters and bags, then train in a
worker thread) and ``~/stop`` (finish the current step, save the full training state for resume
and the network so far). Topic ``~/progress`` (diagnostic_msgs/DiagnosticArray, every
``progress_period`` s): state idle / running / stopping / done / failed, epoch, step, loss, output.

Parameters: the node-level ones of :data:`sdpr_loc.nodes.params.SPECS` (bags, base model, output,
device ...; defaults in config/localize.yaml) plus every training hyper-parameter of
config/train.yaml (epochs, lr, ...), validated by ``sdpr_loc.training.config.Params``. The
training itself is the project trainer (``sdpr_loc.training.trainer.Trainer``); its checkpoints
and the output network are written atomically (temporary file + rename).
"""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from std_srvs.srv import Trigger

from . import convert
from .params import TRAIN_FILE, config_path, declare, load_defaults
from .runtime import run

NAME = "trainer_node"
__all__ = ["TrainerNode", "project_train", "main"]

TrainFn = Callable[[dict, Callable[[dict], None], Callable[[], bool]], str]


def project_train(job: dict, progress: Callable[[dict], None], should_stop: Callable[[], bool]) -> str:
    """Run the project trainer on ``job`` (teach, repeat, params, output, run_dir, device).

    Returns the output path. A stop request ends after the current step with the full state in
    ``run_dir/last.pt`` (``sdpr-loc train --resume`` continues it) and the network in ``output``.
    """
    import argparse

    from sdpr_loc.training.checkpoint import save_network
    from sdpr_loc.training.config import Params
    from sdpr_loc.training.distributed import teardown
    from sdpr_loc.training.train_cli import build_datasets
    from sdpr_loc.training.trainer import Trainer

    params = Params.from_flat(job["params"])
    run_dir = Path(job["run_dir"])
    ns = argparse.Namespace(teach=[Path(b) for b in job["teach"]], repeat=[Path(b) for b in job["repeat"]],
                            val_teach=None, val_repeat=None, cache_dir=None, out=run_dir)
    train, val = build_datasets(ns, params)
    device = None if job["device"] == "auto" else job["device"]
    trainer = Trainer(params, train, val, out_dir=run_dir, device=device)

    def on_step(rec: dict) -> None:
        progress({"epoch": rec.get("epoch", 0), "step": rec.get("step", 0), "total_steps": trainer.total_steps,
                  "loss": rec.get("loss", float("nan")), "skipped": rec.get("skipped", 0)})

    try:
        trainer.fit(on_step=on_step, should_stop=should_stop)
    finally:
        teardown()
    meta = {"epoch": trainer.epoch, "global_step": trainer.global_step}
    return str(save_network(job["output"], trainer.network, params.localizer, meta))


class TrainerNode(Node):
    """Fine-tuning as a service; ``train_fn`` replaces the project trainer (tests pass a stand-in)."""

    def __init__(self, train_fn: TrainFn | None = None, **node_kwargs: Any) -> None:
        super().__init__(NAME, **node_kwargs)
        self.p = declare(self, NAME, on_change=self._on_params)
        self.train_defaults = load_defaults(NAME, config_path(TRAIN_FILE))
        self.add_on_set_parameters_callback(self._check_training)
        for name, default in self.train_defaults.items():
            if name in self.p:
                continue
            self.declare_parameter(name, default, ParameterDescriptor(
                description=f"training parameter (config/{TRAIN_FILE}; checked by sdpr_loc.training.config)"))
        self.train_fn = train_fn or project_train
        self._lock = threading.Lock()            # one start at a time
        self._status_lock = threading.Lock()     # status is written by the worker, read by the timer
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.status: dict[str, Any] = {"state": "idle", "message": "waiting for ~/start", "epoch": 0,
                                       "step": 0, "total_steps": 0, "loss": float("nan"), "output": ""}
        self.pub = self.create_publisher(DiagnosticArray, "~/progress", 10)
        self.create_service(Trigger, "~/start", self._on_start)
        self.create_service(Trigger, "~/stop", self._on_stop)
        self.create_timer(float(self.p["progress_period"]), self._publish)
        if self.p["autostart"]:
            ok, why = self.start()
            if not ok:
                raise ValueError(f"autostart: {why}")

    # ----- parameters -----
    def _on_params(self, changes: dict) -> str:
        if self.running:
            return "cannot change trainer parameters while training (call ~/stop first)"
        self.p = {**self.p, **changes}
        return ""

    def _training_values(self, changes: dict | None = None) -> dict:
        flat = {k: self.get_parameter(k).value for k in self.train_defaults if self.has_parameter(k)}
        flat.update({k: v for k, v in (changes or {}).items() if k in self.train_defaults})
        for k in set(self.train_defaults) - set(flat):
            flat[k] = self.train_defaults[k]
        return flat

    def _check_training(self, params) -> SetParametersResult:
        changes = {p.name: p.value for p in params if p.name in self.train_defaults}
        if not changes:
            return SetParametersResult(successful=True)
        if getattr(self, "_thread", None) is not None and self.running:
            return SetParametersResult(successful=False, reason="cannot change training parameters while training")
        from sdpr_loc.training.config import Params

        try:
            Params.from_flat(self._training_values(changes))
        except (ValueError, TypeError) as err:
            return SetParametersResult(successful=False, reason=str(err))
        return SetParametersResult(successful=True)

    # ----- services -----
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def job(self) -> dict:
        """What ``train_fn`` gets; ValueError when the parameters cannot make a run."""
        teach = [b for b in self.p["teach_bags"] if b]
        repeat = [b for b in self.p["repeat_bags"] if b]
        if not teach:
            raise ValueError("no teach_bags set")
        if len(teach) != len(repeat):
            raise ValueError(f"need one repeat bag per teach bag, got {len(teach)} and {len(repeat)}")
        missing = [b for b in teach + repeat if not Path(b).exists()]
        if missing:
            raise ValueError(f"bags not found: {missing}")
        params = self._training_values()
        if self.p["base_model"]:
            if not Path(self.p["base_model"]).is_file():
                raise ValueError(f"base_model {self.p['base_model']!r} does not exist")
            params["init_from"] = self.p["base_model"]
        params["progress"] = False
        if not self.p["output"]:
            raise ValueError("output is empty")
        return {"teach": teach, "repeat": repeat, "params": params, "output": self.p["output"],
                "run_dir": self.p["run_dir"], "device": self.p["device"]}

    def start(self) -> tuple[bool, str]:
        with self._lock:
            if self.running:
                return False, "already training"
            try:
                job = self.job()
            except ValueError as err:
                self._set(state="failed", message=str(err))
                return False, str(err)
            self._stop.clear()
            self._set(state="running", message=f"training on {len(job['teach'])} bag pair(s)", step=0,
                      epoch=0, output="")
            self._thread = threading.Thread(target=self._train, args=(job,), name="trainer", daemon=True)
            self._thread.start()
            return True, "started"

    def _on_start(self, request, response):
        response.success, response.message = self.start()
        return response

    def _on_stop(self, request, response):
        if not self.running:
            response.success, response.message = False, "not training"
            return response
        self._stop.set()
        self._set(state="stopping", message="stopping after the current step")
        response.success, response.message = True, "stopping after the current step"
        return response

    # ----- worker -----
    def _train(self, job: dict) -> None:
        t0 = time.monotonic()
        try:
            out = self.train_fn(job, lambda rec: self._set(**rec), self._stop.is_set)
            stopped = self._stop.is_set()
            self._set(state="stopped" if stopped else "done", output=str(out),
                      message=f"{'stopped' if stopped else 'finished'} after {time.monotonic() - t0:.0f} s; "
                              f"network in {out}")
        except Exception as err:  # noqa: BLE001 - reported on ~/progress, the node lives on
            self._set(state="failed", message=f"{type(err).__name__}: {err}")
            self.get_logger().error(f"training failed: {type(err).__name__}: {err}")

    def _set(self, **kw: Any) -> None:
        with self._status_lock:
            self.status.update(kw)

    def _publish(self) -> None:
        with self._status_lock:
            s = dict(self.status)
        level = {"failed": 2, "stopping": 1}.get(s["state"], 0)
        values = {k: v for k, v in s.items() if k != "message"}
        self.pub.publish(DiagnosticArray(
            header=convert.header(self.get_clock().now().nanoseconds, ""),
            status=[convert.diagnostic(level, f"sdpr_loc: {self.get_name()}", f"{s['state']}: {s['message']}",
                                       values, hardware_id=self.get_name())]))

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60.0)


def main(args: list[str] | None = None) -> int:
    return run(TrainerNode, args)


if __name__ == "__main__":
    sys.exit(main())
