"""bf16 linear layers on a CPU, with their weights packed once for oneDNN.

Why: a bf16 `nn.Linear` on a CPU hands its weight to oneDNN in the plain row-major layout on
every call, and oneDNN re-lays it out each time before the AMX / AVX512-BF16 kernels can use
it. Packing each weight once, at load, into oneDNN's own blocked layout is what torch's compiler
does for CPU inference (inductor's weight-prepack pass under `freezing`); done here without the
compiler, generation gets it with no compile wait, and for any number of rows. Measured on
SmolLM2-135M (bench/infer.py, "against the memory bound"): 1.13x to 1.29x the decoding steps/s
of plain bf16 for 1 and 8 rows, with 1 and 2 threads, and the same greedy text (tested).

float32 stays as it is: its packed products round differently from the plain ones, and float32
greedy text must stay what it is today (and one row already runs near the bandwidth bound).

The packed copy is kept beside the weight, not instead of it: with gradients on (Inside's
attributions), a layer computes the plain way, since the packed product has no backward. It
costs the layers' weights once more in memory (270 MB for SmolLM2-135M in bf16). Module names
and the state dict are unchanged.
"""

from __future__ import annotations

import types

PACKED_ATTRIBUTE = "_workbench_packed_weight"


def packed_products_available() -> bool:
    """This torch build has oneDNN's packed linear (a private op that torch's compiler uses)."""
    import torch

    return (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


def pack_linear_weights(model) -> int:
    """Give every bf16 `nn.Linear` of `model` (on the CPU) a packed copy of its weight, used while
    gradients are off. Returns how many layers were packed (0 where the op is missing)."""
    import torch

    if not packed_products_available():
        return 0
    packed = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if (type(module) is not torch.nn.Linear or weight is None or weight.dtype != torch.bfloat16
                or weight.device.type != "cpu"):
            continue
        # The batch size given to the packing is a hint for the layout; any batch size computes.
        setattr(module, PACKED_ATTRIBUTE, torch.ops.mkldnn._reorder_linear_weight(weight.detach(), 1))
        module.forward = types.MethodType(_packed_forward, module)
        packed += 1
    return packed


def _packed_forward(self, input):
    import torch

    # Under torch.compile the plain product is traced: the compiler packs weights itself
    # (core/compiled_step.py) and cannot lower a product of weights packed outside it.
    if torch.is_grad_enabled() or input.dtype != torch.bfloat16 or torch.compiler.is_compiling():
        return torch.nn.functional.linear(input, self.weight, self.bias)
    return torch.ops.mkldnn._linear_pointwise(input, getattr(self, PACKED_ATTRIBUTE), self.bias, "none", [], "")
