"""Training guards: NaN/Inf, the best validation loss across --resume, not learning."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from snn_compile.errors import UserError
from snn_compile.models.checkpoint import load_raw, write_raw
from snn_compile.models.config import ModelConfig
from snn_compile.models.train import TrainArgs, train, unigram_loss

TINY = dict(d_model=16, n_layers=1, n_heads=2, context=16, timesteps=2)
ARGS = TrainArgs(steps=10, batch_size=8, lr=1e-2, warmup=2, eval_interval=5, eval_tokens=256,
                 progress=False, learning_guard=False)


@pytest.fixture
def corpus(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("abcab cabca bcabc " * 200)
    return str(p)


def test_unigram_loss_is_the_cross_entropy_of_smoothed_train_frequencies():
    # counts + 1: a 3/4, b 1/4 of the training split; c unseen gets no infinite cost
    train_ids, vocab = np.array([0, 0, 0, 0, 0, 1]), 3
    p = np.array([6, 2, 1]) / 9
    assert unigram_loss(train_ids, np.array([0, 1]), vocab) == \
        pytest.approx(-(math.log(p[0]) + math.log(p[1])) / 2)
    assert math.isfinite(unigram_loss(train_ids, np.array([2]), vocab))


@pytest.mark.parametrize("kind", ["spikedecoder", "ann"])
def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, corpus,
                                                                            kind):
    path = tmp_path / "m.pt"
    train(ModelConfig(kind=kind, **TINY), ARGS, str(path), corpus)
    good = path.read_bytes()
    # lr 1e38: the weights overflow after one step, the next loss or gradient is NaN/Inf
    with pytest.raises(UserError, match=r"not a finite number.*stopped before this step "
                                        r"changed the weights.*left as it was.*--lr"):
        train(ModelConfig(kind=kind, **TINY), dataclasses.replace(ARGS, steps=20, lr=1e38),
              str(path), corpus, resume=True)
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt", "m.pt"]


def test_resume_only_overwrites_the_checkpoint_with_a_better_validation_loss(tmp_path, corpus):
    path = tmp_path / "m.pt"
    first = train(ModelConfig(kind="ann", **TINY), ARGS, str(path), corpus)
    assert first["best_val_loss"] == first["val_loss"] == \
        load_raw(str(path))["train_info"]["best_val_loss"]

    def set_best(value):
        payload = load_raw(str(path))
        payload["train_info"]["best_val_loss"] = value
        write_raw(str(path), payload)
        return path.read_bytes()

    before = set_best(1e-6)           # no evaluation can beat this one
    info = train(ModelConfig(kind="ann", **TINY), dataclasses.replace(ARGS, steps=15),
                 str(path), corpus, resume=True)
    assert info["steps"] == 15 and info["best_val_loss"] == 1e-6
    assert path.read_bytes() == before
    set_best(1e9)                     # any evaluation beats this one
    info = train(ModelConfig(kind="ann", **TINY), dataclasses.replace(ARGS, steps=15),
                 str(path), corpus, resume=True)
    saved = load_raw(str(path))["train_info"]
    assert saved["steps"] == 15 and saved["best_val_loss"] == saved["val_loss"] == \
        info["val_loss"]
    assert [h["step"] for h in saved["history"]] == [5, 10, 15]
    assert (saved["lr"], saved["attention_floor"]) == (ARGS.lr, ARGS.attention_floor)
    with pytest.raises(UserError, match="already at step 15"):
        train(ModelConfig(kind="ann", **TINY), dataclasses.replace(ARGS, steps=15),
              str(path), corpus, resume=True)


def test_a_run_that_does_not_beat_the_unigram_loss_stops_without_a_checkpoint(tmp_path,
                                                                              corpus):
    args = dataclasses.replace(ARGS, steps=8, lr=0.0, eval_interval=2, learning_guard=True)
    with pytest.raises(UserError, match=r"not learning: at step 2 of 8 the validation loss is "
                                        r"[\d.]+ .*unigram loss [\d.]+ of the training split.*"
                                        r"lower --lr.*fewer --layers.*check the data.*"
                                        r"--no-learning-guard"):
        train(ModelConfig(kind="spikedecoder", **TINY), args, str(tmp_path / "m.pt"), corpus)
    assert not (tmp_path / "m.pt").exists()
    info = train(ModelConfig(kind="spikedecoder", **TINY),
                 dataclasses.replace(args, learning_guard=False), str(tmp_path / "m.pt"), corpus)
    assert info["val_loss"] >= info["unigram_loss"] and (tmp_path / "m.pt").exists()


def test_train_cli_has_the_guard_and_ddp_options():
    from snn_compile.cli.main import build_parser
    a = build_parser("train").parse_args(["train", "-o", "m.pt", "--no-learning-guard",
                                          "--nproc", "2"])
    assert a.no_learning_guard and a.nproc == 2


def test_safetensors_header_length_starting_with_a_pickle_byte_is_read(tmp_path):
    """A safetensors header whose length is 128 mod 256 begins with 0x80, a pickle's
    first byte: the checkpoint must still be read as safetensors, not refused."""
    from snn_compile.models.checkpoint import _sniff
    import json
    header = json.dumps({"__metadata__": {"pad": ""}}).encode()
    header += b" " * (0x180 - len(header))            # 384 bytes: first length byte 0x80
    p = tmp_path / "h.pt"
    p.write_bytes(len(header).to_bytes(8, "little") + header)
    assert p.read_bytes()[0] == 0x80
    assert _sniff(str(p)) == "safetensors"
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(b"\x80\x02}q\x00(X\x05\x00\x00\x00")
    assert _sniff(str(legacy)) == "pickle"


def test_attention_floor_penalty_acts_only_below_the_floor():
    import torch
    from snn_compile.models.train import attention_floor_penalty
    silent = torch.zeros(2, 3, requires_grad=True)
    firing = torch.full((2, 3), 0.5)
    pen = attention_floor_penalty({"block0.attn": silent, "block1.attn": firing,
                                   "block0.qkv": silent}, 0.02, 0.1)
    assert abs(float(pen) - 0.1) < 1e-6          # block 0 at rate 0: full hinge; block 1 above
    pen.backward()
    assert float(silent.grad.sum()) < 0          # raising block 0's rate lowers the penalty
