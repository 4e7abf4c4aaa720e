"""Getting a trained classifier ready to ship on a CPU, and what each step costs.

Three forms of one model, compared on the same images (:func:`deployment_table`):

* **fp32 eager**: the PyTorch module as trained;
* **torch.export**: the model traced into a graph of ATen operations (``ExportedProgram``), the
  form that AOTInductor, ExecuTorch and the ONNX exporter start from; it needs no Python class
  definitions to load (:func:`torch.export.load`);
* **int8 dynamic**: every ``nn.Linear`` with int8 weights (one scale per output channel) and
  activations quantised on the fly per batch (``torch.ao.quantization.quantize_dynamic``,
  fbgemm kernels). A ViT spends most of its time and nearly all its weights in Linear layers,
  which is why this one step is the usual first one.

Sizes are the bytes each form serialises to; latency is the median over repeated batches, given
as a ratio to fp32 measured in the same run (absolute times depend on the machine).
"""

from __future__ import annotations

import copy
import io
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from .classification import accuracy
from .profiling import time_fn


@dataclass(frozen=True)
class DeploymentRow:
    name: str
    megabytes: float  # serialised size
    seconds: float  # median time of one batch
    accuracy: float
    max_logit_diff: float  # largest |logit - fp32 logit| on the images


def serialized_megabytes(model: nn.Module | torch.export.ExportedProgram) -> float:
    """The size ``model`` saves to: its state dict, or the exported program's file."""
    buffer = io.BytesIO()
    if isinstance(model, torch.export.ExportedProgram):
        torch.export.save(model, buffer)
    else:
        torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes / 1e6


def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) with int8 dynamic quantisation of its Linear layers.

    Uses ``torch.ao.quantization.quantize_dynamic`` (deprecated in favour of the torchao
    package, but still in this torch; its deprecation warnings are silenced here)."""
    quantization = getattr(getattr(torch, "ao", None), "quantization", None)
    if quantization is None or not hasattr(quantization, "quantize_dynamic"):
        raise RuntimeError(
            f"this torch ({torch.__version__}) has no torch.ao.quantization.quantize_dynamic; "
            "install the course's pinned versions (make setup) or use the torchao package"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantization.quantize_dynamic(
            copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8
        )


def export_model(model: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """``model`` (eval mode) traced by :func:`torch.export.export` on ``example`` inputs, with
    the batch dimension left free (any batch size runs, not only the example's)."""
    batch = torch.export.Dim("batch", min=1)
    return torch.export.export(
        copy.deepcopy(model).eval(), (example,), dynamic_shapes=({0: batch},)
    )


@torch.no_grad()
def deployment_table(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 64
) -> list[DeploymentRow]:
    """fp32, exported and int8 forms of ``model`` on CPU: size, batch latency, accuracy on
    (``images``, ``labels``) and the largest logit difference from fp32."""
    if len(images) != len(labels) or len(images) < batch_size:
        raise ValueError(
            f"need at least batch_size={batch_size} images with one label each, got "
            f"{len(images)} images and {len(labels)} labels"
        )
    model = copy.deepcopy(model).cpu().eval()
    batch = images[:batch_size]
    program = export_model(model, batch)
    forms = [
        ("fp32 eager", model, model),
        ("torch.export", program.module(), program),
        ("int8 dynamic (Linear)", quantize_int8(model), None),
    ]
    reference = torch.cat([model(x) for x in images.split(batch_size)])
    rows = []
    for name, run, saved in forms:
        logits = torch.cat([run(x) for x in images.split(batch_size)])
        rows.append(
            DeploymentRow(
                name,
                serialized_megabytes(saved if saved is not None else run),
                time_fn(run, batch, repeats=10, warmup=2),
                accuracy(logits, labels),
                (logits - reference).abs().max().item(),
            )
        )
    return rows
