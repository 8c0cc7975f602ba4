"""Which precision models compute in: the hardware checks, training's mixed-precision choice and
inference's weight dtype.

bf16 pays where the hardware computes it: a GPU with bf16, or a CPU with AMX tiles or
AVX512-BF16 (measured here, an AMD EPYC with AVX512-BF16: SmolLM2 generates 1.5x the tokens a
second and MiniLM scores 1.6x the rows in bf16, bench/infer.py). Elsewhere bf16 is emulated,
its matrix products slower than float32's. On a tiny model the casts cost more than they save.
"""

from __future__ import annotations

from dataclasses import dataclass

# Training: bench/train.py measures the gain and the loss on a tiny model.
BF16_AUTO_MIN_PARAMETERS = 5_000_000

INFERENCE_PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class Hardware:
    """What the precision choice depends on (detected, or given by a test)."""

    cuda: bool
    cuda_bf16: bool = False  # the GPU computes in bf16 (Ampere and later)
    cpu_fast_bf16: bool = False  # bf16 instructions (AMX, or AVX512-BF16): bf16 is faster there

    @classmethod
    def detect(cls) -> "Hardware":
        import torch

        cuda = torch.cuda.is_available()
        return cls(cuda=cuda, cuda_bf16=cuda and torch.cuda.is_bf16_supported(), cpu_fast_bf16=_cpu_has_fast_bf16())

    @property
    def fast_bf16(self) -> bool:
        """bf16 computed in hardware, faster than float32: a GPU with bf16, a CPU with AMX or AVX512-BF16."""
        return self.cuda_bf16 if self.cuda else self.cpu_fast_bf16

    @property
    def can_bf16(self) -> bool:
        """bf16 computed at all. torch computes bf16 on every CPU, in software without AMX or
        AVX512-BF16: on an AMD EPYC with AVX2 only, a matrix-vector product of SmolLM2's size took
        1.4x as long as in float32, while a whole SmolLM2 generation took about as long (it reads
        half the bytes of weights)."""
        return self.cuda_bf16 if self.cuda else True

    def describe_bf16(self) -> str:
        """Why bf16 is (or is not) fast here, for a person."""
        if self.cuda:
            return "this GPU computes bf16" if self.cuda_bf16 else "this GPU has no bf16"
        return ("this CPU computes bf16 in hardware, with AMX or AVX512-BF16" if self.cpu_fast_bf16
                else "this CPU has no AMX or AVX512-BF16 to compute bf16 in hardware")


def _parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def choose_precision(requested: str, model, hardware: Hardware) -> tuple[str, str | None]:
    """Training's mixed precision: (what runs: "fp32", "bf16" or "fp16", a note for the person or None).

    "auto": on a GPU bf16 where it computes in bf16, else fp16 (Accelerate scales its loss, as
    fp16 underflows); on a CPU bf16 where it has AMX or AVX512-BF16 and the model has at least
    BF16_AUTO_MIN_PARAMETERS weights, else float32. A forced choice the hardware cannot run
    falls back, with a note. The GPU branches are untested here: this project has no GPU.
    """
    if requested == "fp32":
        return "fp32", None
    if hardware.cuda:
        if requested == "fp16" or hardware.cuda_bf16:
            return ("fp16" if requested == "fp16" else "bf16"), None
        note = "This GPU has no bf16: training in fp16 with loss scaling instead." if requested == "bf16" else None
        return "fp16", note
    if requested == "fp16":
        return "fp32", "fp16 training needs a GPU: training in float32 instead."
    if requested == "bf16":
        return "bf16", (None if hardware.cpu_fast_bf16 else
                        f"Training in bf16 as asked, emulated: {hardware.describe_bf16()}.")
    large = _parameters(model) >= BF16_AUTO_MIN_PARAMETERS
    return ("bf16" if hardware.cpu_fast_bf16 and large else "fp32"), None


def choose_inference_precision(requested: str, model, hardware: Hardware) -> tuple[str, str]:
    """The dtype a loaded model's weights are put in for inference: ("fp32" or "bf16", why, for
    the person).

    "auto": bf16 on a GPU with bf16 or a CPU with AMX or AVX512-BF16, for models of
    BF16_AUTO_MIN_PARAMETERS weights or more; float32 elsewhere. "bf16" forced runs in bf16
    wherever the hardware can compute it at all (on every CPU, slowly where it is emulated);
    "fp32" always.
    The GPU branches are untested here: this project has no GPU. `requested` is one of
    INFERENCE_PRECISIONS (the registry refuses others).
    """
    if requested != "auto":
        return forced_precision(requested, hardware)
    if not hardware.fast_bf16:
        return "fp32", f"float32, automatic: {hardware.describe_bf16()}"
    if _parameters(model) < BF16_AUTO_MIN_PARAMETERS:
        return "fp32", (f"float32, automatic: a model under {BF16_AUTO_MIN_PARAMETERS // 1_000_000}M weights "
                        f"runs faster in float32")
    return "bf16", f"bf16, automatic: {hardware.describe_bf16()}"


def forced_precision(requested: str, hardware: Hardware | None = None) -> tuple[str, str] | None:
    """(dtype, why) of a forced precision, known before any model is loaded; None for "auto"
    (it depends on the model's size). Detects the hardware only for "bf16"."""
    if requested == "fp32":
        return "fp32", "float32, as asked"
    if requested != "bf16":
        return None
    hardware = hardware or detected_hardware()
    if hardware.fast_bf16:
        return "bf16", "bf16, as asked"
    if hardware.can_bf16:
        return "bf16", f"bf16, as asked; emulated: {hardware.describe_bf16()}"
    return "fp32", "float32: this GPU has no bf16"


_detected: Hardware | None = None


def detected_hardware() -> Hardware:
    """This machine's Hardware, detected once per process."""
    global _detected
    if _detected is None:
        _detected = Hardware.detect()
    return _detected


def _cpu_has_fast_bf16() -> bool:
    """AMX tiles (Intel Sapphire Rapids and later) or AVX512-BF16 (also AMD Zen 4): bf16 matrix
    products run in hardware. Without them bf16 is emulated, its matrix products slower than float32's."""
    import torch

    checks = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    try:  # private helpers, so looked up with care
        return any(check() for check in checks if check)
    except RuntimeError:
        return False
