"""scikit-learn's private helpers that skocc uses, imported in one place.

scikit-learn does not promise these names across releases. Every skocc module
imports them from here, so that a release that moves or renames one breaks
this file alone, where it can be fixed once (with a fallback for the older
release, as imbalanced-learn's ``sklearn_compat`` does).
"""

from sklearn.base import _fit_context as fit_context
from sklearn.utils import _safe_indexing as safe_indexing
from sklearn.utils._param_validation import (
    HasMethods,
    Interval,
    StrOptions,
    validate_parameter_constraints,
    validate_params,
)
from sklearn.utils.validation import _check_feature_names as check_feature_names
from sklearn.utils.validation import _num_samples as num_samples

__all__ = [
    "HasMethods",
    "Interval",
    "StrOptions",
    "check_feature_names",
    "fit_context",
    "num_samples",
    "safe_indexing",
    "validate_parameter_constraints",
    "validate_params",
]
