"""Sphinx configuration of skocc's documentation.

Build from the repository root, warnings as errors:

    python -m sphinx -W --keep-going -b html docs docs/_build/html

This runs every ``examples/plot_*.py`` for the gallery. Add ``-D plot_gallery=0``
to build the gallery pages without running the examples (the test suite does,
and runs each example on its own). The build needs no network: no intersphinx,
no remote images.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

import skocc

project = "skocc"
author = "The skocc developers"
copyright = "the skocc developers"
release = skocc.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "myst_parser",  # renders ../CHANGELOG.md on the changelog page
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = ["_build"]
root_doc = "index"
default_role = "literal"

# -- autodoc / autosummary / numpydoc ------------------------------------------
autosummary_generate = True
autodoc_typehints = "none"  # types are written in the numpydoc sections
autodoc_default_options = {"member-order": "groupwise"}
# Undocumented overrides such as nn.Module.forward must not borrow torch's text.
autodoc_inherit_docstrings = False
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# -- example gallery -------------------------------------------------------------
sys.path.insert(0, str(Path(__file__).resolve().parent))  # for _gallery.py

# The examples train small networks in this process; on a shared CPU one thread
# is fastest. This is the documentation build's choice: skocc never sets threads.
torch.set_num_threads(1)

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    # Run every plot_*.py in a full build but the Dask one, which starts a
    # multi-process cluster (the test suite runs it as a script).
    "filename_pattern": r"/plot_(?!dask_)",
    "ignore_pattern": r"__init__\.py",
    "within_subsection_order": "_gallery.QuickstartFirst",
    "download_all_examples": False,
    "remove_config_comments": True,
    "show_memory": False,
    "min_reported_time": 1,
}

# -- markdown (changelog only) ---------------------------------------------------
myst_heading_anchors = 3

# -- HTML ------------------------------------------------------------------------
try:
    import pydata_sphinx_theme  # noqa: F401
except ImportError:  # the builtin theme keeps the build working without the extra
    html_theme = "alabaster"
    html_theme_options = {}
else:
    html_theme = "pydata_sphinx_theme"
    html_theme_options = {
        "navigation_with_keys": False,
        "show_prev_next": True,
        "secondary_sidebar_items": ["page-toc"],
    }
html_title = f"skocc {release}"
html_static_path = ["_static"]
html_show_sourcelink = False
