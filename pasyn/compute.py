"""Where the three trainers compute: --device and --precision, chosen once, the same way.

torch is imported inside the functions: the rest of pasyn is numpy only, and Blender imports it.
Nothing here is stored in a checkpoint (a checkpoint made on a GPU loads on a CPU and back).
"""
import contextlib
from pathlib import Path

from pasyn.files import UserError

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")


def add_device_flag(parser):
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="auto: the GPU when torch sees one, else the CPU (default: auto)")


def add_precision_flag(parser):
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="auto: bf16 on a GPU or a CPU with bf16 hardware (AVX512-BF16, AMX), else fp32 "
                             "(default: auto)")


def choose_device(name):
    """torch.device for --device; --device cuda without a GPU is one line."""
    import torch
    if name not in DEVICES:
        raise UserError(f"--device {name} is not one of {', '.join(DEVICES)}")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UserError("--device cuda: torch sees no CUDA GPU here (use --device auto or cpu)")
        return torch.device("cuda")
    return torch.device("cpu")


def cpu_name():
    """The CPU's model name, for figures that must say which machine measured them."""
    import platform
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_has_bf16():
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def choose_precision(name, device):
    """'auto' -> 'bf16' on a GPU that has it or a CPU with bf16 hardware (elsewhere oneDNN emulates
    bf16, slower than fp32), else 'fp32'."""
    import torch
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_bf16() else "fp32"


def autocast(device, precision):
    """bf16 autocast of the convolutions (losses and statistics stay fp32), or nothing."""
    import torch
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def keep_freed_memory():
    """Ask glibc to keep freed memory for reuse instead of handing it back to the system.

    A CPU training step allocates and frees the same tens of megabytes of feature maps; by default
    glibc unmaps them and the next step page-faults them back in (a fifth of an AdaIN step's time).
    Process-wide; the trainers call it once at start. Elsewhere than Linux/glibc it does nothing.
    """
    import ctypes
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    mallopt(m_mmap_threshold, 32 << 20)  # glibc's largest: blocks below 32 MB come from the heap
    mallopt(m_trim_threshold, 1 << 30)   # and freed heap is kept, up to 1 GB
    mallopt(m_top_pad, 256 << 20)


def on_cpu(value):
    """A checkpoint's state (nested dicts and lists of tensors) with every tensor on the CPU, so no
    device is stored in a file; the same tensors when they are there already."""
    import torch
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: on_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(on_cpu(v) for v in value)
    return value
