"""The training loop, shared by the dashboard's background job and `python -m cifar_app.train`.

`train(config)` runs one training run end to end and reports through a callback:
  StatusEvent  what it is doing before the first batch (loading data, building the model, ...);
  BatchEvent   a few times a second: batch i of n, running loss, images/s, elapsed and ETA;
  EpochEvent   once per epoch: the coursework's three lines (training loss, training accuracy, test
               accuracy), validation accuracy when a split is held out, learning rate and seconds;
  ResumeEvent  once, when `resume` continues a saved run: the epochs it had already done.
A `threading.Event` stops it within one batch, keeping what was learned in the run's checkpoint. A loss
that turns NaN/inf ends the run with a reason; so does running out of memory. Every run writes its folder
in the run store (runs.py) as it goes, and `resume` continues a run from its last checkpoint.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import socket
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torchvision
from torch import nn

from cifar_app.config import RUNTIME_FIELDS, ConfigError, TrainConfig, preset
from cifar_app.data import Cifar10, TensorLoader, load_cifar10, split_train_val
from cifar_app.device import autocast, describe_device, is_out_of_memory, pick_device, use_bf16
from cifar_app.evaluate import accuracy, predict_logits
from cifar_app.lineage import RESUME_RUNTIME_FIELDS, fork_problems, fork_warnings
from cifar_app.model import build_model, summarize
from cifar_app.runs import HEARTBEAT_S, Run, RunStore

log = logging.getLogger(__name__)
REPORT_INTERVAL_S = 0.25  # how often the loss is read back from the device (one host sync each time)


@dataclass
class StatusEvent:
    message: str
    kind: str = "status"


@dataclass
class BatchEvent:
    epoch: int
    epochs: int
    batch: int  # batches done in this epoch, 1..batches
    batches: int
    loss: float  # mean training loss over the batches since the previous BatchEvent
    images_per_s: float
    epoch_elapsed_s: float
    elapsed_s: float  # whole run, this process
    epoch_eta_s: float
    run_eta_s: float
    kind: str = "batch"


@dataclass
class EpochEvent:
    epoch: int
    epochs: int
    train_loss: float
    train_acc: float
    val_acc: float | None
    test_acc: float | None
    lr: float
    seconds: float
    images_per_s: float
    kind: str = "epoch"

    def row(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in ("kind", "epochs")}

    def lines(self) -> list[str]:
        """The coursework's per-epoch lines."""
        head = f"epoch {self.epoch}/{self.epochs}"
        lines = [f"{head}  training loss {self.train_loss:.4f}", f"{head}  training accuracy {self.train_acc:.2f}%"]
        if self.val_acc is not None:
            lines.append(f"{head}  validation accuracy {self.val_acc:.2f}%")
        tail = f"   ({self.seconds:.1f} s, {self.images_per_s:,.0f} images/s, lr {self.lr:.2e})"
        test = f"{self.test_acc:.2f}%" if self.test_acc is not None else "not evaluated this epoch"
        lines.append(f"{head}  test accuracy {test}{tail}")
        return lines


@dataclass
class ResumeEvent:
    """A resumed run's saved epochs, sent once before its first batch, so a live view can draw the whole run."""

    run_id: str
    epoch: int  # epochs already done
    batch: int  # batches already done of the next epoch (a run stopped mid-epoch)
    history: list[EpochEvent]
    kind: str = "resume"


Event = StatusEvent | BatchEvent | EpochEvent | ResumeEvent


@dataclass
class RunResult:
    status: str  # finished, stopped or failed
    reason: str
    history: list[EpochEvent] = field(default_factory=list)
    run: Run | None = None
    seconds: float = 0.0

    @property
    def selection(self) -> str:
        return selection(self.history)

    @property
    def best(self) -> EpochEvent | None:
        return best_epoch(self.history)

    @property
    def final(self) -> EpochEvent | None:
        return final_epoch(self.history)

    def summary_lines(self) -> list[str]:
        best, final = self.best, self.final
        lines = [f"run {self.status}" + (f": {self.reason}" if self.reason else "")]
        if best is not None and self.selection == "validation":
            lines.append(
                f"best validation accuracy {best.val_acc:.2f}% at epoch {best.epoch}; "
                f"test accuracy at that epoch {best.test_acc:.2f}%"
            )
        elif best is not None:
            lines.append(
                f"best test accuracy {best.test_acc:.2f}% at epoch {best.epoch} (picked by test accuracy, as the "
                "coursework did; this flatters the result: hold out a validation split with --val-size)"
            )
        if final is not None:
            lines.append(f"final test accuracy {final.test_acc:.2f}% at epoch {final.epoch}")
        if self.history:
            last = self.history[-1]
            lines.append(f"final training accuracy {last.train_acc:.2f}%, training loss {last.train_loss:.4f}")
        lines.append(f"time {self.seconds:.1f} s" + (f"; saved in {self.run.path}" if self.run else ""))
        return lines


class TrainingDiverged(RuntimeError):
    """The loss stopped being a finite number."""


def selection(history: list[EpochEvent]) -> str:
    """What picks the best epoch: 'validation' when a split was held out, else 'test' (which flatters)."""
    return "validation" if any(e.val_acc is not None for e in history) else "test"


def best_epoch(history: list[EpochEvent]) -> EpochEvent | None:
    """The best epoch by validation accuracy when one was measured, else by test accuracy; ties: earliest."""
    key = "val_acc" if selection(history) == "validation" else "test_acc"
    scored = [e for e in history if getattr(e, key) is not None and e.test_acc is not None]
    return max(scored, key=lambda e: getattr(e, key)) if scored else None


def final_epoch(history: list[EpochEvent]) -> EpochEvent | None:
    """The last epoch whose test accuracy was measured."""
    tested = [e for e in history if e.test_acc is not None]
    return tested[-1] if tested else None


def lr_factor(schedule: str, step: int, total: int, warmup: int) -> float:
    """Multiplier of the base learning rate at optimiser step `step` of `total`.

    cosine: linear warm-up over `warmup` steps, then half a cosine to zero.
    onecycle: a triangle, rising linearly from 1/25 over `warmup` steps, then falling linearly to zero.
    """
    if schedule == "none":
        return 1.0
    if schedule == "onecycle":
        if step < warmup:
            return 0.04 + 0.96 * step / warmup
        return max(0.0, (total - step) / max(1, total - warmup))
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def attention_temperature(config: TrainConfig, epoch: int) -> float:
    """Softmax temperature of the block attention in (0-based) `epoch`: from attn_temperature down to 1."""
    if config.attn_anneal_epochs <= 0:
        return config.attn_temperature
    progress = min(1.0, epoch / config.attn_anneal_epochs)
    return config.attn_temperature + (1.0 - config.attn_temperature) * progress


def make_optimizer(config: TrainConfig, model: nn.Module, tensor_lr: bool = False) -> torch.optim.Optimizer:
    """The configured optimizer; `tensor_lr` keeps the learning rate in a device tensor, so that a captured
    CUDA graph reads the scheduled value at each replay instead of the value at capture."""
    # The coursework decayed every parameter; `decay_all=False` spares BatchNorm scales/shifts and biases.
    decay = [p for p in model.parameters() if p.ndim > 1 or config.decay_all]
    no_decay = [p for p in model.parameters() if p.ndim <= 1 and not config.decay_all]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # one fused kernel for the whole update on CUDA instead of a few per parameter group
    device = next(model.parameters()).device
    fused = {"fused": True} if device.type == "cuda" else {}
    lr = torch.tensor(config.lr, device=device) if tensor_lr else config.lr
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=config.momentum, nesterov=config.momentum > 0, **fused)
    adam = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    # Adam refuses graph capture unless it keeps its step count on the device (capturable)
    return adam(groups, lr=lr, capturable=tensor_lr, **fused)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


class GraphedStep:
    """The whole training step (forward, loss, backward, optimizer update) captured once as a CUDA graph.

    An eager step of the 11-block network launches some 600 small kernels; on a fast GPU their launch cost,
    not the arithmetic, sets the pace (measured: doubling the batch on an H200 added only a third to the
    step time). Replaying one graph launches them all at once. Same math as `train_step`: the bench checks
    that both make the same updates. Capture needs fixed shapes (training drops the last partial batch),
    a learning rate held in a device tensor (`make_optimizer(tensor_lr=True)`), and warm-up steps, whose
    effect on the weights, BatchNorm statistics and optimizer state is undone before training starts.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, criterion: nn.Module,
                 x: torch.Tensor, y: torch.Tensor, device: torch.device, bf16: bool, warmup: int = 3):
        self.x, self.y = x.clone(), y.clone()
        saved_model = {k: v.detach().clone() for k, v in model.state_dict().items()}
        saved_state = {p: {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in st.items()}
                       for p, st in optimizer.state.items()}
        try:
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side), warnings.catch_warnings():  # allocates grads and optimizer state and
                warnings.simplefilter("ignore")  # runs cuDNN's autotuning; "capturable but not captured" is expected
                for _ in range(warmup):
                    train_step(model, optimizer, criterion, self.x, self.y, device, bf16)
            torch.cuda.current_stream(device).wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            optimizer.zero_grad(set_to_none=True)
            # thread_local: a page predicting on the same GPU from another thread must not break the capture
            with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
                with autocast(device, bf16):
                    logits = model(self.x)
                self.loss = criterion(logits.float(), self.y)
                self.loss.backward()
                optimizer.step()
            self.logits = logits
        finally:  # undo the warm-up, captured or not: the run's first step must start from where it was
            with torch.no_grad():
                model.load_state_dict(saved_model)
                for param, state in optimizer.state.items():
                    for key, value in state.items():
                        if isinstance(value, torch.Tensor):
                            before = saved_state.get(param, {}).get(key)
                            if before is not None:
                                value.copy_(before)
                            else:
                                value.zero_()
            optimizer.zero_grad(set_to_none=False)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.x.copy_(x)
        self.y.copy_(y)
        self.graph.replay()
        return self.logits, self.loss


def train_step(
    forward: Callable, optimizer: torch.optim.Optimizer, criterion: nn.Module, x: torch.Tensor, y: torch.Tensor,
    device: torch.device, bf16: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step; returns the logits and the loss, still on the device (no host sync)."""
    with autocast(device, bf16):
        logits = forward(x)
    loss = criterion(logits.float(), y)  # the loss in fp32, whatever the autocast
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return logits, loss


def describe_impls(impls: list[str]) -> str:
    """'persample x5, batched x6' for the blocks' implementations, in order."""
    runs: list[list] = []
    for impl in impls:
        if runs and runs[-1][0] == impl:
            runs[-1][1] += 1
        else:
            runs.append([impl, 1])
    return ", ".join(f"{impl} x{n}" for impl, n in runs)


def library_versions() -> dict[str, str]:
    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__}


def events_from_rows(rows: list[dict[str, Any]], epochs: int) -> list[EpochEvent]:
    return [
        EpochEvent(epoch=int(r["epoch"]), epochs=epochs, train_loss=r["train_loss"], train_acc=r["train_acc"],
                   val_acc=r["val_acc"], test_acc=r["test_acc"], lr=r["lr"], seconds=r["seconds"],
                   images_per_s=r["images_per_s"])
        for r in rows
    ]


def _compile(model: nn.Module) -> Callable:
    try:
        return torch.compile(model)
    except Exception as error:  # unsupported platform; most failures only show at the first step (see train)
        log.warning("torch.compile unavailable (%s); training eagerly", error)
        return model


def train(
    config: TrainConfig,
    *,
    data: Cifar10 | None = None,
    on_event: Callable[[Event], None] | None = None,
    stop: threading.Event | None = None,
    store: RunStore | None = None,
    resume: Run | None = None,
    fork: tuple[Run, str] | None = None,
    report_interval_s: float = REPORT_INTERVAL_S,
) -> RunResult:
    """Train as `config` says; return how it ended. With `store`, the run is saved as it goes.

    `resume` continues a saved run from its last checkpoint with its own config (only where-and-how fields of
    `config` such as the device apply). `fork=(run, 'best'|'last')` starts a new run from that checkpoint's
    weights with `config`'s hyperparameters, numbering epochs on from the branch point. A BatchEvent goes out
    every `report_interval_s` seconds (each one reads the loss back from the device).
    Raises ConfigError, DeviceError, DataNotFound or DataFormatError before anything is written; every
    failure after that ends in a RunResult with status 'failed' and the reason.
    """
    emit = on_event or (lambda event: None)
    stop = stop or threading.Event()
    checkpoint = None
    if resume is not None:
        config = resume.config().replace(**{k: getattr(config, k) for k in RESUME_RUNTIME_FIELDS})
        checkpoint = resume.load_checkpoint("last")
        if checkpoint["epoch"] >= config.epochs:
            return RunResult("finished", "this run had already finished", events_from_rows(resume.metrics(), config.epochs), resume)
    config.check()
    device = pick_device(config.device)
    bf16 = use_bf16(device, config.precision)
    channels_last = device.type == "cuda"  # helps cuDNN on tensor-core GPUs; measured slower on the CPU
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # training shapes are fixed (drop_last): pick the fastest kernels once

    if data is None:
        emit(StatusEvent(f"Loading CIFAR-10 from {config.data_dir}"))
        data = load_cifar10(config.data_dir, download=config.download)
    train_x, train_y, val_x, val_y = split_train_val(
        data.train_images, data.train_labels, config.val_size, config.seed, config.train_subset
    )
    loader = TensorLoader(
        train_x, train_y, config.batch_size, train=True, augment_crop_flip=config.augment,
        cutout_size=config.cutout, device=device, seed=config.seed, channels_last=channels_last,
    )
    test_x, test_y = data.test_images.to(device), data.test_labels.to(device)
    val_x, val_y = val_x.to(device), val_y.to(device)

    torch.manual_seed(config.seed)
    model = build_model(config, device)
    summary = summarize(model)
    emit(StatusEvent(f"Training on {describe_device(device)}: {summary.describe()}"))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    graphs = config.cuda_graphs and device.type == "cuda" and not config.compile
    optimizer = make_optimizer(config, model, tensor_lr=graphs)
    forward = _compile(model) if config.compile else model
    graphed: GraphedStep | None = None
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

    steps_per_epoch = len(loader)
    total_steps = config.epochs * steps_per_epoch
    warmup_steps = round(config.warmup_epochs * steps_per_epoch)
    start_epoch, start_batch, history = 0, 0, []
    accum = {"loss_sum": 0.0, "correct": 0.0, "seen": 0.0}
    record = {
        "seed": config.seed, "device": describe_device(device), "device_type": device.type,
        "versions": library_versions(), "data_source": data.source, "impl": describe_impls(model.block_impls(device.type)),
        "precision": "bf16 autocast" if bf16 else "fp32", "channels_last": channels_last,
        "params": summary.params, "macs": summary.macs, "train_images": len(train_x), "val_images": len(val_x),
        "command": " ".join(sys.argv) if sys.argv and "cifar_app" in sys.argv[0] else "",
    }
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        saved_optimizer = checkpoint["optimizer"]
        # how to step belongs to this process (a run saved on the CPU may resume on a GPU), what to step to the run
        for saved_group, group in zip(saved_optimizer["param_groups"], optimizer.param_groups):
            saved_group.update({k: group[k] for k in ("capturable", "fused", "foreach") if k in group})
        optimizer.load_state_dict(saved_optimizer)
        if graphs:  # a run saved by an eager process holds a float learning rate
            for group in optimizer.param_groups:
                group["lr"] = torch.as_tensor(group["lr"], dtype=torch.float32, device=device)
        start_epoch, start_batch, accum = checkpoint["epoch"], checkpoint["batch"], checkpoint["accum"]
        rows = [r for r in resume.metrics() if r["epoch"] <= start_epoch]
        resume.write_metrics(rows)  # an epoch logged after the checkpoint was written is trained again
        history = events_from_rows(rows, config.epochs)
        run = resume
        run.update_meta(status="running", reason="", pid=os.getpid(), host=socket.gethostname(), resumed=time.time())
        emit(StatusEvent(f"Resuming {run.name} at epoch {start_epoch + 1}, batch {start_batch + 1}"))
        emit(ResumeEvent(run.id, start_epoch, start_batch, list(history)))
    else:
        if fork is not None:
            parent, which = fork
            problems = fork_problems(parent, which, config)
            if problems:
                raise ConfigError(problems)
            branch = parent.load_checkpoint(which)
            model.load_state_dict(branch["model"])  # fork_problems made sure the shapes fit
            start_epoch = branch["epoch"]
            record.update(parent=parent.id, parent_epoch=start_epoch, parent_checkpoint=which)
        run = store.create(config, record, name=config.name) if store is not None else None
    if start_epoch >= config.epochs:
        if run is not None:  # a resumed run that had already finished: leave it as it was, not 'running'
            run.update_meta(status="finished", reason="", ended=time.time())
        return RunResult("finished", "this run had already finished", history, run)

    started = time.perf_counter()
    last_heartbeat = time.monotonic()
    status, reason = "finished", ""
    epoch = start_epoch

    def checkpoint_state(epoch_done: int, batch_done: int) -> dict[str, Any]:
        return {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch_done,
            "batch": batch_done, "accum": dict(accum), "config": config.to_dict(), "classes": list(data.classes),
            # the attention temperature is not a weight, yet predictions depend on it mid-anneal
            "temperature": model.temperature(),
        }

    try:
        for epoch in range(start_epoch, config.epochs):
            model.set_temperature(attention_temperature(config, epoch))
            model.train()
            epoch_start = time.perf_counter()
            loss_sum = torch.tensor(accum["loss_sum"], device=device)
            correct = torch.tensor(accum["correct"], device=device)
            seen = int(accum["seen"])
            window_loss, window_batches, window_images = torch.zeros((), device=device), 0, 0
            window_start = last_report = time.monotonic()
            first = start_batch if epoch == start_epoch else 0
            done = first
            for i, x, y in loader.batches(epoch, first):
                if stop.is_set():
                    break
                step = epoch * steps_per_epoch + i
                lr = config.lr * lr_factor(config.schedule, step, total_steps, warmup_steps)
                set_lr(optimizer, lr)
                if graphs and graphed is None:
                    try:
                        graphed = GraphedStep(model, optimizer, criterion, x, y, device, bf16)
                    except Exception as error:
                        if is_out_of_memory(error):
                            raise
                        log.warning("CUDA graph capture failed (%s); training eagerly", str(error).splitlines()[0])
                        emit(StatusEvent("CUDA graph capture failed on this GPU; training without it"))
                        graphs = False
                try:
                    if graphed is not None and x.shape == graphed.x.shape:
                        logits, loss = graphed(x, y)
                    else:
                        logits, loss = train_step(forward, optimizer, criterion, x, y, device, bf16)
                except Exception as error:
                    if forward is model or is_out_of_memory(error):
                        raise
                    # torch.compile fails lazily (no compiler, unsupported op): the eager model is the same math
                    log.warning("torch.compile failed (%s); training without it", str(error).splitlines()[0])
                    emit(StatusEvent("torch.compile failed on this machine; training without it"))
                    forward = model
                    logits, loss = train_step(forward, optimizer, criterion, x, y, device, bf16)
                done = i + 1
                batch_loss = loss.detach()
                loss_sum += batch_loss * len(y)
                correct += (logits.argmax(1) == y).sum()
                seen += len(y)
                window_loss += batch_loss
                window_batches += 1
                window_images += len(y)
                now = time.monotonic()
                if now - last_report >= report_interval_s or done == steps_per_epoch:
                    mean_loss = window_loss.item() / window_batches  # the one host sync of the window
                    if not math.isfinite(mean_loss):
                        raise TrainingDiverged(
                            f"the training loss became {mean_loss} at epoch {epoch + 1}, batch {done}: the run "
                            f"diverged (learning rate {lr:.3g}). Lower the learning rate or add warm-up."
                        )
                    now = time.monotonic()
                    epoch_elapsed = time.perf_counter() - epoch_start
                    per_batch = epoch_elapsed / max(1, done - first)
                    epoch_eta = per_batch * (steps_per_epoch - done)
                    emit(BatchEvent(
                        epoch=epoch + 1, epochs=config.epochs, batch=done, batches=steps_per_epoch, loss=mean_loss,
                        images_per_s=window_images / max(now - window_start, 1e-9), epoch_elapsed_s=epoch_elapsed,
                        elapsed_s=time.perf_counter() - started, epoch_eta_s=epoch_eta,
                        run_eta_s=epoch_eta + per_batch * steps_per_epoch * (config.epochs - epoch - 1),
                    ))
                    window_loss.zero_()
                    window_batches = window_images = 0
                    window_start = last_report = now
                    if run is not None and now - last_heartbeat > HEARTBEAT_S:
                        run.update_meta(progress={"epoch": epoch + 1, "batch": done, "batches": steps_per_epoch})
                        last_heartbeat = now
            accum = {"loss_sum": loss_sum.item(), "correct": correct.item(), "seen": float(seen)}
            if stop.is_set() and done < steps_per_epoch:
                status, reason = "stopped", f"stopped by the user at epoch {epoch + 1}, batch {done} of {steps_per_epoch}"
                if run is not None:
                    run.save_checkpoint(checkpoint_state(epoch, done))
                break
            train_seconds = time.perf_counter() - epoch_start
            if not math.isfinite(accum["loss_sum"]):
                raise TrainingDiverged(f"the training loss became {accum['loss_sum']} in epoch {epoch + 1}: the run "
                                       "diverged. Lower the learning rate or add warm-up.")
            event = _end_of_epoch(config, model, epoch, accum, lr, device, bf16, channels_last,
                                  (val_x, val_y), (test_x, test_y), epoch_start, train_seconds)
            history.append(event)
            accum = {"loss_sum": 0.0, "correct": 0.0, "seen": 0.0}
            if run is not None:
                # metrics first: a crash between the two writes retrains that epoch on resume
                run.append_metrics(event.row())
                run.save_checkpoint(checkpoint_state(epoch + 1, 0))
                if best_epoch(history) is event:
                    run.save_checkpoint(checkpoint_state(epoch + 1, 0), "best")
                run.update_meta(progress={"epoch": epoch + 1, "batch": 0, "batches": steps_per_epoch})
                last_heartbeat = time.monotonic()
            emit(event)
            if stop.is_set() and epoch + 1 < config.epochs:
                status, reason = "stopped", f"stopped by the user after epoch {epoch + 1}"
                break
    except TrainingDiverged as error:
        status, reason = "failed", str(error)
    except KeyboardInterrupt:
        status, reason = "stopped", f"interrupted (Ctrl-C) in epoch {epoch + 1}; resume continues from the last epoch"
    except Exception as error:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if is_out_of_memory(error):
            status, reason = "failed", (
                f"out of memory on {describe_device(device)} with batch size {config.batch_size}, width "
                f"{config.width} and K={config.k}: lower the batch size or the width."
            )
        else:
            log.exception("training failed")
            status, reason = "failed", f"{type(error).__name__}: {error}"
    result = RunResult(status, reason, history, run, time.perf_counter() - started)
    if run is not None:
        best, final = result.best, result.final
        run.update_meta(
            status=status, reason=reason, ended=time.time(), seconds=run.meta().get("seconds", 0) + result.seconds,
            best_epoch=best.epoch if best else None, best_test_acc=best.test_acc if best else None,
            best_val_acc=best.val_acc if best else None, final_test_acc=final.test_acc if final else None,
            epochs_done=history[-1].epoch if history else 0, selection=result.selection,
        )
    return result


def _end_of_epoch(
    config: TrainConfig, model: nn.Module, epoch: int, accum: dict[str, float], lr: float, device: torch.device,
    bf16: bool, channels_last: bool, val: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
    epoch_start: float, train_seconds: float,
) -> EpochEvent:
    def acc(images: torch.Tensor, labels: torch.Tensor) -> float:
        logits = predict_logits(model, images, device, bf16=bf16, tta_flip=config.tta_flip, channels_last=channels_last)
        return accuracy(logits, labels)

    last = epoch + 1 == config.epochs
    test_acc = acc(*test) if (epoch + 1) % config.eval_every == 0 or last else None
    val_acc = acc(*val) if len(val[1]) else None
    seen = max(accum["seen"], 1.0)
    return EpochEvent(
        epoch=epoch + 1, epochs=config.epochs, train_loss=accum["loss_sum"] / seen,
        train_acc=100 * accum["correct"] / seen, val_acc=val_acc, test_acc=test_acc, lr=lr,
        seconds=time.perf_counter() - epoch_start, images_per_s=accum["seen"] / max(train_seconds, 1e-9),
    )


# ---------------------------------------------------------------------------------------------------------
# The headless CLI


def build_parser() -> "argparse.ArgumentParser":
    import argparse
    from dataclasses import MISSING, fields

    from cifar_app.config import DEVICES, IMPLS, OPTIMIZERS, PRECISIONS, PRESETS, SCHEDULES

    parser = argparse.ArgumentParser(
        prog="python -m cifar_app.train",
        description="Train the coursework's dynamic-convolution CNN on CIFAR-10 without the dashboard.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="start from a preset (default: seed; with --fork, the parent run's hyperparameters); "
                             "any option below overrides it")
    choices = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES, "device": DEVICES, "impl": IMPLS, "precision": PRECISIONS}
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else f.default_factory()
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": f"{f.metadata['help']} (seed: {default})"}
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        else:
            parser.add_argument(flag, type=type(default), choices=choices.get(f.name), **kwargs)
    parser.add_argument("--runs-dir", default=None, help="where runs are saved (default $CIFAR_RUNS_DIR or ./runs)")
    parser.add_argument("--no-save", action="store_true", help="do not write a run folder")
    parser.add_argument("--resume", metavar="RUN", default=None, help="continue an interrupted or stopped run")
    parser.add_argument("--fork", metavar="RUN[:best|last]", default=None,
                        help="a new run from a saved run's best or last checkpoint (default last): the parent's "
                             "hyperparameters, changed by the options given here")
    parser.add_argument("--quiet", action="store_true", help="no progress line between epochs")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Train from the command line; returns the exit status (0 finished, 1 failed or refused, 130 stopped)."""
    from cifar_app.data import DataFormatError, DataNotFound
    from cifar_app.device import DeviceError

    parser = build_parser()
    args = vars(parser.parse_args(argv))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    options = {k: args.pop(k) for k in list(args) if k in TrainConfig.__dataclass_fields__}
    show_progress = not args["quiet"] and sys.stdout.isatty()
    store = None if args["no_save"] else RunStore(args["runs_dir"])

    def on_event(event: Event) -> None:
        if isinstance(event, StatusEvent):
            print(event.message, flush=True)
        elif isinstance(event, BatchEvent) and show_progress:
            print(f"\repoch {event.epoch}/{event.epochs}  batch {event.batch}/{event.batches}  loss {event.loss:.4f}  "
                  f"{event.images_per_s:,.0f} images/s  ETA {event.run_eta_s:,.0f} s   ", end="", flush=True)
        elif isinstance(event, EpochEvent):
            if show_progress:
                print("\r" + " " * 100 + "\r", end="")
            print("\n".join(event.lines()), flush=True)

    try:
        config = preset(args["preset"] or "seed", **options)
        resume = fork = None
        if args["resume"] or args["fork"]:
            store = store or RunStore(args["runs_dir"])
        if args["resume"]:
            resume = store.get(args["resume"])
            saved = resume.config()
            changed = sorted(k for k, v in options.items() if k not in RUNTIME_FIELDS and getattr(saved, k) != v)
            if changed:
                print(f"error: --resume continues {resume.name} with its own hyperparameters; "
                      f"{', '.join('--' + k.replace('_', '-') for k in changed)} cannot change. "
                      f"To train on with other settings, use --fork {resume.id}.")
                return 1
            config = resume.config().replace(**options)
            problem = resume.resume_problem()
            if problem:
                print(f"error: {resume.name} cannot be resumed: {problem}")
                return 1
        if args["fork"]:
            run_id, _, which = args["fork"].partition(":")
            fork = (store.get(run_id), which or "last")
            if args["preset"] is None:  # the parent's recipe, changed where the command line says
                config = fork[0].config().replace(**{"name": f"{fork[0].name}-fork", **options})
            for warning in fork_warnings(fork[0], config):
                print(f"warning: {warning}")
        result = train(config, on_event=on_event, store=store, resume=resume, fork=fork)
    except (ConfigError, DeviceError, DataNotFound, DataFormatError, KeyError, FileNotFoundError) as error:
        print(f"error: {error.args[0] if isinstance(error, KeyError) else error}")
        return 1
    print("\n".join(result.summary_lines()))
    return {"finished": 0, "stopped": 130}.get(result.status, 1)


if __name__ == "__main__":
    raise SystemExit(main())
