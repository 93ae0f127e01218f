"""The array helpers in kernels.py against numpy's own."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from latentrec import kernels


@settings(max_examples=200, deadline=None)
@given(
    hnp.arrays(
        st.sampled_from([np.int32, np.int64, np.float32, np.float64]),
        st.integers(0, 40),
        elements=st.integers(-5, 5),
    )
)
def test_distinct_is_numpys_unique(values):
    got = kernels.distinct(values)
    assert got.dtype == values.dtype
    np.testing.assert_array_equal(got, np.unique(values))


def test_distinct_of_many_distinct_pair_keys():
    keys = np.random.default_rng(0).integers(0, 160_000 * 60_000, 200_000)
    np.testing.assert_array_equal(kernels.distinct(keys), np.unique(keys))
