"""Numeric precision of training and inference: ``auto | fp32 | bf16 | fp16``.

``auto`` is decided by detecting what the hardware runs natively, never by assuming:
a CUDA GPU that supports bfloat16 → bf16, an older CUDA GPU → fp16 (with loss
scaling, the Trainer's ``fp16``), a CPU with ``avx512_bf16`` or AMX (``amx_bf16``) →
bf16, anything else → fp32. Mixed precision means autocast: the weights stay float32
(and are saved so); matrix products run in the lower precision.
"""

from __future__ import annotations

import sys
from pathlib import Path

CHOICES = ("auto", "fp32", "bf16", "fp16")
NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
# CPU flags (Linux /proc/cpuinfo) of native bfloat16 arithmetic: AVX-512 BF16, AMX, Arm BF16
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str] | None:
    """The CPU's feature flags, or None where they cannot be read (not Linux)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):   # x86 / Arm
            return set(value.split())
    return None


def detect(device_type: str | None = None) -> tuple[str, str]:
    """``(choice, why)``: the precision this machine runs natively, and the evidence.
    ``device_type`` "cuda" or "cpu"; default: CUDA when available."""
    import torch

    if device_type is None:
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    if device_type == "cuda":
        name = torch.cuda.get_device_name()
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return "bf16", f"{name} supports bfloat16"
        return "fp16", f"{name} has no native bfloat16"
    if device_type != "cpu":
        return "fp32", f"no mixed-precision detection for device {device_type!r}"
    flags = cpu_flags()
    if flags is None:
        return "fp32", "this CPU's feature flags cannot be read, so native bfloat16 is not known"
    found = [f for f in CPU_BF16_FLAGS if f in flags]
    if found:
        return "bf16", f"this CPU has {', '.join(found)}"
    return "fp32", "this CPU has no native bfloat16 (no avx512_bf16 or amx_bf16)"


def choose(requested: str, device_type: str, *, unsafe: str | None = None, where: str = "precision",
           say=None) -> tuple[str, str]:
    """``(precision, why)`` for ``requested`` on ``device_type``.

    ``unsafe``: why mixed precision costs accuracy in this run (a strategy or task that
    does not tolerate it); ``auto`` then stays float32. A fallback of ``auto`` is said in
    one line through ``say`` (default: stderr). Raises ValueError for a precision the
    device cannot run (the caller reports it as a config error).
    """
    say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if requested == "fp32":
        return "fp32", "requested"
    if requested in ("bf16", "fp16"):
        if requested == "fp16" and device_type != "cuda":
            # the Trainer (accelerate) runs fp16 only on GPUs; on CPU it would silently stay float32
            raise ValueError(f"{where}: fp16 needs a CUDA GPU; on CPU use bf16 or auto")
        if requested == "bf16" and device_type == "cuda":
            import torch

            if not torch.cuda.is_bf16_supported(including_emulation=False):
                raise ValueError(f"{where}: bf16 is not supported by {torch.cuda.get_device_name()}; use fp16 or auto")
        return requested, "requested"
    choice, why = detect(device_type)
    if choice != "fp32" and unsafe:
        choice, why = "fp32", unsafe
    if choice == "fp32":
        say(f"tunesmith: precision auto: float32 ({why})")
    return choice, why


def autocast(precision: str, device_type: str):
    """The autocast context for ``precision`` (a no-op context for fp32)."""
    import contextlib

    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=getattr(torch, NAMES[precision]))


def cpu_attention(model, precision: str, device_type: str) -> None:
    """bf16 on a CPU: eager attention instead of SDPA. torch's CPU SDPA with a padding mask
    runs bf16 at float32's speed; eager attention's matmuls run in bf16 (MiniLM, SST-2
    batches: see docs/benchmarks.md, mixed precision). Same arithmetic; nothing is saved."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if precision != "bf16" or device_type != "cpu" or not hasattr(inner, "set_attn_implementation") \
            or getattr(getattr(inner, "config", None), "_attn_implementation", None) != "sdpa":
        return
    try:
        inner.set_attn_implementation("eager")
    except (ValueError, ImportError):   # a model without an eager path keeps SDPA
        pass


def wrap_forward(model, precision: str, device_type: str) -> None:
    """Run ``model``'s forward under autocast, its outputs cast back to float32, the way
    accelerate does for the Trainer; for a peft wrapper, the wrapped model's forward
    (what ``generate`` calls). Weights are not touched."""
    if precision == "fp32":
        return
    cpu_attention(model, precision, device_type)
    from accelerate.utils import convert_outputs_to_fp32

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    for m in {id(model): model, id(inner): inner}.values():
        forward = m.forward
        m.forward = convert_outputs_to_fp32(autocast(precision, device_type)(forward))
