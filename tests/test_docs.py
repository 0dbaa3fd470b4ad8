"""Documentation stays true: documented parameters, the README's code and command."""

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sklearn.base import BaseEstimator

import skocc

ROOT = Path(__file__).resolve().parents[1]
PUBLIC_ESTIMATORS = [
    obj
    for obj in (getattr(skocc, name) for name in skocc.__all__)
    if isinstance(obj, type) and issubclass(obj, BaseEstimator)
]


def _documented_parameters(doc):
    section = re.search(r"Parameters\n\s*-+\n(.*?)\n\s*(Attributes|Returns)\n\s*-+\n", doc, re.S)
    assert section, "no Parameters section"
    return re.findall(r"^    (\w+) : ", section.group(1), re.M)


@pytest.mark.parametrize("estimator", PUBLIC_ESTIMATORS, ids=lambda e: e.__name__)
def test_documented_parameters_match_the_signature(estimator):
    documented = _documented_parameters(estimator.__doc__)
    signature = list(inspect.signature(estimator.__init__).parameters)[1:]
    assert documented == signature


@pytest.mark.parametrize("estimator", PUBLIC_ESTIMATORS, ids=lambda e: e.__name__)
def test_no_placeholder_left_in_docstrings(estimator):
    assert "{{" not in estimator.__doc__
    assert not re.search(r"default=\{\w+\}", estimator.__doc__)


def test_readme_usage_example_runs(tmp_path, monkeypatch):
    # Blocks run in order in one namespace, as a reader runs them (the saving
    # block uses the model fitted in the usage block), in a scratch directory.
    monkeypatch.chdir(tmp_path)
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert blocks
    namespace = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)


def test_ci_runs_the_readme_test_command():
    out = subprocess.run(
        ["awk", r"/<!-- test-command:/{found=1; next} found && /^```/{if (infence) exit; infence=1; next} found && infence {print; exit}", "README.md"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert out.startswith("pip install torch==2.13.0 && ")
    assert "pytest" in out
    assert "<!-- test-command:" in (ROOT / "README.md").read_text()
    assert "README.md" in (ROOT / ".ci" / "run").read_text()


def test_sphinx_docs_build_without_warnings(tmp_path):
    pytest.importorskip("sphinx")  # installed by the `test` extra, so CI builds the docs
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         str(ROOT / "docs"), str(tmp_path / "html")],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "html" / "generated" / "skocc.ConvAEOneClass.html").exists()


@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("*.py")), ids=lambda p: p.name)
def test_examples_run(example, tmp_path):
    # This checkout's skocc, not whichever one is installed; files the example
    # writes (figures) land in tmp_path; one torch thread, as conftest.py sets
    # in-process (on a busy 2-core machine the quick start took 74 s with two
    # threads, 8 s with one).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.setdefault("OMP_NUM_THREADS", "1")
    result = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
