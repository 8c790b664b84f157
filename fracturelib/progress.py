"""Progress bars for the long loops outside Keras (scan, bootstrap, Grad-CAM over a dataset,
feature caching): shown when a person runs a notebook, silent in papermill runs and scripts.

The runner sets ``FRACTURELIB_QUIET=1`` for the kernels it starts, so that reports and logs do
not fill with bars; a notebook opened in JupyterLab or Colab shows them.
"""
from __future__ import annotations

import os
import sys

QUIET_ENV = "FRACTURELIB_QUIET"


def enabled() -> bool:
    """True in an interactive notebook kernel not started by the runner.

    Returns:
        True when ``FRACTURELIB_QUIET`` is unset/empty and ``ipykernel`` is loaded, else False.
    """
    return not os.environ.get(QUIET_ENV) and "ipykernel" in sys.modules


def bar(iterable, desc: str = "", total: int | None = None):
    """``iterable`` wrapped in a notebook progress bar when :func:`enabled`, else unchanged.

    Args:
        iterable: what to iterate over.
        desc: label shown beside the bar.
        total: number of items, for iterables without ``len``.

    Returns:
        A ``tqdm.auto`` bar over ``iterable`` (removed when done), or ``iterable`` itself.
    """
    if not enabled():
        return iterable
    from tqdm.auto import tqdm
    return tqdm(iterable, desc=desc, total=total, leave=False)


def keras_verbose() -> int:
    """``verbose`` for ``model.predict``: Keras' own bar when :func:`enabled`, else none.

    Returns:
        1 when :func:`enabled`, else 0.
    """
    return 1 if enabled() else 0
