"""Training the ATSS + DyHead detector on a COCO-format dataset.

    python -m dyhead.train --preset demo_cpu --data data/demo --out runs/demo
    torchrun --nproc_per_node 8 -m dyhead.train --preset coco_r50_1x --data /datasets/coco --out runs/r50

The recipe is the official one (microsoft/DynamicHead `dyhead_r50_atss_fpn_1x.yaml`, detectron2
solver defaults): SGD with momentum 0.9 and weight decay 1e-4, linear warm-up, learning rate x0.1 at
67% and 89% of training (60k and 80k of 90k iterations in the 1x schedule), horizontal flips, ATSS
losses (`dyhead.losses`). With `--time-budget MINUTES` the schedule runs on elapsed time instead of
iterations: progress = elapsed / budget, so the two decays happen at 67% and 89% of the budget and
training stops when it is spent, whatever the machine's speed.

Devices: CUDA with automatic mixed precision when present (float16 autocast + gradient scaling);
several GPUs through `torchrun` (DistributedDataParallel, `DistributedSampler`, process group
initialised from torchrun's environment variables, rank 0 logs and writes checkpoints); the CPU
otherwise (`--threads` sets torch's intra-op threads).

Data: `dyhead.data.loader` — a `DataLoader` whose item is one iteration's batch, decoded, resized,
flipped and collated in `--workers` processes (default: 4 on CUDA, none on the CPU); the preset's
in-memory image cache is kept for small datasets.

Initialisation (`--init FILE`, `dyhead.weights.init`): an ImageNet backbone (torchvision ResNet state
dict, detectron2's MSRA ``R-50.pkl``, the Swin release's weights; the backbone becomes the file's) or
any DyHead detector checkpoint (its architecture is kept; with another class list the classification
predictor is re-initialised). What was loaded, re-initialised and left out is printed.

Outputs in `--out`:
    model_final.pt, model_last.pt    detector checkpoints (`dyhead.checkpoint` format, config included)
    resume.pt                        optimizer, iteration, elapsed time, RNG states (weights_only-loadable)
    metrics.jsonl                    one JSON object per logged iteration / evaluation
Training is reproducible from (seed, preset): the sample order comes from `DistributedSampler`
seeded per epoch and each batch's flips from a generator seeded by (seed, iteration), the same global
batch for any number of processes and workers, so a run resumed with `--resume` computes exactly the
losses an uninterrupted run would.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional

import torch

from dyhead.data.coco import Batch, CocoDetection, DatasetError
from dyhead.data.loader import TrainBatches, default_workers, train_loader
from dyhead.detector import PRESETS, DetectorConfig, DyHeadDetector, build_detector
from dyhead.device import training_autocast
from dyhead.distributed import join_process_group
from dyhead.losses import GroundTruth, atss_losses

__all__ = ["TrainPreset", "TRAIN_PRESETS", "TrainState", "Trainer", "lr_factor", "build_train_config", "main"]


# ---------------------------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainPreset:
    """A training recipe. The detector's class list is taken from the dataset at run time."""

    detector: DetectorConfig
    #: Iterations (ignored for the schedule when a time budget is given).
    max_iter: int
    #: Images per iteration over all processes.
    batch_size: int
    base_lr: float
    momentum: float = 0.9
    weight_decay: float = 1e-4
    #: Linear warm-up from base_lr * warmup_factor over warmup_iters iterations (detectron2 defaults).
    warmup_iters: int = 1000
    warmup_factor: float = 0.001
    #: LR x gamma at these fractions of training: 60k/90k and 80k/90k in the 1x schedule.
    steps: tuple[float, ...] = (2 / 3, 8 / 9)
    gamma: float = 0.1
    #: Training resize (shortest edge, capped longest edge).
    min_size: int = 800
    max_size: int = 1333
    flip_prob: float = 0.5
    #: Gradient-norm clipping (0 = off). The official recipe does not clip.
    clip_grad_norm: float = 0.0
    checkpoint_period: int = 5000
    log_period: int = 20
    #: Keep decoded, resized training images in memory (worth it for small datasets on few cores).
    cache_images: bool = False


#: The demo detector: small from-scratch backbone, FPN and DyHead at 32 channels, 6 DyHead blocks,
#: trained and evaluated at the demo data's native size (shorter side 320, longer side <= 384).
DEMO_DETECTOR: DetectorConfig = PRESETS["demo"]

TRAIN_PRESETS: dict[str, TrainPreset] = {
    # The paper's ResNet-50 COCO 1x schedule (DynamicHead configs/dyhead_r50_atss_fpn_1x.yaml):
    # 90k iterations at 16 images, LR 0.01, steps at 60k and 80k, 800 px shorter side.
    "coco_r50_1x": TrainPreset(
        detector=PRESETS["atss_r50_dyhead6"],
        max_iter=90_000,
        batch_size=16,
        base_lr=0.01,
        warmup_iters=1000,
        warmup_factor=0.001,
        min_size=800,
        max_size=1333,
        checkpoint_period=5000,
        log_period=20,
    ),
    # The bundled demo model: from scratch on a 2-core CPU with the generated demo shapes.
    "demo_cpu": TrainPreset(
        detector=DEMO_DETECTOR,
        max_iter=3000,
        batch_size=8,
        # Twice the official 0.01 (which is for batch 16): a from-scratch model on a short schedule
        # learns faster at the higher rate; warm-up and gradient clipping keep it stable.
        base_lr=0.02,
        warmup_iters=150,
        warmup_factor=0.01,
        min_size=320,
        max_size=384,
        clip_grad_norm=10.0,
        checkpoint_period=100,
        log_period=10,
        cache_images=True,
    ),
}
# The retrained ablation grids on the demo data (`python -m analysis retrain`): the demo recipe cut to
# 500 iterations (a 6-block, all-attention run is about 10 minutes on one CPU thread), warm-up 100.
TRAIN_PRESETS["demo_retrain"] = replace(TRAIN_PRESETS["demo_cpu"], max_iter=500, warmup_iters=100,
                                        checkpoint_period=50)


def lr_factor(preset: TrainPreset, iteration: int, progress: float) -> float:
    """LR multiplier at `iteration` (for warm-up) and training `progress` in [0, 1] (for the steps)."""
    factor = preset.gamma ** sum(progress >= s for s in preset.steps)
    if iteration < preset.warmup_iters:
        alpha = iteration / preset.warmup_iters
        factor *= preset.warmup_factor * (1 - alpha) + alpha
    return factor


def build_train_config(preset: TrainPreset, dataset: CocoDetection, *, no_scale_attention: bool = False,
                       no_spatial_attention: bool = False, no_task_attention: bool = False) -> DetectorConfig:
    """The preset's detector with the dataset's classes and the build-time ablations applied."""
    tower = replace(
        preset.detector.tower,
        use_scale_attention=preset.detector.tower.use_scale_attention and not no_scale_attention,
        use_spatial_attention=preset.detector.tower.use_spatial_attention and not no_spatial_attention,
        use_task_attention=preset.detector.tower.use_task_attention and not no_task_attention,
    )
    return replace(
        preset.detector,
        tower=tower,
        num_classes=dataset.num_classes,
        class_names=dataset.class_names,
        category_ids=dataset.category_ids,
        min_size=preset.min_size,
        max_size=preset.max_size,
    )


# ---------------------------------------------------------------------------------------------
# The training loop
# ---------------------------------------------------------------------------------------------


@dataclass
class TrainState:
    iteration: int = 0
    #: Seconds of training so far (restored on resume, so a time budget spans interruptions).
    elapsed: float = 0.0


class Trainer:
    """Owns model, optimizer, data order and checkpoints of one run (see the module docstring)."""

    def __init__(self, preset: TrainPreset, data_root: str | Path, out_dir: str | Path, *, split: str = "train",
                 seed: int = 0, device: str = "auto", time_budget_s: Optional[float] = None,
                 max_iter: Optional[int] = None, no_scale_attention: bool = False,
                 no_spatial_attention: bool = False, no_task_attention: bool = False,
                 eval_period: int = 0, eval_images: int = 100, eval_split: str = "val",
                 progress: bool = True, amp: bool = True, init: Optional[str | Path] = None,
                 workers: Optional[int] = None) -> None:
        self.dist, self.device = join_process_group(device)
        self.preset = preset if max_iter is None else replace(preset, max_iter=max_iter)
        self.seed = seed
        self.time_budget_s = time_budget_s
        self.out_dir = Path(out_dir)
        self.data_root = Path(data_root)
        self.eval_period = eval_period
        self.eval_images = eval_images
        self.eval_split = eval_split
        self.progress = progress and self.dist.is_main
        self.dataset = CocoDetection(data_root, split, min_size=self.preset.min_size,
                                     max_size=self.preset.max_size, cache=self.preset.cache_images,
                                     skip_empty=True)
        if len(self.dataset) == 0:
            raise DatasetError(f"{self.dataset.paths.annotation_file}: no image with a non-crowd box to train on")
        self.config = build_train_config(self.preset, self.dataset, no_scale_attention=no_scale_attention,
                                         no_spatial_attention=no_spatial_attention,
                                         no_task_attention=no_task_attention)
        self.init_path = None if init is None else str(init)
        self.init_report = None
        source = None
        if init is not None:
            from dyhead.weights.init import init_config, read_init_source

            source = read_init_source(init)
            self.config = init_config(source, self.config)
        kind = getattr(self.config, "kind", "atss")
        if kind != "atss":
            raise ValueError(
                f"training a {kind} detector is not supported: the trainer implements the ATSS losses and "
                f"assignment only ({init} can still be evaluated and inspected: dyhead.predict, "
                "dyhead.evaluate, the app)")
        torch.manual_seed(seed)
        self.model: DyHeadDetector = build_detector(self.config)
        if source is not None:
            from dyhead.weights.init import initialise

            self.init_report = initialise(self.model, source)
            if self.dist.is_main:
                print(self.init_report.summary(), file=sys.stderr, flush=True)
        self.model.to(self.device).train()
        self.ddp_model = self.model
        if self.dist.world_size > 1:
            self.ddp_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=self.preset.base_lr,
                                         momentum=self.preset.momentum, weight_decay=self.preset.weight_decay)
        self.use_amp = amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        bb = self.config.backbone
        self.batches = TrainBatches(self.dataset, batch_size=self.preset.batch_size, seed=seed, rank=self.dist.rank,
                                    world_size=self.dist.world_size, flip_prob=self.preset.flip_prob,
                                    pixel_format=bb.pixel_format, pixel_mean=bb.pixel_mean, pixel_std=bb.pixel_std,
                                    size_divisibility=self.config.size_divisibility)
        self.local_batch = self.batches.local_batch
        self.workers = default_workers(self.device) if workers is None else workers
        self.state = TrainState()
        self.history: list[dict] = []

    # -- data order -----------------------------------------------------------------------------

    def _batch(self, iteration: int) -> Batch:
        """This process's batch of `iteration`, loaded here (the loop reads it from `loader`)."""
        batch, skipped = self.batches[iteration]
        self._note_skipped(skipped)
        return batch

    def _note_skipped(self, skipped) -> None:
        for index, reason in skipped:  # workers' datasets are copies: record their skips here
            self.dataset.note_skipped(index, reason)

    def loader(self, stop: Optional[int] = None):
        """The batches from the current iteration on (to `stop`, or to the end of the schedule)."""
        if stop is None and not self.time_budget_s:
            stop = self.preset.max_iter
        return train_loader(self.batches, self.state.iteration, stop, self.workers,
                            pin_memory=self.device.type == "cuda")

    # -- schedule --------------------------------------------------------------------------------

    def progress_fraction(self) -> float:
        if self.time_budget_s:
            return min(1.0, self.state.elapsed / self.time_budget_s)
        return min(1.0, self.state.iteration / self.preset.max_iter)

    def finished(self) -> bool:
        if self.time_budget_s:
            done = self.state.elapsed >= self.time_budget_s
            if self.dist.world_size > 1:  # every process must stop at the same iteration
                flag = torch.tensor(float(done), device=self.device)
                torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
                done = bool(flag.item())
            return done
        return self.state.iteration >= self.preset.max_iter

    def current_lr(self) -> float:
        return self.preset.base_lr * lr_factor(self.preset, self.state.iteration, self.progress_fraction())

    # -- one step --------------------------------------------------------------------------------

    def step(self, batch: Optional[Batch] = None) -> dict[str, float]:
        """Run one iteration on `batch` (default: load this iteration's here); returns its losses
        and learning rate. With several processes the losses are their mean over processes, which is
        the loss of the global batch (the normalisers are averaged over processes, `dyhead.losses`)."""
        lr = self.current_lr()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if batch is None:
            batch = self._batch(self.state.iteration)
        images = batch.images.to(self.device, non_blocking=True)
        gts = [GroundTruth(b.to(self.device), l.to(self.device)) for b, l in zip(batch.boxes, batch.labels)]
        ctx = training_autocast(self.device, self.use_amp)
        with ctx:
            outputs = self.ddp_model(images)
        losses = atss_losses(self.model.anchors(images), gts, outputs.cls_logits, outputs.bbox_deltas,
                             outputs.centerness, self.model.box_coder)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at iteration {self.state.iteration}: {losses}")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.preset.clip_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.preset.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.state.iteration += 1
        values = torch.stack([v.detach().float() for v in losses.values()] + [loss.detach().float()])
        if self.dist.world_size > 1:
            torch.distributed.all_reduce(values)
            values /= self.dist.world_size
        record = dict(zip(list(losses) + ["loss"], values.tolist()))
        record["lr"] = lr
        return record

    # -- checkpoints -----------------------------------------------------------------------------

    def save(self, final: bool = False) -> None:
        if not self.dist.is_main:
            return
        from dyhead.checkpoint import save_checkpoint

        self.out_dir.mkdir(parents=True, exist_ok=True)
        meta = {"iteration": self.state.iteration, "elapsed_s": round(self.state.elapsed, 1),
                "preset": self.preset_name, "seed": self.seed, "data": str(self.data_root), "init": self.init_path}
        save_checkpoint(self.out_dir / ("model_final.pt" if final else "model_last.pt"), self.model, extra_meta=meta)
        resume = {
            "format": "dyhead-train-resume-v1",
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "iteration": self.state.iteration,
            "elapsed": self.state.elapsed,
            "seed": self.seed,
            "config": json.dumps(self.config.to_dict()),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state() if self.device.type == "cuda" else torch.empty(0, dtype=torch.uint8),
        }
        tmp = self.out_dir / "resume.pt.tmp"
        torch.save(resume, tmp)
        os.replace(tmp, self.out_dir / "resume.pt")  # never leave a half-written resume file

    def _barrier(self) -> None:
        """Every process waits for rank 0's checkpoint (a resume in another process reads it next)."""
        if self.dist.world_size > 1:
            torch.distributed.barrier()

    def load_resume(self, path: str | Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"resume file {path} not found")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("format") != "dyhead-train-resume-v1":
            raise ValueError(f"{path} is not a dyhead training resume file")
        saved = json.loads(state["config"])
        if saved != self.config.to_dict():
            raise ValueError(f"{path} was written for another model configuration:\n{saved}\nnot\n{self.config.to_dict()}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.state = TrainState(int(state["iteration"]), float(state["elapsed"]))
        torch.set_rng_state(state["torch_rng"])
        if self.device.type == "cuda" and state["cuda_rng"].numel():
            torch.cuda.set_rng_state(state["cuda_rng"])

    # -- evaluation ------------------------------------------------------------------------------

    def evaluate(self) -> Optional[dict]:
        if not self.dist.is_main:
            return None
        from dyhead.evaluate import evaluate_detector

        self.model.eval()
        try:
            result = evaluate_detector(self.model, self.data_root, self.eval_split,
                                       max_images=self.eval_images, progress=False)
        finally:
            self.model.train()
        return result

    # -- the loop --------------------------------------------------------------------------------

    preset_name: str = "custom"

    def _log(self, record: dict) -> None:
        if not self.dist.is_main:
            return
        self.history.append(record)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def train(self, stop_at: Optional[int] = None) -> list[dict]:
        """Train until the schedule ends (or `stop_at` iterations, for tests); returns logged records."""
        from .progress import progress_bar

        total = None if self.time_budget_s else self.preset.max_iter
        bar = progress_bar(total, initial=self.state.iteration, enabled=self.progress,
                           desc="train", unit="it")
        running: dict[str, float] = {}
        batches = iter(self.loader(stop_at))
        while not self.finished() and (stop_at is None or self.state.iteration < stop_at):
            start = time.perf_counter()
            batch, skipped = next(batches)
            self._note_skipped(skipped)
            record = self.step(batch)
            self.state.elapsed += time.perf_counter() - start
            start = time.perf_counter()
            for k, v in record.items():
                running[k] = v if k not in running else 0.9 * running[k] + 0.1 * v
            it = self.state.iteration
            if self.time_budget_s and self.state.elapsed > 0:
                # Estimated total iterations, so that the progress ETA follows the time budget.
                bar.total = max(it, int(it / max(self.progress_fraction(), 1e-9)))
            bar.update(1)
            bar.set_postfix(loss=f"{running['loss']:.3f}", lr=f"{record['lr']:.2e}")
            if it % self.preset.log_period == 0 or it == 1:
                self._log({"iteration": it, "elapsed_s": round(self.state.elapsed, 2),
                           **{k: round(v, 5) for k, v in record.items()}})
            if it % self.preset.checkpoint_period == 0:
                self.save()
                self._barrier()
            if self.eval_period and it % self.eval_period == 0:
                result = self.evaluate()
                if result is not None:
                    self._log({"iteration": it, "elapsed_s": round(self.state.elapsed, 2), "eval": {
                        k: result[k] for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "num_images")}})
            # Wall time of the whole iteration, checkpoints and evaluations included, so that a time
            # budget bounds the real duration of the run.
            self.state.elapsed += time.perf_counter() - start
        bar.close()
        del batches  # stops the loader's workers
        if stop_at is None or self.finished():
            self.save(final=True)
            self._barrier()
        if self.dataset.skipped and self.dist.is_main:
            print(f"skipped {len(self.dataset.skipped)} unreadable training image(s):", file=sys.stderr)
            for path, reason in self.dataset.skipped:
                print(f"  {path}: {reason}", file=sys.stderr)
        return self.history


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="Train ATSS + DyHead on a COCO-format dataset.")
    parser.add_argument("--preset", choices=sorted(TRAIN_PRESETS), default="demo_cpu")
    parser.add_argument("--data", required=True, help="dataset root (ROOT/train + ROOT/annotations/instances_train.json, or train2017)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--out", required=True, help="output folder for checkpoints and metrics.jsonl")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--max-iter", type=int, default=None, help="override the preset's iterations")
    parser.add_argument("--batch-size", type=int, default=None, help="override the preset's batch size")
    parser.add_argument("--lr", type=float, default=None, help="override the preset's base learning rate")
    parser.add_argument("--time-budget", type=float, default=None, metavar="MINUTES",
                        help="run the schedule on elapsed time: LR steps at 67%% and 89%% of it, stop when spent")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/resume.pt")
    parser.add_argument("--no-scale-attention", action="store_true", help="build the tower without scale attention")
    parser.add_argument("--no-spatial-attention", action="store_true", help="... without spatial attention")
    parser.add_argument("--no-task-attention", action="store_true", help="... without task attention")
    parser.add_argument("--eval-period", type=int, default=0, help="evaluate on the val split every N iterations (0 = never)")
    parser.add_argument("--eval-images", type=int, default=100, help="val images per periodic evaluation")
    parser.add_argument("--checkpoint-period", type=int, default=None)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    parser.add_argument("--init", default=None, metavar="FILE",
                        help="start from weights: a torchvision ResNet state dict, detectron2's R-50.pkl, the Swin "
                             "release's ImageNet weights, or a DyHead detector checkpoint (classifier re-initialised "
                             "when its classes differ from the dataset's)")
    parser.add_argument("--workers", type=int, default=None,
                        help="data-loader worker processes (default: 4 on CUDA, 0 on the CPU)")
    parser.add_argument("--min-size", type=int, default=None, help="override the preset's training shorter side")
    parser.add_argument("--max-size", type=int, default=None, help="override the preset's training longer-side cap")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    preset = TRAIN_PRESETS[args.preset]
    changes = {}
    if args.batch_size:
        changes["batch_size"] = args.batch_size
    if args.lr:
        changes["base_lr"] = args.lr
    if args.checkpoint_period:
        changes["checkpoint_period"] = args.checkpoint_period
    if args.min_size:
        changes["min_size"] = args.min_size
    if args.max_size:
        changes["max_size"] = args.max_size
    preset = replace(preset, **changes)
    trainer = Trainer(
        preset, args.data, args.out, split=args.split, seed=args.seed, device=args.device,
        time_budget_s=args.time_budget * 60 if args.time_budget else None, max_iter=args.max_iter,
        no_scale_attention=args.no_scale_attention, no_spatial_attention=args.no_spatial_attention,
        no_task_attention=args.no_task_attention, eval_period=args.eval_period, eval_images=args.eval_images,
        progress=not args.no_progress, amp=not args.no_amp, init=args.init, workers=args.workers,
    )
    trainer.preset_name = args.preset
    if args.resume:
        trainer.load_resume(Path(args.out) / "resume.pt")
    if trainer.dist.is_main:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "command.json").write_text(json.dumps({
            "argv": sys.argv, "preset": args.preset, "train_preset": _preset_dict(preset),
            "detector": trainer.config.to_dict(), "device": str(trainer.device),
            "world_size": trainer.dist.world_size, "threads": torch.get_num_threads(), "workers": trainer.workers,
            "init": args.init}, indent=2))
    trainer.train()
    if trainer.dist.world_size > 1:
        torch.distributed.destroy_process_group()


def _preset_dict(preset: TrainPreset) -> dict:
    d = {k: v for k, v in asdict(preset).items() if k != "detector"}
    d["steps"] = list(preset.steps)
    return d


def cli(argv: Optional[list[str]] = None) -> int:
    """The command line: `main`, with a missing or malformed dataset, an unusable --init file or an
    unsupported setting reported as one line naming the problem (exit status 2) instead of a traceback."""
    from dyhead.weights import CheckpointError

    try:
        main(argv)
    except (DatasetError, CheckpointError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
