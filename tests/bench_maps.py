"""Benchmark: levels parsed per second, maps.py vs the bsmap PyPI package, same files.

Run on demand (not part of the test suite):  python tests/bench_maps.py [--levels 1000]
Loads every level folder of ../shared/fixtures/maps, repeated until about --levels
loads, with each loader, best of --trials (shared machines are noisy); bsmap is
installed into the current environment first if missing (not a project dependency).
"""

import argparse
import contextlib
import io
import math
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from maps import load_level  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "maps"


def bsmap_loader():
    try:
        from bsmap.mapper import BeatSaberMapper
    except ImportError:
        print("installing bsmap for the comparison ...", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "bsmap"], check=True)
        from bsmap.mapper import BeatSaberMapper
    return lambda folder: BeatSaberMapper.load_map_folder(str(folder))


def run(loader, folders: list[Path], repeats: int, trials: int) -> tuple[int, int, float]:
    """(loads, failures, seconds of the fastest trial) of loading every folder `repeats` times."""
    times = []
    for _ in range(trials):
        failures = 0
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # bsmap prints a warning per missing file
            for _ in range(repeats):
                for folder in folders:
                    try:
                        loader(folder)
                    except Exception:  # MapError from maps.py; anything from bsmap
                        failures += 1
        times.append(time.perf_counter() - start)
    return repeats * len(folders), failures, min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, default=1000, help="about how many level loads per loader")
    parser.add_argument("--trials", type=int, default=3, help="timed runs per loader; the fastest counts")
    args = parser.parse_args()
    if not FIXTURES.is_dir():
        sys.exit(f"no fixtures at {FIXTURES}")
    folders = sorted(p for p in FIXTURES.iterdir() if (p / "Info.dat").exists())
    repeats = math.ceil(args.levels / len(folders))
    size_mb = sum(f.stat().st_size for p in folders for f in p.glob("*.dat")) / 1e6
    print(f"{len(folders)} fixture levels ({size_mb:.1f} MB of .dat), each loaded {repeats}x\n")

    loaders = {"maps.py": load_level, "bsmap": bsmap_loader()}
    results = {name: run(loader, folders, repeats, args.trials) for name, loader in loaders.items()}
    ours = results["maps.py"][0] / results["maps.py"][2]
    print(f"{'loader':<10}{'loads':>8}{'failed':>8}{'seconds':>10}{'levels/s':>10}{'MB/s':>8}{'vs maps.py':>12}")
    for name, (loads, failed, seconds) in results.items():
        rate = loads / seconds
        print(
            f"{name:<10}{loads:>8}{failed:>8}{seconds:>10.2f}{rate:>10.0f}"
            f"{size_mb * repeats / seconds:>8.0f}{rate / ours:>11.2f}x"
        )


if __name__ == "__main__":
    main()
