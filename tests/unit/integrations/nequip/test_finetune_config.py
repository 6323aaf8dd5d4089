"""derive_config: a fine-tuning config from a user's, its outputs kept inside the run."""

from __future__ import annotations

import copy

from ltau_md.integrations.nequip import toy
from ltau_md.integrations.nequip.finetune import (
    FINETUNE_EMA_DECAY,
    derive_config,
    from_checkpoint,
)


def test_derived_config_replaces_model_data_and_keeps_outputs_in_the_run(tmp_path):
    cfg = toy.tiny_config(tmp_path / "t.xyz", tmp_path / "v.xyz", max_epochs=50,
                          loggers=[{"mode": "train", "out_dir": "/elsewhere/log"}],
                          trainer={"logger": {"_target_": "lightning.pytorch.loggers.CSVLogger",
                                              "save_dir": "/elsewhere/csv"}})
    cfg["data"]["split_dataset"] = {"file_path": "/x.xyz", "train": 10, "val": 2}
    cfg["trainer"]["callbacks"][0]["dirpath"] = "/elsewhere/ckpt"
    before = copy.deepcopy(cfg)
    out = derive_config(cfg, from_checkpoint(tmp_path / "a" / "last.ckpt"), max_epochs=3,
                        lr=0.002, train_file=tmp_path / "new.xyz", val_file=tmp_path / "v.xyz")
    assert cfg == before
    assert out["training_module"]["model"] == {
        "_target_": "nequip.model.ModelFromCheckpoint",
        "checkpoint_path": str((tmp_path / "a" / "last.ckpt").resolve())}
    assert out["training_module"]["optimizer"]["lr"] == 0.002
    assert out["training_module"]["ema_decay"] == FINETUNE_EMA_DECAY
    assert out["trainer"]["max_epochs"] == 3
    assert "split_dataset" not in out["data"]
    assert out["data"]["train_file_path"] == str((tmp_path / "new.xyz").resolve())
    callbacks = out["trainer"]["callbacks"]
    ckpt = [c for c in callbacks if c["_target_"].endswith("ModelCheckpoint")]
    logs = [c for c in callbacks if c["_target_"].endswith("LTAUErrorLogger")]
    assert len(ckpt) == 1 and ckpt[0]["dirpath"] == "${hydra:runtime.output_dir}"
    assert ckpt[0]["every_n_epochs"] == 1 and ckpt[0]["filename"] == "last"
    # the train-mode logger writing to /elsewhere is left out, an eval one added in the run
    assert logs == [{"_target_": "ltau_md.integrations.nequip.LTAUErrorLogger", "mode": "eval",
                     "out_dir": "${hydra:runtime.output_dir}/ltau_log"}]
    assert out["trainer"]["logger"]["save_dir"] == "${hydra:runtime.output_dir}"
    assert "/elsewhere" not in repr(out)


def test_loggers_inside_the_run_are_kept_as_the_user_set_them(tmp_path):
    cfg = toy.tiny_config(tmp_path / "t.xyz", tmp_path / "v.xyz", loggers=[
        {"mode": "eval", "member": 3},
        {"mode": "train", "out_dir": "${hydra:runtime.output_dir}/ltau_log_train"}])
    out = derive_config(cfg, {"_target_": "x"}, max_epochs=1, lr=0.1)
    assert out["trainer"]["callbacks"] == cfg["trainer"]["callbacks"]
