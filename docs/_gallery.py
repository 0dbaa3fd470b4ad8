"""Order of the example gallery: the quick start first, then by file name.

Named in ``sphinx_gallery_conf`` by its import path, so that Sphinx can cache
the configuration (a class defined in conf.py cannot be pickled).
"""

from pathlib import Path

FIRST = ("plot_quickstart.py",)


class QuickstartFirst:
    """Sort key of sphinx-gallery's ``within_subsection_order``."""

    def __init__(self, src_dir):
        self.src_dir = src_dir

    def __call__(self, filename):
        name = Path(filename).name
        return (name not in FIRST, name)

    def __repr__(self):
        return f"{type(self).__name__}()"
