"""Vector maths shared by training validation, export and the runtime (numpy only).

It lives at the top of the package so that training can use it without importing the
runtime, and the runtime without importing training.
"""

from __future__ import annotations

import numpy as np


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows to unit length (zero rows stay zero): the one normalisation fusion, QE/DBA and validation share."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
