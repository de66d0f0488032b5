"""One optimiser step of the network: the model, its optimizer and loss, and the fastest way this device
runs them. The training loop and the benchmark both train through `TrainingStep`, so the step the
benchmark times is the step a run takes.

On CUDA the whole step (forward, loss, backward, update) is captured once as a CUDA graph and replayed;
`torch.compile` is the alternative when asked for; eager PyTorch is what both fall back to when they fail
on this machine (the same math: the benchmark checks that the graph makes the eager updates).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from cifar_app.config import TrainConfig
from cifar_app.device import autocast, is_out_of_memory, prefers_channels_last, use_bf16
from cifar_app.model.network import DynamicConvNet, build_model

log = logging.getLogger(__name__)


def make_optimizer(config: TrainConfig, model: nn.Module, tensor_lr: bool = False) -> torch.optim.Optimizer:
    """The configured optimizer; `tensor_lr` keeps the learning rate in a device tensor, so that a captured
    CUDA graph reads the scheduled value at each replay instead of the value at capture."""
    # The coursework decayed every parameter; `decay_all=False` spares BatchNorm scales/shifts and biases.
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim > 1 or config.decay_all]
    no_decay = [p for p in params if p.ndim <= 1 and not config.decay_all]
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


def train_step(
    forward: Callable, optimizer: torch.optim.Optimizer, criterion: nn.Module, x: torch.Tensor, y: torch.Tensor,
    device: torch.device, bf16: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One eager optimiser step; returns the logits and the loss, still on the device (no host sync)."""
    with autocast(device, bf16):
        logits = forward(x)
    loss = criterion(logits.float(), y)  # the loss in fp32, whatever the autocast
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return logits, loss


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
            _restore(model, optimizer, saved_model, saved_state)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.x.copy_(x)
        self.y.copy_(y)
        self.graph.replay()
        return self.logits, self.loss


def _restore(model: nn.Module, optimizer: torch.optim.Optimizer, saved_model: dict, saved_state: dict) -> None:
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


def describe_impls(impls: list[str]) -> str:
    """'persample x5, batched x6' for the blocks' implementations, in order."""
    runs: list[list] = []
    for impl in impls:
        if runs and runs[-1][0] == impl:
            runs[-1][1] += 1
        else:
            runs.append([impl, 1])
    return ", ".join(f"{impl} x{n}" for impl, n in runs)


class TrainingStep:
    """The model a config describes on `device`, its optimizer and loss, and `step(x, y)`.

    `fast=False` gives the coursework's way instead: fp32, K separate convolutions, contiguous NCHW, eager
    (the benchmark's baseline). `on_fallback(message)` hears when the CUDA graph or torch.compile fails on
    this machine and the step continues eagerly.
    """

    def __init__(self, config: TrainConfig, device: torch.device, fast: bool = True,
                 on_fallback: Callable[[str], None] | None = None):
        self.on_fallback = on_fallback
        if not fast:
            config = config.replace(impl="loop", precision="fp32", compile=False, cuda_graphs=False)
        self.config, self.device = config, device
        self.bf16 = use_bf16(device, config.precision)
        self.channels_last = fast and prefers_channels_last(device)
        self.model: DynamicConvNet = build_model(config, device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.graphs = config.cuda_graphs and device.type == "cuda" and not config.compile
        self.optimizer = make_optimizer(config, self.model, tensor_lr=self.graphs)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.forward: Callable = self.model
        if config.compile:
            try:
                self.forward = torch.compile(self.model)
            except Exception as error:  # unsupported platform; most failures only show at the first step
                self._fall_back(f"torch.compile is unavailable here ({error})")
        self.graphed: GraphedStep | None = None

    def describe(self) -> str:
        how = "bf16 autocast" if self.bf16 else "fp32"
        how += ", channels_last" if self.channels_last else ""
        how += ", CUDA graph" if self.graphed is not None else ""
        return how + (", compiled" if self.forward is not self.model else "")

    def set_lr(self, lr: float) -> None:
        set_lr(self.optimizer, lr)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step on (x, y); the logits and the loss stay on the device (no host sync)."""
        if self.graphs and self.graphed is None:
            try:
                self.graphed = GraphedStep(self.model, self.optimizer, self.criterion, x, y, self.device, self.bf16)
            except Exception as error:
                if is_out_of_memory(error):
                    raise
                self.graphs = False
                self._fall_back(f"CUDA graph capture failed on this GPU ({str(error).splitlines()[0]})")
        if self.graphed is not None and x.shape == self.graphed.x.shape:
            return self.graphed(x, y)
        try:
            return train_step(self.forward, self.optimizer, self.criterion, x, y, self.device, self.bf16)
        except Exception as error:
            if self.forward is self.model or is_out_of_memory(error):
                raise
            # torch.compile fails lazily (no compiler, unsupported op): the eager model is the same math
            self._fall_back(f"torch.compile failed on this machine ({str(error).splitlines()[0]})")
            return train_step(self.forward, self.optimizer, self.criterion, x, y, self.device, self.bf16)

    def _fall_back(self, why: str) -> None:
        self.forward = self.model
        log.warning("%s; training eagerly", why)
        if self.on_fallback is not None:
            self.on_fallback(f"{why}; training without it")

    def state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load(self, saved: dict[str, Any], temperature: float = 1.0) -> None:
        """Continue from a checkpoint's model and optimizer state (a run saved on the CPU may go on on a GPU:
        how to step belongs to this process, what to step to belongs to the run)."""
        self.model.load_weights(saved["model"], temperature)
        saved_optimizer = saved["optimizer"]
        for saved_group, group in zip(saved_optimizer["param_groups"], self.optimizer.param_groups):
            saved_group.update({k: group[k] for k in ("capturable", "fused", "foreach") if k in group})
        self.optimizer.load_state_dict(saved_optimizer)
        if self.graphs:  # a run saved by an eager process holds a float learning rate
            for group in self.optimizer.param_groups:
                group["lr"] = torch.as_tensor(group["lr"], dtype=torch.float32, device=self.device)
