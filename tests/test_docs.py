"""Documentation stays true: documented parameters, the README's code and command."""

import importlib
import inspect
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sklearn.base import BaseEstimator

import skocc

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
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


def _subprocess_env():
    """This checkout's skocc (not another installed copy), one thread, no display."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}


@pytest.mark.slow
def test_sphinx_docs_build_without_warnings(tmp_path):
    pytest.importorskip("sphinx")  # installed by the `test` extra, so CI builds the docs
    pytest.importorskip("sphinx_gallery")
    # plot_gallery=0: the gallery's pages are built without running the examples,
    # which test_examples_run runs one by one.
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-D", "plot_gallery=0", str(ROOT / "docs"), str(tmp_path / "html")],
        capture_output=True, text=True, env=_subprocess_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    html = tmp_path / "html"
    assert (html / "generated" / "skocc.ConvAEOneClass.html").exists()
    assert (html / "generated" / "skocc.plotting.plot_anomaly_maps.html").exists()
    for example in EXAMPLES:
        assert (html / "auto_examples" / f"{example.stem}.html").exists(), example.name
    documented = [_object(page.stem) for page in (html / "generated").glob("*.html")]
    missing = [name for name, obj in _public_objects() if not any(obj is d for d in documented)]
    assert not missing, f"public names without a page in docs/api.rst: {missing}"


def _object(dotted):
    module, _, attr = dotted.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def _public_objects():
    """(name, object) for every name in the ``__all__`` of skocc's public modules."""
    modules = [skocc] + [
        importlib.import_module(f"skocc.{info.name}")
        for info in pkgutil.iter_modules(skocc.__path__) if not info.name.startswith("_")
    ]
    for module in modules:
        for name in getattr(module, "__all__", []):
            if name != "__version__":  # a string, named in the API page's text
                yield f"{module.__name__}.{name}", getattr(module, name)


def test_examples_are_gallery_examples():
    for example in EXAMPLES:
        text = example.read_text()
        assert example.name.startswith("plot_"), example.name
        assert text.startswith('"""\n') and "\n# %%\n" in text, example.name


@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_examples_run(example, tmp_path):
    # Files an example writes (figures, models) land in tmp_path.
    result = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, cwd=tmp_path,
        env=_subprocess_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
