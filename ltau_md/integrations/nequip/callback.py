"""Lightning callback that logs per-atom force errors of every training atom during
``nequip-train`` (LTAU Algorithm 1).

Enable it from an ordinary nequip config::

    trainer:
      callbacks:
        - _target_: ltau_md.integrations.nequip.LTAUErrorLogger
          out_dir: ${hydra:runtime.output_dir}/ltau_log   # the default
          mode: eval                                       # or "train"

Modes
-----
``eval`` (default, the paper's Algorithm 1): at the end of every training epoch, after
validation, every training atom is evaluated once more with the weights that would be
deployed at that point: the EMA weights when nequip's ``EMALightningModule`` is used (swapped in
exactly like nequip does for validation, and swapped back afterwards), else the raw weights.
The model is put in ``eval()`` mode for that pass, like in validation. Costs one extra forward
+ force (backward) pass over the training set per epoch, without optimizer work.

``train``: errors are taken from the training forward passes themselves (no extra pass). They
are the raw (non-EMA) weights of the step that processed each batch, before that step's update,
i.e. what the training loss sees. Shuffled batches are mapped to global atom indices through a
per-frame index field (``ltau_frame_index``) that the callback adds by wrapping the datamodule's
training dataset in :class:`~ltau_md.integrations.nequip._data.IndexedDataset`. Every training atom
must be
visited in every epoch (the default nequip/Lightning data loading); atoms visited more than once
in an epoch (e.g. DistributedSampler padding) get the mean of their errors.

Atom order of the log: training-dataset order, frames concatenated, atoms in stored order. The
training frames are also written to ``OUT_DIR/frames.traj`` (float64 ASE trajectory) so that
descriptor extraction reproduces that order and the log's fingerprint exactly.

Frames without forces
---------------------
Every training frame needs reference forces. The callback checks all of them in ``setup``,
Lightning's first hook with the data (before any training step), and raises ``DataError``
naming the frame. ``nequip-train`` however computes the dataset statistics that configs use
(``${training_data_stats:forces_rms}``) *before* it starts Lightning, i.e. before any callback
hook can run, so with energies-only frames nequip fails first with ``KeyError: 'forces'``.
Put :class:`~ltau_md.integrations.nequip.transforms.RequireForces` first in
``data.transforms`` (the example configs do) to get a ``DataError`` there instead::

    data:
      transforms:
        - _target_: ltau_md.integrations.nequip.transforms.RequireForces
        - ...

Multi-process DDP: each rank evaluates (``eval``) or collects (``train``) its share; per-atom
sums and visit counts are all-reduced, and rank 0 writes the epoch. Resuming ``nequip-train`` from
a checkpoint continues the log at the trainer's epoch number (later epochs of an abandoned
trajectory are replaced); in ``eval`` mode, a single epoch missing because the run stopped
between checkpointing and logging is re-computed from the restored weights.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import lightning
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from nequip.data import AtomicDataDict

from ltau_md.core.errorlog import FRAMES_FILE, VALIDATION_FILE, ErrorLog
from ltau_md.core.exceptions import LTAUError
from ltau_md.integrations.nequip._data import (
    FRAME_INDEX_KEY,
    IndexedDataset,
    TrainingSetInfo,
    frame_to_atoms,
    frames_info,
    unwrap,
    write_frames,
)

__all__ = [
    "LTAUErrorLogger",
]

log = logging.getLogger(__name__)

Mode = Literal["eval", "train"]


def _default_out_dir(trainer: lightning.Trainer) -> Path:
    """``<hydra run dir>/ltau_log`` inside nequip-train, else ``<default_root_dir>/ltau_log``."""
    with contextlib.suppress(Exception):
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return Path(HydraConfig.get().runtime.output_dir) / "ltau_log"
    return Path(trainer.default_root_dir) / "ltau_log"


def _graph_models(pl_module: lightning.LightningModule) -> list[torch.nn.Module]:
    model = getattr(pl_module, "model", None)
    if isinstance(model, torch.nn.ModuleDict):
        return list(model.values())
    return [model] if model is not None else []


class LTAUErrorLogger(Callback):
    """Log per-atom force-error norms |F_ref - F_model| (eV/A) of all training atoms per epoch.

    Args:
        out_dir: error-log directory (default ``${hydra:runtime.output_dir}/ltau_log``).
        mode: ``"eval"`` (extra pass with the deployed/EMA weights at each epoch end) or
            ``"train"`` (errors of the training forward passes, no extra pass).
        member: ensemble-member id under which this run's epochs are stored.
        batch_size: frames per batch of the ``eval`` pass (default: the training batch size).
        log_components: also store the signed per-component errors F_ref - F_model (N, 3).
        num_workers: DataLoader workers of the ``eval`` pass.
        cache_graphs: keep the transformed training frames (with neighbour lists) in memory
            after the first ``eval`` pass instead of rebuilding them every epoch.
        save_frames: write the training frames to ``out_dir/frames.traj`` and the validation
            frames to ``out_dir/validation.traj`` (the held-out frames ``ltau-md fit`` fits the
            in-domain alarm statistics on); the training frames let ``ltau-md fit`` compute
            descriptors in the logged order.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike | None = None,
        mode: Mode = "eval",
        member: int = 0,
        batch_size: int | None = None,
        log_components: bool = False,
        num_workers: int = 0,
        cache_graphs: bool = False,
        save_frames: bool = True,
    ):
        super().__init__()
        if mode not in ("eval", "train"):
            raise ValueError(f"mode must be 'eval' or 'train', got {mode!r}")
        if int(member) < 0:
            raise ValueError(f"member must be >= 0, got {member}")
        if batch_size is not None and int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.mode: Mode = mode
        self.member = int(member)
        self.batch_size = None if batch_size is None else int(batch_size)
        self.log_components = bool(log_components)
        self.num_workers = int(num_workers)
        self.cache_graphs = bool(cache_graphs)
        self.save_frames = bool(save_frames)
        # state set in setup()
        self.info: TrainingSetInfo | None = None
        self.log: ErrorLog | None = None
        self._dataset: Any = None
        self._cache: list[AtomicDataDict.Type] | None = None
        self._hook: Any = None
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None
        self._buf: torch.Tensor | None = None
        self._offsets_t: torch.Tensor | None = None
        self._sizes_t: torch.Tensor | None = None
        #: seconds spent in the extra ``eval`` pass, per logged epoch
        self.eval_seconds: list[float] = []
        #: visit count per atom of the last logged epoch (all ranks summed)
        self.last_visits: np.ndarray | None = None

    # ------------------------------------------------------------------ helpers
    @property
    def _n_cols(self) -> int:
        return 5 if self.log_components else 2

    def _train_dataset_holder(self, trainer: lightning.Trainer) -> tuple[Any, Any, Any]:
        """(container, key, dataset) such that ``container[key]`` is the training dataset."""
        dm = trainer.datamodule
        if dm is None or not hasattr(dm, "train_dataset"):
            raise LTAUError(
                "LTAUErrorLogger needs a LightningDataModule with a `train_dataset` (as "
                "nequip-train's datamodules have); none was found on the trainer"
            )
        ds = dm.train_dataset
        if not isinstance(ds, torch.utils.data.Dataset) and hasattr(ds, "__len__"):
            # nequip keeps a (List/ListConfig) of training datasets; only one is supported
            if len(ds) != 1:
                raise LTAUError(f"expected exactly one training dataset, found {len(ds)}")
            dm.train_dataset = ds = [ds[0]]
            return ds, 0, ds[0]
        return dm, "train_dataset", ds

    def _type_names(self, pl_module: lightning.LightningModule) -> list[str] | None:
        for m in _graph_models(pl_module):
            tn = getattr(m, "type_names", None)
            if tn:
                return list(tn)
        return None

    def _world(self, trainer: lightning.Trainer) -> tuple[int, int]:
        return int(trainer.global_rank), int(trainer.world_size)

    def _all_reduce(self, t: torch.Tensor, trainer: lightning.Trainer) -> torch.Tensor:
        if trainer.world_size > 1 and torch.distributed.is_available() \
                and torch.distributed.is_initialized():
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
        return t

    def _broadcast(self, obj: Any, trainer: lightning.Trainer) -> Any:
        if trainer.world_size > 1:
            return trainer.strategy.broadcast(obj, src=0)
        return obj

    # ------------------------------------------------------------------ setup
    def setup(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule,
              stage: str) -> None:
        if stage != "fit":
            return
        if self.out_dir is None:
            self.out_dir = _default_out_dir(trainer)
        holder, key, dataset = self._train_dataset_holder(trainer)
        self._dataset = unwrap(dataset)
        if self.mode == "train" and not isinstance(dataset, IndexedDataset):
            holder[key] = IndexedDataset(dataset)
        n_frames = len(self._dataset)
        frames = (self._dataset[i] for i in range(n_frames))
        self.info = frames_info(frames, self._type_names(pl_module))
        if self.batch_size is None:
            cfg = getattr(trainer.datamodule, "train_dataloader_config", None) or {}
            self.batch_size = int(cfg.get("batch_size", 16) or 16)
        self._offsets_t = torch.as_tensor(self.info.frame_offsets, dtype=torch.long)
        self._sizes_t = self._offsets_t[1:] - self._offsets_t[:-1]
        error: Exception | None = None
        if trainer.is_global_zero:
            try:
                self.log = ErrorLog.create(
                    self.out_dir, species=self.info.species,
                    frame_offsets=self.info.frame_offsets,
                    ref_force_norm=self.info.ref_force_norm, fingerprint=self.info.fingerprint,
                    exist_ok=True,
                )
                frames_path = self.out_dir / FRAMES_FILE
                if self.save_frames and not frames_path.exists():
                    write_frames(frames_path, self._iter_atoms())
                val_path = self.out_dir / VALIDATION_FILE
                if self.save_frames and not val_path.exists():
                    val = self._validation_atoms(trainer, pl_module)
                    if val:
                        write_frames(val_path, val)
            except Exception as exc:  # re-raised below, after telling the other ranks
                error = exc
            else:
                log.info("LTAU error log (%s mode, member %d, %d atoms in %d frames) at %s",
                         self.mode, self.member, self.info.n_atoms, self.info.n_frames,
                         self.out_dir)
        # every rank must fail together (else the others block in the next collective)
        msg = self._broadcast(None if error is None else f"{type(error).__name__}: {error}",
                              trainer)
        if error is not None:
            raise error
        if msg is not None:
            raise LTAUError(f"rank 0 could not open the error log: {msg}")

    def _validation_atoms(self, trainer: lightning.Trainer,
                          pl_module: lightning.LightningModule) -> list:
        """The datamodule's validation frames (all validation datasets) as ASE Atoms."""
        ds = getattr(trainer.datamodule, "val_dataset", None)
        if ds is None:
            return []
        sets = [ds] if isinstance(ds, torch.utils.data.Dataset) else list(ds)
        out = []
        for d in sets:
            d = unwrap(d)
            frames = [d[i] for i in range(len(d))]
            if not frames:
                continue
            info = frames_info(frames, self._type_names(pl_module))
            off = info.frame_offsets
            out += [frame_to_atoms(f, info.species[off[i]:off[i + 1]])
                    for i, f in enumerate(frames)]
        return out

    def _iter_atoms(self) -> Iterator:
        assert self.info is not None
        off = self.info.frame_offsets
        for i in range(len(self._dataset)):
            yield frame_to_atoms(self._dataset[i], self.info.species[off[i]:off[i + 1]])

    def teardown(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule,
                 stage: str) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self._pending = None
        self._cache = None
        self._buf = None

    # ------------------------------------------------------------------ resume
    def on_train_start(self, trainer: lightning.Trainer,
                       pl_module: lightning.LightningModule) -> None:
        cur = int(trainer.current_epoch)
        decision: tuple[str, str] = ("ok", "")
        if trainer.is_global_zero:
            assert self.log is not None
            have = self.log.epochs(self.member)
            nxt = have[-1] + 1 if have else 0
            if cur == nxt + 1 and self.mode == "eval":
                decision = ("fill", "")
            elif cur > nxt:
                held = f"epochs up to {nxt - 1}" if have else "no epochs"
                decision = ("error", (
                    f"training starts at epoch {cur} but the error log at {self.out_dir} "
                    f"(member {self.member}) has {held}: "
                    "logging would leave a gap. Resume with the original run directory / "
                    "out_dir, or remove the LTAUErrorLogger callback for this run."
                ))
        decision = self._broadcast(decision, trainer)
        if decision[0] == "error":
            raise LTAUError(decision[1])
        if decision[0] == "fill":
            log.info("re-computing missing epoch %d of the LTAU error log from the restored "
                     "weights", cur - 1)
            self._log_eval_epoch(trainer, pl_module, cur - 1)
        if self.mode == "train" and self._hook is None:
            self._hook = pl_module.register_forward_hook(self._forward_hook)

    # ------------------------------------------------------------------ train mode
    def on_train_epoch_start(self, trainer: lightning.Trainer,
                             pl_module: lightning.LightningModule) -> None:
        if self.mode == "train":
            assert self.info is not None
            self._buf = torch.zeros((self.info.n_atoms, self._n_cols), dtype=torch.float64,
                                    device=pl_module.device)
            self._pending = None

    def _global_atom_index(self, batch: AtomicDataDict.Type) -> torch.Tensor:
        if FRAME_INDEX_KEY not in batch:
            raise LTAUError(
                f"training batch has no '{FRAME_INDEX_KEY}' field: mode='train' needs the "
                "datamodule's training dataset to be wrapped by the callback at setup (was the "
                "train dataloader built before the callback's setup?)"
            )
        dev = batch[AtomicDataDict.POSITIONS_KEY].device
        assert self._offsets_t is not None and self._sizes_t is not None
        if self._offsets_t.device != dev:
            self._offsets_t = self._offsets_t.to(dev)
            self._sizes_t = self._sizes_t.to(dev)
        fidx = batch[FRAME_INDEX_KEY].reshape(-1)
        batch = AtomicDataDict.with_batch_(dict(batch))
        n_nodes = batch[AtomicDataDict.NUM_NODES_KEY].reshape(-1)
        if not torch.equal(self._sizes_t[fidx], n_nodes):
            raise LTAUError("training batch frame sizes differ from the training dataset's "
                            "(frames were modified after the callback's setup)")
        first = torch.cumsum(n_nodes, 0) - n_nodes
        b = batch[AtomicDataDict.BATCH_KEY]
        local = torch.arange(b.shape[0], device=dev) - first[b]
        return self._offsets_t[fidx][b] + local

    def on_train_batch_start(self, trainer: lightning.Trainer,
                             pl_module: lightning.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self.mode != "train":
            return
        if AtomicDataDict.FORCE_KEY not in batch:
            raise LTAUError(f"training batch {batch_idx} has no '{AtomicDataDict.FORCE_KEY}'")
        self._pending = (self._global_atom_index(batch),
                         batch[AtomicDataDict.FORCE_KEY].detach().clone())

    def on_train_batch_end(self, trainer: lightning.Trainer,
                           pl_module: lightning.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._pending = None

    def _forward_hook(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        # only the first forward of a training step (module in train mode) is recorded
        if self._pending is None or self._buf is None or not module.training:
            return
        pending, self._pending = self._pending, None
        idx, ref = pending
        if not isinstance(output, dict) or AtomicDataDict.FORCE_KEY not in output:
            raise LTAUError(f"model output has no '{AtomicDataDict.FORCE_KEY}' field")
        pred = output[AtomicDataDict.FORCE_KEY].detach()
        self._buf.index_add_(0, idx, self._rows(ref, pred))

    def _rows(self, ref: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        diff = ref.to(torch.float64) - pred.to(torch.float64)
        cols = [torch.linalg.vector_norm(diff, dim=-1, keepdim=True), torch.ones_like(diff[:, :1])]
        if self.log_components:
            cols.append(diff)
        return torch.cat(cols, dim=1).to(self._buf.device if self._buf is not None else ref.device)

    # ------------------------------------------------------------------ eval mode
    @contextlib.contextmanager
    def _deployed_weights(self, pl_module: lightning.LightningModule) -> Iterator[None]:
        """EMA weights swapped into the model (as nequip does for validation) and eval()."""
        ema = getattr(pl_module, "ema", None)
        swap = ema is not None and hasattr(ema, "swap_parameters") \
            and getattr(ema, "is_holding_ema_weights", False)
        modes = {m: m.training for m in pl_module.modules()}
        if swap:
            ema.swap_parameters(pl_module.model)
        try:
            pl_module.eval()
            yield
        finally:
            if swap:
                ema.swap_parameters(pl_module.model)
            for m, training in modes.items():
                m.training = training

    def _eval_batches(self, frame_ids: np.ndarray) -> Iterator[AtomicDataDict.Type]:
        if self.cache_graphs and self._cache is not None:
            yield from self._cache
            return
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(self._dataset, frame_ids.tolist()),
            batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers,
            collate_fn=AtomicDataDict.batched_from_list,
        )
        cache: list[AtomicDataDict.Type] = []
        for batch in loader:
            if self.cache_graphs:
                cache.append(batch)
            yield batch
        if self.cache_graphs:
            self._cache = cache

    def _eval_pass(self, trainer: lightning.Trainer,
                   pl_module: lightning.LightningModule) -> torch.Tensor:
        """(N, C) sums [error, count, (components)] of this rank's shard, on the module device."""
        assert self.info is not None
        rank, world = self._world(trainer)
        shard = np.array_split(np.arange(self.info.n_frames), world)[rank]
        dev = pl_module.device
        buf = torch.zeros((self.info.n_atoms, self._n_cols), dtype=torch.float64, device=dev)
        if shard.size:
            off = self.info.frame_offsets
            pos = int(off[shard[0]])
            stop = int(off[shard[-1] + 1])
            with self._deployed_weights(pl_module):
                for batch in self._eval_batches(shard):
                    batch = AtomicDataDict.to_(dict(batch), dev)
                    ref = batch[AtomicDataDict.FORCE_KEY]
                    out = pl_module(batch)
                    pred = out[AtomicDataDict.FORCE_KEY].detach()
                    n = ref.shape[0]
                    buf[pos:pos + n] = self._rows(ref.detach(), pred).to(dev)
                    pos += n
                    del out
            if pos != stop:
                raise LTAUError(f"evaluated {pos - int(off[shard[0]])} atoms, expected "
                                f"{stop - int(off[shard[0]])}")
        return buf

    def _log_eval_epoch(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule,
                        epoch: int) -> None:
        t0 = time.perf_counter()
        buf = self._eval_pass(trainer, pl_module)
        self._write(trainer, buf, epoch)
        self.eval_seconds.append(time.perf_counter() - t0)

    # ------------------------------------------------------------------ epoch end
    def on_train_epoch_end(self, trainer: lightning.Trainer,
                           pl_module: lightning.LightningModule) -> None:
        epoch = int(trainer.current_epoch)
        if self.mode == "eval":
            self._log_eval_epoch(trainer, pl_module, epoch)
            return
        if self._buf is None:
            return
        buf, self._buf = self._buf, None
        self._pending = None
        self._write(trainer, buf, epoch)

    def _write(self, trainer: lightning.Trainer, buf: torch.Tensor, epoch: int) -> None:
        buf = self._all_reduce(buf, trainer).cpu().numpy()
        counts = buf[:, 1]
        missing = np.flatnonzero(counts == 0)
        self.last_visits = counts.astype(np.int64)
        if missing.size:
            msg = (f"LTAU error log ({self.mode} mode): {missing.size} of {counts.size} training "
                   f"atoms were not visited in epoch {epoch} (first: {missing[:5].tolist()}); "
                   "mode='train' needs every training frame in every epoch (check drop_last, "
                   "limit_train_batches, the sampler, or a mid-epoch resume), or use mode='eval'")
            stopping = trainer.should_stop or (
                trainer.max_steps is not None and trainer.max_steps > 0
                and trainer.global_step >= trainer.max_steps)
            if stopping:
                warnings.warn(msg + "; the incomplete last epoch is not logged", stacklevel=2)
                return
            raise LTAUError(msg)
        if not trainer.is_global_zero:
            return
        assert self.log is not None
        errors = buf[:, 0] / counts
        comps = buf[:, 2:5] / counts[:, None] if self.log_components else None
        self.log.append(errors, member=self.member, epoch=epoch, components=comps)
