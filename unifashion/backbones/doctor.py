"""``unifashion doctor``: can this machine load the backbones of a preset?"""

from __future__ import annotations

import importlib.metadata
import platform
import re
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from unifashion.backbones.cache import cache_home
from unifashion.config import ModelConfig, get_preset
from unifashion.utils.hardware import cpu_has_bf16

PACKAGES = (
    "torch",
    "transformers",
    "diffusers",
    "peft",
    "accelerate",
    "tokenizers",
    "safetensors",
    "numpy",
    "pycocoevalcap",
)


def _count(*modules) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def _check(name: str, load: Callable[[], tuple[int, Path | None]]) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        params, path = load()
    except Exception as exc:  # the doctor reports any failure instead of crashing
        return {
            "name": name,
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "detail": traceback.format_exc(limit=3),
            "load_seconds": round(time.perf_counter() - start, 3),
        }
    return {
        "name": name,
        "ok": True,
        "parameters": params,
        "load_seconds": round(time.perf_counter() - start, 3),
        "cache_path": str(path) if path else None,
    }


def backbone_checks(config: ModelConfig) -> list[tuple[str, Callable[[], tuple[int, Path | None]]]]:
    """What to load for ``config``, as (name, loader returning (params, cache path))."""
    from unifashion.backbones import llm, text, vision

    def load_vision():
        enc = vision.load_vision_encoder(config.vision)
        path = vision.efficientnet_lite0_weights()[0] if config.vision.kind == "efficientnet_lite0" else None
        return _count(enc), path

    def load_text():
        _, bert = text.load_minilm()
        return _count(bert), text.minilm_dir()

    def load_qformer():
        q = config.qformer
        if q.init == "minilm":
            emb, qf = text.init_qformer_from_minilm(q, config.vision.feature_dim)
            return _count(emb, qf), text.minilm_dir()
        if q.init == "blip2":
            emb, qf, _, _ = text.load_blip2_qformer(q, config.vision.feature_dim)
            return _count(emb, qf), None
        emb, qf = text.build_qformer(q, config.vision.feature_dim)
        return _count(emb, qf), None

    def load_llm():
        _, model = llm.load_llm(config.llm)
        path = llm.smollm2_dir()[0] if config.llm.kind in ("smollm2", "tiny_llama") else None
        return _count(model), path

    checks = [(f"vision:{config.vision.kind}", load_vision)]
    if config.qformer.init == "minilm":
        checks.append(("text:all-MiniLM-L6-v2", load_text))
    checks.append((f"qformer:{config.qformer.init}", load_qformer))
    checks.append((f"llm:{config.llm.kind}", load_llm))
    if config.diffusion.source:
        from unifashion.backbones import diffusion

        checks.append(("diffusion:unet", lambda: (_count(diffusion.load_unet(config.diffusion.source)), None)))
        vae_source = config.diffusion.vae_source or config.diffusion.source
        checks.append(("diffusion:vae", lambda: (_count(diffusion.load_vae(vae_source)), None)))
    return checks


def java_version() -> str | None:
    java = shutil.which("java")
    if not java:
        return None
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "([^"]+)"', out.stderr + out.stdout)
    return match.group(1) if match else "unknown"


def run_doctor(preset: str = "mini") -> dict[str, Any]:
    config = get_preset(preset)
    backbones = [_check(name, load) for name, load in backbone_checks(config)]
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    java = java_version()
    return {
        "preset": preset,
        "ok": all(b["ok"] for b in backbones),
        "backbones": backbones,
        "versions": {"python": platform.python_version(), **versions},
        "java": {"present": java is not None, "version": java, "needed_for": "METEOR (caption metric)"},
        "cpu_bf16": cpu_has_bf16(),
        "cache_home": str(cache_home()),
    }


def print_report(report: dict[str, Any], stream=sys.stdout) -> None:
    w = stream.write
    w(f"UniFashion doctor: preset {report['preset']}, cache {report['cache_home']}\n")
    for b in report["backbones"]:
        if b["ok"]:
            w(
                f"  ok    {b['name']:<28} {b['parameters'] / 1e6:8.2f} M params  {b['load_seconds']:7.2f} s"
                f"  {b['cache_path'] or '-'}\n"
            )
        else:
            w(f"  FAIL  {b['name']:<28} {b['error']}\n")
    v = report["versions"]
    w("  versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + "\n")
    j = report["java"]
    w(f"  java: {j['version'] if j['present'] else 'not found (METEOR will be unavailable)'}\n")
    w(f"  bf16 on this CPU: {'yes' if report['cpu_bf16'] else 'no'}\n")
    w("All backbones load.\n" if report["ok"] else "Some backbones failed to load (see above).\n")
