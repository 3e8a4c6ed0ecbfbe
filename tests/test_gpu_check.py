"""The GPU device script and its carry builder, rehearsed on CPU (the CUDA-only stage skipped)."""

import json
import os
import subprocess
import sys
import zipfile

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tests"))
import gpu_carry  # noqa: E402


def _last_json(log) -> dict:
    return json.loads(log.read_text().strip().splitlines()[-1])


def test_device_script_dry_run_runs_every_stage_on_cpu(tmp_path):
    out = tmp_path / "out"
    env = os.environ | {"OUT": str(out)}
    done = subprocess.run(
        ["bash", "tests/gpu_check.sh", "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr
    summary = (out / "summary.txt").read_text()
    for stage in ("env", "codec", "train", "trained", "infer"):
        assert f"{stage}: exit 0" in summary, summary
    assert "mfu: skipped (needs CUDA)" in summary
    codec = _last_json(out / "codec.log")
    assert codec["codes_equal_to_cpu"] == 1.0 and codec["real_time_factor"] > 0
    trained = _last_json(out / "trained.log")
    assert trained["finite"] and trained["token_accuracy_logged"] and trained["steps"] == 3
    timed = _last_json(out / "infer.log")
    assert set(timed) == {"expert_cold", "expert_warm", "four_difficulties"}
    assert all(row["prefill"] >= 0 and row["decode"] > 0 for row in timed.values())
    assert set(timed["four_difficulties"]["notes"]) == {"Normal", "Hard", "Expert", "ExpertPlus"}
    assert len(list(out.iterdir())) <= 8  # what a device call brings back


def test_carry_builder_keeps_unconditional_requirements_for_the_devices_python(tmp_path):
    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    metadata = "\n".join(
        [
            "Name: demo",
            "Requires-Dist: numpy>=1.26",
            "Requires-Dist: Some_Thing[extra1] (>=2)",
            'Requires-Dist: tomli; python_version < "3.11"',
            'Requires-Dist: pywin32; sys_platform == "win32"',
            'Requires-Dist: pytest; extra == "test"',
        ]
    )
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("demo-1.0.dist-info/METADATA", metadata)
    assert gpu_carry.requirement_names(wheel) == ["numpy", "some-thing"]
    assert {"torch", "transformers", "xformers"} <= gpu_carry.PROVIDED  # never carried
    done = subprocess.run([sys.executable, "tests/gpu_carry.py", "--dry-run"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and "unsloth==" in done.stdout
