"""Install what the project needs, with the torch build that fits this machine.

    python install.py              # NVIDIA GPU: requirements-gpu.txt; else CPU torch, then requirements.txt
    python install.py --cpu        # the CPU build even where a GPU is present
    python install.py --gpu        # the CUDA stack (torch from PyPI, Unsloth, bitsandbytes)
    python install.py --dry-run    # print the pip commands only

On Linux, PyPI's torch is a CUDA build that pulls ~3 GB of nvidia-* wheels; a machine without an
NVIDIA GPU gets the CPU build from PyTorch's CPU wheel index instead (macOS and Windows wheels on
PyPI are CPU builds already). Install into a virtual environment: python -m venv .venv first.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent
SUPPORTED_PYTHON = ((3, 10), (3, 12))  # oldest and newest minor version the stack installs on
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
TORCH = "torch>=2.4"  # as requirements.txt asks


def has_nvidia_gpu() -> bool:
    """Whether nvidia-smi lists a GPU (the driver is installed and sees one)."""
    if not shutil.which("nvidia-smi"):
        return False
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return listed.returncode == 0 and "GPU" in listed.stdout


def reachable(url: str, timeout: float = 5.0) -> bool:
    """Whether a TCP connection to the URL's host opens (no request is sent)."""
    parts = urlsplit(url)
    try:
        socket.create_connection((parts.hostname, parts.port or 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def pip_commands(gpu: bool, system: str = platform.system(), index_reachable: bool = True) -> list[list[str]]:
    """The pip invocations for this machine, in order. Where PyTorch's CPU index cannot be reached, pip
    still finds a CPU build in its configured find-links or local indexes; it then retries nothing."""
    pip = [sys.executable, "-m", "pip", "install"]
    if gpu:
        return [pip + ["-r", str(ROOT / "requirements-gpu.txt")]]
    cpu_torch = []
    if system == "Linux":
        cpu_torch = [pip + [TORCH, "--index-url", CPU_TORCH_INDEX] + ([] if index_reachable else ["--retries", "0"])]
    return cpu_torch + [pip + ["-r", str(ROOT / "requirements.txt")]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    choice = p.add_mutually_exclusive_group()
    choice.add_argument("--cpu", action="store_true", help="the CPU build of torch, even where a GPU is present")
    choice.add_argument("--gpu", action="store_true", help="the CUDA stack with Unsloth, even where no GPU is seen")
    p.add_argument("--dry-run", action="store_true", help="print the pip commands, run nothing")
    args = p.parse_args(argv)
    oldest, newest = SUPPORTED_PYTHON
    if not oldest <= sys.version_info[:2] <= newest:
        print(
            f"install.py: Python {platform.python_version()} is not supported; use Python "
            f"{oldest[0]}.{oldest[1]} to {newest[0]}.{newest[1]}",
            file=sys.stderr,
        )
        return 2
    gpu = args.gpu or (not args.cpu and has_nvidia_gpu())
    print(f"install.py: {'an NVIDIA GPU: the CUDA stack' if gpu else 'no GPU: the CPU build of torch'}", flush=True)
    index_reachable = gpu or reachable(CPU_TORCH_INDEX)
    if not index_reachable:
        print(
            f"install.py: {CPU_TORCH_INDEX} is unreachable; looking for a CPU build of torch where pip is "
            "configured to look (find-links, local indexes)",
            flush=True,
        )
    for command in pip_commands(gpu, index_reachable=index_reachable):
        print("+ " + " ".join(command), flush=True)
        if not args.dry_run and subprocess.run(command, check=False).returncode != 0:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
