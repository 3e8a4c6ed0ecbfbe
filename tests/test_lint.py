"""The code base stays `ruff check` and `ruff format` clean."""

import re
import subprocess
import sys

from conftest import ROOT


def test_ruff_check_and_format():
    check = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    fmt = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "."], cwd=ROOT, capture_output=True, text=True
    )
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_readme_is_a_short_guide_whose_commands_ci_runs():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    first_block = readme.split("```bash\n", 1)[1].split("```", 1)[0]
    install, tests = (line.split("#")[0].strip() for line in first_block.strip().splitlines())
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert [install, tests] == [line for line in ci if line.startswith("python")]  # CI runs exactly these
    for target in re.findall(r"\]\(((?:docs/)?[\w./-]+?)(?:#[\w-]+)?\)", readme):
        assert (ROOT / target).exists(), f"README links to {target}, which is missing"
