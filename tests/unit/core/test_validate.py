"""Shared input checks and the JSON sanitiser, against hand-written cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ltau_md.core.exceptions import DataError
from ltau_md.core.files import to_json_safe
from ltau_md.core.validation import check_frame_offsets


def test_frame_offsets_accepted_and_refused():
    np.testing.assert_array_equal(check_frame_offsets([0, 3, 5], 5), [0, 3, 5])
    assert check_frame_offsets(np.array([0, 2], np.int32)).dtype == np.int64
    for bad, n, msg in (([1, 3], None, "start at 0"), ([0, 3, 3, 5], 5, "increase strictly"),
                        ([0, 3, 4], 5, "end at 4, expected n_atoms = 5"),
                        ([0.0, 2.0], None, "integer"), ([[0, 1]], None, "1-D")):
        with pytest.raises(DataError, match=msg):
            check_frame_offsets(bad, n)
    with pytest.raises(DataError, match=">= 3 entries"):
        check_frame_offsets([0, 4], min_frames=2)


def test_to_json_safe_is_strict_json():
    obj = {"a": np.array([1.0, np.nan, np.inf]), "b": (np.float32(2.5), np.int64(3)),
           "c": [np.bool_(True), {"d": float("-inf")}], "e": "x"}
    out = to_json_safe(obj)
    assert out == {"a": [1.0, None, None], "b": [2.5, 3], "c": [True, {"d": None}], "e": "x"}
    json.dumps(out, allow_nan=False)  # raises on any NaN left
