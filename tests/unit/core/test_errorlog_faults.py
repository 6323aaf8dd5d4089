"""A damaged error log is refused with a message that names the damage."""

from __future__ import annotations

import numpy as np
import pytest

from ltau_md.core.confidence import ErrorSummary
from ltau_md.core.errorlog import ErrorLog
from ltau_md.core.exceptions import ArtifactError


def _log(tmp_path, n_epochs=6, n=5):
    log = ErrorLog.create(tmp_path / "log", species=np.full(n, 29),
                          frame_offsets=np.array([0, n]), ref_force_norm=np.ones(n))
    rng = np.random.default_rng(0)
    for _ in range(n_epochs):
        log.append(rng.random(n))
    return log


def test_zero_byte_epoch_file_names_the_file(tmp_path):
    log = _log(tmp_path)
    f = tmp_path / "log" / "member_000" / "epoch_000002.npy"
    f.write_bytes(b"")
    with pytest.raises(ArtifactError, match=r"corrupt epoch file .*epoch_000002\.npy"):
        log.read_epoch(2)
    with pytest.raises(ArtifactError, match="epoch_000002"):
        ErrorSummary.from_logs([ErrorLog.open(tmp_path / "log")])


def test_missing_epoch_in_the_middle_is_refused_everywhere(tmp_path):
    log = _log(tmp_path)
    (tmp_path / "log" / "member_000" / "epoch_000003.npy").unlink()
    log = ErrorLog.open(tmp_path / "log")
    for call in (lambda: log.window(0, 2, None), lambda: log.append(np.ones(5)),
                 lambda: ErrorSummary.from_logs([log], start=2)):
        with pytest.raises(ArtifactError, match=r"epoch\(s\) \[3\] are missing between 0 and 5"):
            call()
