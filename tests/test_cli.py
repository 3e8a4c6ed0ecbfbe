"""Every entry point as a user runs it: --help works, and every flag says what it does."""

import argparse
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = [
    ["install.py"],
    ["maps.py"],
    ["data.py"],
    ["audio.py"],
    ["scrape.py"],
    ["train.py"],
    ["infer.py"],
    ["utils.py"],
    ["utils.py", "synth"],
    ["utils.py", "score"],
    ["utils.py", "preview"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_runs_as_a_user_runs_it(command, flag):
    done = subprocess.run(
        [sys.executable, *command, flag], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage:") and not done.stderr


def _parsers(module: str) -> list[argparse.ArgumentParser]:
    parser = importlib.import_module(module).build_parser()
    subcommands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return [parser] + [sub for action in subcommands for sub in action.choices.values()]


@pytest.mark.parametrize("module", ["maps", "scrape", "train", "infer", "utils"])
def test_every_flag_has_help_and_states_its_default_once(module):
    for parser in _parsers(module):
        text = parser.format_help()
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            assert action.help, f"{parser.prog} {action.option_strings or action.dest}: no help"
        assert "(default: None)" not in text
        for paragraph in text.split("\n  -"):
            assert paragraph.lower().count("default") <= 1, f"{parser.prog}: {paragraph}"


def test_install_takes_the_cpu_build_of_torch_where_no_gpu_is_and_cuda_where_one_is():
    import install

    cpu = install.pip_commands(gpu=False, system="Linux")
    assert cpu[0][-3:] == [
        "torch>=2.4",
        "--index-url",
        install.CPU_TORCH_INDEX,
    ]  # before anything pulls PyPI's CUDA build
    assert cpu[1][-2:] == ["-r", str(ROOT / "requirements.txt")]
    offline = install.pip_commands(gpu=False, system="Linux", index_reachable=False)
    assert offline[0][-2:] == ["--retries", "0"]  # no minutes of retries against an index that cannot answer
    assert [c[-1] for c in install.pip_commands(gpu=False, system="Darwin")] == [str(ROOT / "requirements.txt")]
    assert [c[-1] for c in install.pip_commands(gpu=True, system="Linux")] == [str(ROOT / "requirements-gpu.txt")]
    requirements = (ROOT / "requirements.txt").read_text()
    assert install.TORCH in requirements  # the same torch range both ways
    assert "-r requirements.txt" in (ROOT / "requirements-gpu.txt").read_text()
    done = subprocess.run(
        [sys.executable, "install.py", "--dry-run", "--cpu"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0 and "+ " in done.stdout and "no GPU" in done.stdout
