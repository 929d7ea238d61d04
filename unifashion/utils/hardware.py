"""The machine we run on: what the CPU can do, and a quiet terminal."""

from __future__ import annotations

import contextlib
import functools
import os
import platform

import torch


@functools.cache
def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX512-BF16 or
    AMX), where bf16 autocast on the CPU is a speed-up rather than a slow-down."""
    if platform.system() != "Linux":
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast(enabled: bool, device: torch.device | str = "cpu"):
    """bf16 autocast where it is fast (CUDA, or CPUs with native bf16); otherwise a no-op."""
    device = torch.device(device)
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if enabled and device.type == "cpu" and cpu_has_bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def quiet_libraries() -> None:
    """Keep the terminal for our own progress bars and messages."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a torch device: "auto" (or None) is the first CUDA GPU when there is one, else
    the CPU; "cpu", "cuda" and "cuda:N" are checked to exist here."""
    from unifashion.utils.errors import ConfigError

    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device: expected auto, cpu, cuda or cuda:N, got {device!r} ({exc})") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device: {device} asked for, but this machine has no CUDA GPU that torch can use")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ConfigError(f"device: {device} asked for, this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    elif resolved.type != "cpu":
        raise ConfigError(f"device: expected auto, cpu, cuda or cuda:N, got {device!r}")
    return resolved


def enable_tf32() -> None:
    """TensorFloat-32 matrix products and convolutions on CUDA (Ampere and later): fp32 training
    and fp32 parts of mixed precision run on tensor cores, at bf16-like mantissa for the products."""
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
