"""Faults never pass silently: with a real dask LocalCluster, a worker killed mid-campaign and a
cluster closed mid-campaign leave the lost systems *not done* (no result file, never an error
record), ``run_is2rs`` exits with "N of M systems not done - rerun to resume", and a rerun
resumes to completion; a script without a ``__main__`` guard gets a clear error."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import dask
import distributed  # noqa: F401  (loads its config defaults before dask.config.set)
import pytest
from ase.calculators.emt import EMT

from ltau_md.workflows.is2rs.data import load_systems
from ltau_md.workflows.is2rs.generate import GeneratorConfig, generate_benchmark
from ltau_md.workflows.is2rs.runner import (
    CampaignIncompleteError,
    RelaxSettings,
    result_path,
    run_campaign,
    run_is2rs,
)

SETTINGS = RelaxSettings(steps=200, reference=None)


@dataclass(frozen=True)
class KillingEMT:
    """EMT whose worker process SIGKILLs itself while relaxing system ``sid`` as long as the
    file ``flag`` exists (a worker lost mid-campaign: OOM killer, node failure)."""

    sid: str
    flag: str

    def __call__(self):
        sid, flag = self.sid, self.flag

        class _EMT(EMT):
            def calculate(self, atoms=None, *args, **kwargs):
                if atoms is not None and atoms.info.get("sid") == sid and Path(flag).exists():
                    os.kill(os.getpid(), signal.SIGKILL)
                super().calculate(atoms, *args, **kwargs)

        return _EMT()


@dataclass(frozen=True)
class SlowEMT:
    """EMT that sleeps ``delay`` s per evaluation, so a campaign is still running when the
    test closes the cluster."""

    delay: float

    def __call__(self):
        delay = self.delay

        class _EMT(EMT):
            def calculate(self, *args, **kwargs):
                time.sleep(delay)
                super().calculate(*args, **kwargs)

        return _EMT()


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "bench"
    generate_benchmark(out, seed=5, n_train=0, n_val=3, splits=("val_id", "val_ood_ads"),
                       cfg=GeneratorConfig(val_frames_per_system=1), progress=False)
    return out


def _files(out, systems):
    return {s.sid for s in systems if result_path(out, s.sid).exists()}


def test_killed_worker_leaves_system_not_done_and_rerun_resumes(bench, tmp_path):
    systems = load_systems(bench)
    target = systems[1].sid
    flag = tmp_path / "kill"
    flag.write_text("")
    out = tmp_path / "camp"
    factory = KillingEMT(target, str(flag))
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        res = run_campaign(systems, factory, out, SETTINGS, n_workers=2, batch_size=1,
                           progress=False)
    assert target in res.not_done and "KilledWorker" in res.not_done[target]
    assert all(r["status"] == "ok" for r in res)  # never an error record for a lost task
    assert target not in _files(out, systems)
    assert _files(out, systems) == {r["sid"] for r in res}
    c = res.counts
    assert c["done"] + c["failed"] + c["not_done"] == c["total"] == len(systems)
    assert c["failed"] == 0 and c["not_done"] >= 1
    # the command-level API reports it and fails, after writing the report of what is done
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), pytest.raises(
            CampaignIncompleteError, match=r"^\d+ of 6 systems not done - rerun to resume"):
        run_is2rs(bench, factory, out, reference=None, steps=200, n_workers=2, batch_size=1,
                  progress=False)
    assert (out / "report.json").exists()
    flag.unlink()
    done_before = {sid: result_path(out, sid).stat().st_mtime_ns for sid in _files(out, systems)}
    again = run_campaign(systems, factory, out, SETTINGS, n_workers=2, progress=False)
    assert again.counts == {"done": 6, "failed": 0, "not_done": 0, "total": 6}
    for sid, mtime in done_before.items():  # finished systems were not recomputed
        assert result_path(out, sid).stat().st_mtime_ns == mtime


def _after_first_result(out: Path, systems, action) -> threading.Thread:
    """A started daemon thread that calls ``action`` once the campaign in ``out`` has written
    its first result (or after 120 s)."""
    def wait_then_act():
        deadline = time.time() + 120
        while time.time() < deadline and not _files(out, systems):
            time.sleep(0.05)
        action()

    thread = threading.Thread(target=wait_then_act, daemon=True)
    thread.start()
    return thread


def test_cluster_closed_mid_campaign_leaves_rest_not_done(bench, tmp_path):
    from distributed import Client, LocalCluster

    systems = load_systems(bench)
    out = tmp_path / "camp"
    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=50)
    client = Client(cluster)
    closer = _after_first_result(out, systems, cluster.close)
    try:
        t0 = time.perf_counter()
        res = run_campaign(systems, SlowEMT(0.03), out, SETTINGS, scheduler=client,
                           batch_size=1, progress=False)
        assert time.perf_counter() - t0 < 120  # the campaign ends, it does not hang
    finally:
        closer.join(timeout=60)
        client.close()
    assert res.counts["not_done"] >= 1 and res.counts["failed"] == 0
    assert all(r["status"] == "ok" for r in res)
    assert not any("Cancelled" in r.get("error", "") for r in res)
    assert _files(out, systems) == {r["sid"] for r in res}
    again = run_campaign(systems, EMT, out, SETTINGS, n_workers=2, progress=False)
    assert again.counts == {"done": 6, "failed": 0, "not_done": 0, "total": 6}


def test_cluster_without_workers_is_said_and_given_up_after_a_bounded_time(
        bench, tmp_path, capfd, monkeypatch):
    """Every worker of an external cluster gone (the scheduler alive): the campaign says so on
    stderr within the note interval, gives up after ``give_up_after`` s with the remaining
    systems not done (it used to wait silently for new workers), and a rerun resumes."""
    from distributed import Client, LocalCluster

    from ltau_md.workflows import _dask

    monkeypatch.setattr(_dask, "NO_WORKERS_NOTE_S", 1.0)
    systems = load_systems(bench)
    out = tmp_path / "camp"
    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=50)
    client = Client(cluster)
    # the scheduler stays; no worker is left
    remover = _after_first_result(out, systems, lambda: cluster.scale(0))
    try:
        t0 = time.perf_counter()
        res = run_campaign(systems, SlowEMT(0.03), out, SETTINGS, scheduler=client,
                           batch_size=1, progress=False, give_up_after=4.0)
        elapsed = time.perf_counter() - t0
    finally:
        remover.join(timeout=60)
        client.close()
        cluster.close()
    assert elapsed < 60  # bounded: it does not wait for workers that never come
    err = capfd.readouterr().err
    assert "no workers for 1 s; giving up after 4 s" in err
    assert res.counts["not_done"] >= 1 and res.counts["failed"] == 0
    assert all("no workers for" in why for why in res.not_done.values())
    again = run_campaign(systems, EMT, out, SETTINGS, n_workers=2, progress=False)
    assert again.counts == {"done": 6, "failed": 0, "not_done": 0, "total": 6}


def test_script_without_main_guard_gets_a_clear_error(tmp_path):
    script = tmp_path / "campaign_script.py"
    script.write_text(textwrap.dedent(f"""
        from ase.build import add_adsorbate, fcc111
        from ase.calculators.emt import EMT
        from ltau_md.workflows.is2rs.data import System, prepare_structure
        from ltau_md.workflows.is2rs.runner import RelaxSettings, run_campaign

        slab = fcc111("Cu", (2, 2, 3), vacuum=6.0)
        layer = slab.get_tags()
        add_adsorbate(slab, "O", 1.5, "fcc")
        slab.set_tags([*[1 if t <= 2 else 0 for t in layer], 2])
        ini = prepare_structure(slab.copy(), "x")
        run_campaign([System("a", "val_id", ini, ini.copy())], EMT, {str(tmp_path / "o")!r},
                     RelaxSettings(reference=None), n_workers=2, progress=False)
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=240, cwd=tmp_path)
    assert proc.returncode != 0
    assert "ClusterStartError" in proc.stderr
    assert 'if __name__ == "__main__":' in proc.stderr


def _busy(seconds: float) -> int:
    end, n = time.perf_counter() + seconds, 0
    while time.perf_counter() < end:
        n += sum(range(200))
    return n


def test_localcluster_workers_run_without_the_statistical_profiler():
    """Our LocalCluster workers do not sample task stacks (dask's profiler, every 10 ms by
    default): a 0.5 s task leaves an empty profile, and the worker config says so."""
    from ltau_md.workflows._dask import WORKER_CONFIG, dask_client

    with dask_client(1) as client:
        assert client.submit(_busy, 0.5, pure=False).result() > 0
        conf = client.run(lambda: {k: dask.config.get(k) for k in WORKER_CONFIG})
        prof = client.profile()
    assert all(c == WORKER_CONFIG for c in conf.values())
    assert prof.get("count", 0) == 0
