"""Which device a model runs on, decided without importing torch when the answer cannot be CUDA.

Why: ``--device auto`` asks torch whether a CUDA GPU is usable, and importing torch costs ~1.2 s of a
one-shot query whose model runs on the CPU through OpenVINO anyway. CUDA needs the NVIDIA kernel
driver, so on a machine without it the answer is 'cpu' without asking torch; with it, torch decides.
"""

from __future__ import annotations

import os

from mmsearch.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")
_NVIDIA_DRIVER = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/nvidia0")


def nvidia_driver_present() -> bool:
    """True when the NVIDIA kernel driver is loaded (CUDA cannot work without it)."""
    return any(os.path.exists(path) for path in _NVIDIA_DRIVER)


def cuda_available() -> bool:
    """torch's answer, asked only where the driver makes a GPU possible."""
    if not nvidia_driver_present():
        return False
    import torch

    return bool(torch.cuda.is_available())


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is usable, else 'cpu'. Asking for cuda without one is an error."""
    if device not in DEVICES:
        raise ConfigError(f"unknown device {device!r}: use auto, cpu or cuda")
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    if device == "cuda" and not cuda_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is available (try --device auto)")
    return device
