"""Build the packages the lent GPU machine lacks, as one pruned tarball the device call carries.

    python tests/gpu_carry.py [--out .carry] [--provided FILE] [--dry-run]

The GPU machine (Python 3.12, x86_64, torch 2.11 cu130, transformers 5.17 ...) has no package
index. This downloads, here, the wheels of what the project needs there and the machine does not
have (the dependency closure of NEEDED, less every package PROVIDED names), for that Python and
platform; unpacks them into one folder as pip --target would; prunes what is never imported there
(Unsloth's studio/ web app, bitsandbytes builds for other CUDA versions, tests, caches); and packs
OUT/site.tar.gz (at most 64 MiB, the call's limit). tests/gpu_check.sh unpacks it onto PYTHONPATH.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = "3.12"
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (39, 35, 34, 31, 28, 27, 24, 17)] + ["manylinux2014_x86_64"]
PLATFORMS += ["manylinux1_x86_64", "linux_x86_64"]
# what the device checks import that the machine may lack; pinned where the CPU rehearsal pinned them
NEEDED = [
    "unsloth==2026.10.9",
    "unsloth_zoo==2026.10.9",
    "bitsandbytes",
    "trl==1.15.0",
    "datasets<5",
    "librosa",
    "soundfile",
    "soxr",
    "msgspec",
    "mir_eval",
]
# on the device image already (its package list, 2026-11-17), or never wanted there
PROVIDED = set(
    """absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
    charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-
    pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
    flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
    huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin
    jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax
    llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack
    multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
    nvidia-ml-py onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx
    optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client
    propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest
    pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml
    regex requests rich sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy seaborn
    sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels sympy
    tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz
    torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer
    typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
    xformers vllm flash-attn deepspeed wandb tensorflow""".split()
)  # xformers: its PyPI build targets another CUDA; the rest are optional extras never used here
LIMIT_BYTES = 64 << 20


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(wheel: Path) -> list[str]:
    """The unconditional requirements (no extras; markers for Linux CPython 3.12 kept) a wheel declares."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        lines = archive.read(metadata).decode().splitlines()
    names = []
    for line in lines:
        if not line.startswith("Requires-Dist:"):
            continue
        spec, _, marker = line.removeprefix("Requires-Dist:").partition(";")
        if "extra ==" in marker or "extra==" in marker:
            continue
        if marker and not _marker_holds(marker):
            continue
        names.append(canonical(re.split(r"[\s<>=!~\[(]", spec.strip(), maxsplit=1)[0]))
    return names


def _marker_holds(marker: str) -> bool:
    from packaging.markers import Marker

    environment = {"python_version": PYTHON, "python_full_version": f"{PYTHON}.3", "sys_platform": "linux"}
    environment |= {"platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython"}
    environment |= {"os_name": "posix", "platform_python_implementation": "CPython", "extra": ""}
    return Marker(marker).evaluate(environment)


def download(spec: str, into: Path) -> Path:
    """The wheel of spec for the device's Python and platform (no dependencies)."""
    before = set(into.iterdir())
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet"]
    command += ["--python-version", PYTHON, "--implementation", "cp", *platforms, "-d", str(into), spec]
    subprocess.run(command, check=True)
    new = set(into.iterdir()) - before
    name = canonical(re.split(r"[<>=!~\[]", spec, maxsplit=1)[0])
    return next(iter(new)) if new else next(w for w in into.glob("*.whl") if canonical(w.name.split("-")[0]) == name)


def closure(wheels: Path, provided: set[str]) -> list[Path]:
    """Every wheel NEEDED pulls in that the device lacks, downloaded into `wheels`."""
    queue, seen, got = list(NEEDED), set(), []
    while queue:
        spec = queue.pop(0)
        name = canonical(re.split(r"[<>=!~\[]", spec, maxsplit=1)[0])
        if name in seen or name in provided or name.startswith("nvidia-"):
            continue
        seen.add(name)
        wheel = download(spec, wheels)
        print(f"  {wheel.name} ({wheel.stat().st_size / 2**20:.1f} MiB)")
        got.append(wheel)
        queue += requirement_names(wheel)
    return got


def pruned(site: Path) -> int:
    """Remove what the device checks never import; -> bytes removed."""
    removed = 0
    # studio: Unsloth's web app, shipped at the top level of its wheel
    doomed = [site / "studio", *site.glob("**/__pycache__"), *site.glob("*/tests"), *site.glob("bin")]
    kept = ("libbitsandbytes_cuda130", "libbitsandbytes_cpu")  # the device's CUDA 13.0, and the fallback
    doomed += [so for so in site.glob("bitsandbytes/libbitsandbytes_*") if not so.name.startswith(kept)]
    for path in doomed:
        if path.exists():
            removed += (
                sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size
            )
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    return removed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / ".carry"), help="folder for site.tar.gz (git-ignored)")
    p.add_argument("--dry-run", action="store_true", help="list what would be fetched and left out, fetch nothing")
    args = p.parse_args(argv)
    if args.dry_run:
        print("needed: " + " ".join(NEEDED))
        print(f"provided by the device image: {len(PROVIDED)} packages (not carried)")
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wheels, site = Path(tmp, "wheels"), Path(tmp, "site")
        wheels.mkdir()
        print("downloading for Python 3.12 x86_64:")
        got = closure(wheels, {canonical(n) for n in PROVIDED})
        for wheel in got:  # a wheel is a zip of its site-packages files: what pip --target would write
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(site)
        print(f"pruned {pruned(site) / 2**20:.1f} MiB never imported there")
        tarball = out / "site.tar.gz"
        with tarfile.open(tarball, "w:gz") as tar:
            tar.add(site, arcname="site")
    size = tarball.stat().st_size
    print(f"wrote {tarball}: {size / 2**20:.1f} MiB ({len(got)} packages)")
    if size > LIMIT_BYTES:
        print(f"gpu_carry.py: {tarball} is over the 64 MiB a device call carries", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
