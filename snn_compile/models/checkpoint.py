"""Checkpoints: model config + tokenizer + weights + how they were made, in one file.

Written atomically (temporary file, then rename). A checkpoint always carries its
tokenizer, so a model decodes with its own vocabulary.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from typing import Tuple

import torch

from snn_compile.data import tokenizer_from_dict
from snn_compile.errors import UserError, atomic_path
from snn_compile.models.config import ModelConfig

FORMAT = "snn_compile.ckpt"
VERSION = 1
ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")
DEFAULTS = {"default:spikedecoder": "spikedecoder.pt", "default:ann": "ann.pt"}


def build_model(cfg: ModelConfig):
    if cfg.kind == "spikedecoder":
        from snn_compile.models.spikedecoder import SpikeDecoder
        return SpikeDecoder(cfg)
    if cfg.kind == "partial":
        from snn_compile.models.partial import PartialDecoder
        return PartialDecoder(cfg)
    from snn_compile.models.ann import ANNDecoder
    return ANNDecoder(cfg)


def save_checkpoint(path: str, model, tokenizer, info: dict, optimizer=None) -> None:
    payload = {"format": FORMAT, "version": VERSION, "model_kind": model.cfg.kind,
               "config": model.cfg.to_dict(), "tokenizer": tokenizer.to_dict(),
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
               "train_info": info}
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def resolve(spec: str) -> str:
    if spec in DEFAULTS:
        path = os.path.join(ASSETS, DEFAULTS[spec])
        if not os.path.exists(path):
            raise UserError(f"the shipped checkpoint {path} is missing; reinstall snn_compile "
                            "or train one with `snn-compile train`")
        return path
    if spec.startswith("default:"):
        raise UserError(f"unknown default model {spec!r}; use one of {', '.join(DEFAULTS)}")
    return spec


def load_raw(spec: str) -> dict:
    path = resolve(spec)
    if not os.path.exists(path):
        raise UserError(f"checkpoint {path} does not exist; check the path or train one with "
                        "`snn-compile train -o PATH`")
    if os.path.isdir(path):
        raise UserError(f"{path} is a folder, not a checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError,
            OSError) as e:
        raise UserError(f"checkpoint {path} is corrupt or truncated ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:120]}); re-download or retrain it") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError(f"{path} is not an snn_compile checkpoint (no '{FORMAT}' header)")
    if payload.get("version") != VERSION:
        raise UserError(f"{path} has checkpoint version {payload.get('version')}, this "
                        f"snn_compile reads version {VERSION}")
    return payload


def load_checkpoint(spec: str) -> Tuple[torch.nn.Module, object, dict]:
    """Load ``spec`` (a path or ``default:spikedecoder``/``default:ann``)."""
    payload = load_raw(spec)
    cfg = ModelConfig.from_dict(payload["config"])
    model = build_model(cfg)
    try:
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError) as e:
        raise UserError(f"checkpoint {spec}: weights do not match its config ({str(e)[:160]})") from None
    model.eval()
    return model, tokenizer_from_dict(payload["tokenizer"]), payload.get("train_info", {})


load_any = load_checkpoint
