"""Checkpoints: model config + tokenizer + weights + how they were made, in one file.

Format (version 2): a `safetensors <https://github.com/huggingface/safetensors>`_
file. Its tensors are the model's weights (``model.<name>``) and, for checkpoints
written during training, the optimizer's state (``optimizer.<param>.<key>``); its
string metadata holds the format name and version, the model config, the tokenizer,
the training info and the optimizer's hyper-parameters as plain JSON, and a SHA-256
checksum of all of it. Loading never unpickles anything, so a checkpoint from
someone else cannot run code; the checksum is recomputed on every load and a
mismatch (a flipped byte in a weight, an edited header) is an error naming the file.

Written atomically (temporary file, checked, then renamed). A checkpoint always
carries its tokenizer, so a model decodes with its own vocabulary.

Version 1 checkpoints (``torch.save`` pickles) are refused with the command that
converts one, for files from a trusted source::

    python -m snn_compile.models.convert_checkpoint OLD.pt NEW.pt
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Dict, Tuple

import torch

from snn_compile.data import tokenizer_from_dict
from snn_compile.errors import UserError, atomic_path
from snn_compile.models.ann import ANNDecoder
from snn_compile.models.config import ModelConfig
from snn_compile.models.partial import PartialDecoder
from snn_compile.models.spikedecoder import SpikeDecoder

FORMAT = "snn_compile.ckpt"
VERSION = 2
ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")
DEFAULTS = {"default:spikedecoder": "spikedecoder.pt", "default:ann": "ann.pt"}
CONVERT = "python -m snn_compile.models.convert_checkpoint"
_MODEL, _OPT = "model.", "optimizer."
# metadata entries holding JSON (everything but format, version and the checksum)
_JSON_KEYS = ("config", "tokenizer", "train_info", "optimizer")


def build_model(cfg: ModelConfig):
    if cfg.kind == "spikedecoder":
        return SpikeDecoder(cfg)
    if cfg.kind == "partial":
        return PartialDecoder(cfg)
    return ANNDecoder(cfg)


# ------------------------------------------------------------------ the format
def _tensor_bytes(t: torch.Tensor) -> memoryview:
    return memoryview(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())


def checksum(metadata: Dict[str, str], tensors: Dict[str, torch.Tensor]) -> str:
    """SHA-256 over every metadata entry but the checksum and every tensor (name, dtype,
    shape, bytes), in sorted order: the same content always gives the same digest."""
    h = hashlib.sha256(f"{FORMAT}/{VERSION}\n".encode())
    for k in sorted(metadata):
        if k != "sha256":
            h.update(k.encode() + b"\0" + metadata[k].encode() + b"\0")
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}\0{str(t.dtype)}\0{list(t.shape)}\0".encode())
        h.update(_tensor_bytes(t))
    return h.hexdigest()


def _split_optimizer(opt_state: dict) -> Tuple[dict, Dict[str, torch.Tensor]]:
    """An optimizer state_dict → (plain-data part, tensors by ``optimizer.<param>.<key>``)."""
    tensors, values = {}, {}
    for pid, st in opt_state.get("state", {}).items():
        for key, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{_OPT}{pid}.{key}"] = v
            else:
                values.setdefault(str(pid), {})[key] = v
    return {"param_groups": opt_state.get("param_groups", []), "state_values": values}, tensors


def _join_optimizer(plain: dict, tensors: Dict[str, torch.Tensor]) -> dict:
    state: dict = {}
    for name, t in tensors.items():
        pid, key = name[len(_OPT):].split(".", 1)
        state.setdefault(int(pid), {})[key] = t
    for pid, vals in plain.get("state_values", {}).items():
        state.setdefault(int(pid), {}).update(vals)
    groups = []
    for g in plain.get("param_groups", []):
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


def write_raw(path: str, payload: dict) -> None:
    """Write a payload (the dict ``load_raw`` returns) as a checkpoint, atomically.

    The file is read back and its checksum verified in the temporary file before it
    is renamed over ``path``.
    """
    from safetensors.torch import save_file

    tensors = {_MODEL + k: v.detach().cpu().clone().contiguous()
               for k, v in payload["state_dict"].items()}
    meta = {"format": FORMAT, "version": str(VERSION),
            "model_kind": str(payload.get("model_kind", payload["config"].get("kind"))),
            "config": json.dumps(payload["config"]),
            "tokenizer": json.dumps(payload["tokenizer"]),
            "train_info": json.dumps(payload.get("train_info", {}))}
    if payload.get("optimizer") is not None:
        plain, opt_t = _split_optimizer(payload["optimizer"])
        meta["optimizer"] = json.dumps(plain)
        tensors.update({k: v.detach().cpu().clone().contiguous() for k, v in opt_t.items()})
    meta["sha256"] = checksum(meta, tensors)
    with atomic_path(path, what="checkpoint") as tmp:
        save_file(tensors, tmp, metadata=meta)
        _read(tmp, shown=path)       # the complete file, read back before the rename


def save_checkpoint(path: str, model, tokenizer, info: dict, optimizer=None) -> None:
    write_raw(path, {"model_kind": model.cfg.kind, "config": model.cfg.to_dict(),
                     "tokenizer": tokenizer.to_dict(), "state_dict": model.state_dict(),
                     "train_info": info,
                     "optimizer": None if optimizer is None else optimizer.state_dict()})


# -------------------------------------------------------------------- loading
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


def _sniff(path: str) -> str:
    """'safetensors', 'pickle' (torch.save's zip or a legacy pickle), 'qgraph' (a compiled
    graph), 'nir' (HDF5) or 'unknown'."""
    import zipfile

    with open(path, "rb") as f:
        head = f.read(9)
    # safetensors first: its 8-byte header length can begin with any byte, 0x80 included
    # (one header length in 256), which is also the first byte of a pickle
    n = int.from_bytes(head[:8], "little")
    if len(head) == 9 and head[8:9] == b"{" and 0 < n <= os.path.getsize(path) - 8:
        return "safetensors"
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as zf:
                if "graph.json" in zf.namelist():
                    return "qgraph"
        except (zipfile.BadZipFile, OSError):
            pass
        return "pickle"
    if head[:1] == b"\x80":
        return "pickle"
    if head[:8] == b"\x89HDF\r\n\x1a\n":
        return "nir"
    return "unknown"


def is_checkpoint_file(path: str) -> bool:
    """Whether ``path`` looks like a checkpoint this or an earlier snn_compile wrote (read
    from its header only; nothing is loaded): one that training may replace."""
    try:
        kind = _sniff(path)
        if kind == "pickle":          # format 1 (torch.save); not opened, see load_raw
            return True
        if kind != "safetensors":
            return False
        from safetensors import safe_open
        with safe_open(path, framework="pt", device="cpu") as f:
            return (f.metadata() or {}).get("format") == FORMAT
    except Exception:
        return False


def _read(path: str, shown: str) -> dict:
    """Parse, verify and unpack a version-2 file (``shown`` is the name in messages)."""
    from safetensors import safe_open

    def corrupt(why: str) -> UserError:
        return UserError(f"checkpoint {shown} is corrupt or truncated ({why}); restore it "
                         "from a backup (a shipped model: reinstall snn_compile) or retrain it")

    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:         # safetensors' parser (Rust) raises SafetensorError & co
        raise corrupt(f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
                      ) from None
    if meta.get("format") != FORMAT:
        raise UserError(f"{shown} is a safetensors file but not an snn_compile checkpoint "
                        f"(no '{FORMAT}' header); give a checkpoint written by "
                        "`snn-compile train`")
    if meta.get("version") != str(VERSION):
        raise UserError(f"{shown} has checkpoint version {meta.get('version')}, this "
                        f"snn_compile reads version {VERSION}; use the snn_compile that wrote "
                        "it, or retrain the model")
    want = meta.get("sha256")
    if want is None or checksum(meta, tensors) != want:
        raise UserError(f"checkpoint {shown} is corrupt: its content does not match the "
                        "checksum written when it was saved (damaged or edited weights or "
                        "header); restore it from a backup (a shipped model: reinstall "
                        "snn_compile) or retrain it")
    try:
        plain = {k: json.loads(meta[k]) for k in _JSON_KEYS if k in meta}
        payload = {"format": FORMAT, "version": VERSION, "model_kind": meta.get("model_kind"),
                   "config": plain["config"], "tokenizer": plain["tokenizer"],
                   "train_info": plain.get("train_info", {}),
                   "state_dict": {k[len(_MODEL):]: v for k, v in tensors.items()
                                  if k.startswith(_MODEL)}}
    except (KeyError, ValueError) as e:
        raise corrupt(f"bad metadata: {e}") from None
    if "optimizer" in plain:
        payload["optimizer"] = _join_optimizer(
            plain["optimizer"], {k: v for k, v in tensors.items() if k.startswith(_OPT)})
    return payload


def load_raw(spec: str) -> dict:
    """The checkpoint's content as plain data: format, version, model_kind, config,
    tokenizer (dicts), state_dict (name → tensor), train_info and, if saved, optimizer."""
    path = resolve(spec)
    if not os.path.exists(path):
        raise UserError(f"checkpoint {path} does not exist; check the path or train one with "
                        "`snn-compile train -o PATH`")
    if os.path.isdir(path):
        raise UserError(f"{path} is a folder, not a checkpoint file")
    try:
        kind = _sniff(path)
    except OSError as e:
        raise UserError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    if kind == "pickle":
        raise UserError(f"{path} is a PyTorch pickle (an snn_compile checkpoint of format "
                        "version 1, or another program's file); snn_compile does not unpickle "
                        "checkpoints, because loading a pickle can run any code. If it is an "
                        "snn_compile checkpoint from a source you trust, convert it once: "
                        f"{CONVERT} {path} NEW.pt")
    if kind in ("nir", "qgraph"):
        what = "a NIR graph" if kind == "nir" else "a compiled graph (.qgraph)"
        raise UserError(f"{path} is {what}, not a checkpoint; give the checkpoint it was "
                        "made from")
    if kind == "unknown":
        if os.path.getsize(path) == 0:
            raise UserError(f"checkpoint {path} is empty (0 bytes); restore it from a backup "
                            "or retrain it")
        raise UserError(f"{path} is not an snn_compile checkpoint (neither a safetensors "
                        "file nor a known older format); give a checkpoint written by "
                        "`snn-compile train`")
    return _read(path, path)


def load_checkpoint(spec: str) -> Tuple[torch.nn.Module, object, dict]:
    """Load ``spec`` (a path or ``default:spikedecoder``/``default:ann``)."""
    payload = load_raw(spec)
    if not isinstance(payload["config"], dict):
        raise UserError(f"checkpoint {spec}: its config is not a JSON object; the checkpoint "
                        "is corrupt — retrain it")
    try:
        cfg = ModelConfig.from_dict(payload["config"])
    except TypeError as e:
        raise UserError(f"checkpoint {spec}: bad config ({e}); retrain it") from None
    bad = {k: int(v.numel() - torch.isfinite(v).sum()) for k, v in payload["state_dict"].items()
           if v.is_floating_point() and not bool(torch.isfinite(v).all())}
    if bad:
        where = ", ".join(f"{k} ({n})" for k, n in list(bad.items())[:4])
        raise UserError(f"checkpoint {spec} holds NaN or infinite weights ({where}"
                        f"{', ...' if len(bad) > 4 else ''}): it was saved from a diverged "
                        "run; retrain it (a smaller --lr) or use an earlier checkpoint")
    model = build_model(cfg)
    try:
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError) as e:
        raise UserError(f"checkpoint {spec}: weights do not match its config "
                        f"({str(e)[:160]}); retrain it") from None
    model.eval()
    return model, tokenizer_from_dict(payload["tokenizer"]), payload.get("train_info", {})


load_any = load_checkpoint


# ------------------------------------------------------------ old checkpoints
def convert_v1(src: str, dst: str) -> dict:
    """Rewrite a version-1 checkpoint (a ``torch.save`` pickle) as version 2.

    Unpickled with ``torch.load(weights_only=True)``, which refuses anything but
    tensors and plain containers; still, torch 2.3's restricted unpickler is not a
    security boundary for hostile files, so convert only files you trust. The
    weights, optimizer state, config, tokenizer and training info are kept as they
    are (the weights bit for bit).
    """
    import pickle
    import zipfile

    if not os.path.isfile(src):
        raise UserError(f"{src} does not exist or is not a file; give a version-1 checkpoint")
    if _sniff(src) == "safetensors":
        raise UserError(f"{src} is already a version-{VERSION} checkpoint; nothing to convert")
    try:
        payload = torch.load(src, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError,
            OSError, AttributeError, TypeError) as e:
        raise UserError(f"{src} is not a plain version-1 checkpoint, or is corrupt "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:160]}); not "
                        "converted") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT \
            or payload.get("version") != 1:
        raise UserError(f"{src} is not an snn_compile checkpoint of format version 1; not "
                        "converted")
    write_raw(dst, payload)
    return load_raw(dst)


def checksum_of(path: str) -> str:
    """The checksum stored in a version-2 checkpoint's header."""
    from safetensors import safe_open
    with safe_open(path, framework="pt", device="cpu") as f:
        return (f.metadata() or {}).get("sha256", "")
