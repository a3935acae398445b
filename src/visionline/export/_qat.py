"""Quantisation-aware fine-tuning: when post-training INT8 fails its gate, teach the weights INT8.

The model is fine-tuned with fake quantisation that mimics ONNX Runtime's static QDQ quantisation
(`_quantize`): symmetric INT8 weights per output channel (max-abs scale) and asymmetric UINT8
inputs per tensor for every convolution and linear layer (ranges from a running min/max that
includes 0). Gradients pass the rounding straight through. BatchNorm keeps its running statistics
(eval mode): a per-channel weight scale commutes with folding BatchNorm into the convolution, so
the grid the weights learn here is the grid ONNX Runtime applies to the folded weights. The fake
quantisers are removed afterwards and the float model, now at home on the INT8 grid, goes through
the same `search_int8` and paired gate as any other model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Self

from visionline.errors import ConfigError
from visionline.export._data import SplitPixels

__all__ = ["FakeQuantized", "QatReport", "qat_finetune"]


@dataclass
class QatReport:
    """What the quantisation-aware pass did (recorded in the bundle beside the gate)."""

    epochs: int
    lr: float
    images: int
    quantized_layers: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _weight_fake_quant() -> Any:
    import torch
    from torch import nn

    class WeightFakeQuant(nn.Module):
        """Parametrisation: the weight as ORT's per-channel symmetric INT8 will store it."""

        def forward(self, weight: torch.Tensor) -> torch.Tensor:
            dims = tuple(range(1, weight.dim()))
            scale = weight.detach().abs().amax(dim=dims).clamp_min(1e-8) / 127.0
            zero = torch.zeros(scale.numel(), dtype=torch.int32, device=weight.device)
            return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, -127, 127)

    return WeightFakeQuant()


class _InputFakeQuant:
    """Forward pre-hook: the layer's input as ORT's per-tensor UINT8 activation will see it."""

    def __init__(self, momentum: float = 0.1) -> None:
        self.momentum = momentum
        self.low: float | None = None
        self.high: float | None = None

    def __call__(self, module: Any, args: tuple) -> tuple:
        import torch

        x = args[0]
        if module.training or self.low is None:
            low = min(float(x.detach().min()), 0.0)
            high = max(float(x.detach().max()), 0.0)
            if self.low is None:
                self.low, self.high = low, high
            else:
                self.low += self.momentum * (low - self.low)
                self.high += self.momentum * (high - self.high)
        scale = max(self.high - self.low, 1e-8) / 255.0
        zero_point = int(min(max(round(-self.low / scale), 0), 255))
        return (torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, 255), *args[1:])


class FakeQuantized:
    """Fake-quantise every Conv2d and Linear of `model` while the `with` block runs."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.layers: list[Any] = []
        self._hooks: list[Any] = []

    def __enter__(self) -> Self:
        from torch import nn
        from torch.nn.utils import parametrize

        for module in self.model.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                parametrize.register_parametrization(module, "weight", _weight_fake_quant())
                self._hooks.append(module.register_forward_pre_hook(_InputFakeQuant()))
                self.layers.append(module)
        if not self.layers:
            raise ConfigError(
                "The model has no convolution or linear layer that INT8 could run, so it cannot "
                "be quantised; export it with --no-int8."
            )
        return self

    def __exit__(self, *exc: object) -> None:
        from torch.nn.utils import parametrize

        for hook in self._hooks:
            hook.remove()
        for module in self.layers:
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)


def qat_finetune(
    model: Any,
    spec: Any,
    train: SplitPixels,
    epochs: int = 2,
    lr: float = 1e-5,
    batch_size: int = 32,
    seed: int = 0,
    progress: Any = None,
) -> QatReport:
    """Fine-tune `model` (described by its `ModelSpec`) in place under fake quantisation
    (BatchNorm frozen); it stays float.

    The target is the float model itself, not the labels: the loss is the distillation loss
    (α = 1, T = 4) against a frozen copy of `model` taken before fine-tuning, so the quantised
    model learns to make the float model's decisions rather than drift to new ones (the gate
    judges it against those decisions at the float model's threshold).
    """
    import copy

    from visionline.export._prune import finetune
    from visionline.train._distill import DistillationLoss

    if epochs < 1:
        raise ConfigError(
            f"Quantisation-aware fine-tuning needs at least 1 epoch, not {epochs}; pass --qat-epochs 2."
        )
    reference = DistillationLoss(
        copy.deepcopy(model).eval(), spec, spec.preprocessing, alpha=1.0, temperature=4.0
    )
    with FakeQuantized(model) as quantized:
        finetune(
            model,
            list(spec.class_names),
            spec.preprocessing,
            train,
            epochs,
            lr,
            batch_size,
            seed,
            progress,
            teacher=reference,
            frozen_norm=True,
            label="quantisation-aware fine-tune",
        )
    model.eval()
    return QatReport(epochs, lr, len(train), len(quantized.layers))
