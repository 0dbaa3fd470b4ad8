"""Parameter constraints shared by every skocc estimator (no torch here)."""

from __future__ import annotations

import numpy as np

from ._sklearn_compat import Interval

__all__ = ["StrictInterval"]


class StrictInterval(Interval):
    """scikit-learn's :class:`Interval` that refuses bools.

    ``True`` is an ``Integral`` (and a ``Real``) in Python, so ``Interval``
    accepted ``resolution=True`` or ``batch_size=True`` as 1. Every numeric
    parameter of skocc uses this constraint; its message is ``Interval``'s.
    """

    def is_satisfied_by(self, val):
        return not isinstance(val, (bool, np.bool_)) and super().is_satisfied_by(val)
