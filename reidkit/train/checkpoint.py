"""Member checkpoints: one ``.safetensors`` file, weights plus one JSON metadata document.

safetensors never unpickles, so loading a checkpoint from someone else cannot run code.
The resume state (optimizer moments, step counters) goes into a sibling ``.last``
checkpoint in the same format.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from reidkit import __version__
from reidkit.atomic import atomic_path
from reidkit.checkpoint_meta import FORMAT, FORMAT_VERSION, read_member_metadata
from reidkit.train.model import EmbeddingModel, MemberConfig, ReidNet


def _versions() -> dict[str, str]:
    import timm

    return {"reidkit": __version__, "torch": torch.__version__, "timm": timm.__version__}


def save_member(path: str | Path, net: ReidNet, meta: dict[str, Any], extra: dict[str, torch.Tensor] | None = None) -> None:
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "member": net.cfg.to_dict(), **meta, "versions": _versions()}
    tensors = {f"net.{k}": v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    tensors.update({k: v.detach().contiguous().cpu() for k, v in (extra or {}).items()})
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"reidkit": json.dumps(doc, sort_keys=True)})


def load_member(path: str | Path, device: str = "cpu") -> tuple[EmbeddingModel, dict[str, Any]]:
    """Rebuild the member (pretrained=False: weights come from the file) in eval mode."""
    doc = read_member_metadata(path)
    cfg = MemberConfig.from_dict(doc["member"])
    net = ReidNet(cfg, pretrained=False)
    tensors = load_file(str(path), device=device)
    state = {k[4:]: v for k, v in tensors.items() if k.startswith("net.")}
    net.load_state_dict(state, strict=True)
    model = EmbeddingModel(net).to(device).eval()
    return model, doc


def load_tensors(path: str | Path, prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in load_file(str(path)).items() if k.startswith(prefix)}
