"""Shared test helpers: where fixtures live and how to build level zips in memory."""

import io
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OWN_LEVELS = ROOT / "tests" / "fixtures" / "levels"  # hand-written, part of the repo
SHARED_MAPS = ROOT.parent / "shared" / "fixtures" / "maps"  # real maps, beside the repo only

needs_shared = pytest.mark.skipif(
    not SHARED_MAPS.is_dir(),
    reason=f"real-map fixtures not found at {SHARED_MAPS} (they live beside the repo, not in it)",
)


def level_dict(name: str) -> dict[str, bytes]:
    """{file name: bytes} of one hand-written fixture level (v2, v3 or v4)."""
    return {p.name: p.read_bytes() for p in (OWN_LEVELS / name).iterdir()}


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A tiny checkpoint with random weights, saved as train.py saves one (the web tests' model), writing every
    kind of object."""
    from test_infer import _args, _save_checkpoint

    import train
    from audio import create_audio_tokenizer

    args = _args(tmp_path_factory.mktemp("tiny_model"))
    model, _ = train.load_model(args)
    learned = {"bomb": 1, "wall": 1, "arc": 1, "chain": 1}  # as if its maps held every kind: all switches on
    _save_checkpoint(args, model, create_audio_tokenizer(weights="random"), {"levels": 0, "objects": learned})
    return args.output_dir


@pytest.fixture(scope="session")
def song(tmp_path_factory):
    """An 8-bar synthetic drum song at 100 BPM, as .ogg."""
    from test_infer import _synth_song

    return _synth_song(tmp_path_factory.mktemp("song"), 3, bars=8)[0]
