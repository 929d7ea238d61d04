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
