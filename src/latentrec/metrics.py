"""Accuracy metrics: pure functions, arrays in, float out."""

from __future__ import annotations

import numpy as np

from latentrec.errors import DataError


def _pair(prediction, truth) -> tuple[np.ndarray, np.ndarray]:
    prediction = np.asarray(prediction, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    if prediction.shape != truth.shape:
        raise DataError(f"{prediction.shape[0]} predictions for {truth.shape[0]} ratings")
    return prediction, truth


def rmse(prediction, truth) -> float:
    """Root mean squared error, sqrt(mean((prediction - truth)^2)); nan for no ratings."""
    prediction, truth = _pair(prediction, truth)
    if prediction.size == 0:
        return float("nan")
    return float(np.sqrt(np.mean((prediction - truth) ** 2)))


def mae(prediction, truth) -> float:
    """Mean absolute error, mean(|prediction - truth|); nan for no ratings."""
    prediction, truth = _pair(prediction, truth)
    if prediction.size == 0:
        return float("nan")
    return float(np.mean(np.abs(prediction - truth)))
