"""Load a local weights file into a member's timm backbone, or refuse it in one line.

Accepted: a timm-format state dict for the backbone (``.safetensors``, or a ``.pth``/``.pt``
read with ``torch.load(weights_only=True)``, which never unpickles arbitrary objects), or
the same network saved under another naming (e.g. the original EfficientNet-Lite0 port,
torchvision's MobileNetV2), which timm's own ``remap_state_dict`` matches by order. Every
tensor must then fit in shape; nothing is silently skipped. The one exception is what timm
itself adapts when it loads pretrained weights: a timm-named file saved for another input size
(a ViT's position embedding, Swin's and MaxViT's relative-position tables) goes through the
model's own ``checkpoint_filter_fn``, which resamples those tensors to the member's size.

The file is read against the *whole* timm network (its frame of reference); the parts a
``features_only`` backbone has no use for (classifier, head conv) are then dropped.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from reidkit.errors import ReidkitError
from reidkit.hashing import sha256_file

log = logging.getLogger("reidkit")


def _shape(t: Any) -> str:
    return "x".join(map(str, t.shape)) or "scalar"


def read_state_dict(path: Path) -> dict[str, Any]:
    """Tensors by name, through timm's reader (safetensors, or torch.load with weights_only)."""
    import torch
    from timm.models import load_state_dict

    try:
        sd = load_state_dict(str(path), use_ema=True, device="cpu", weights_only=True)
    except Exception as exc:  # torch/safetensors raise many types for a file that is not a state dict
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ReidkitError(f"--weights {path}: not a readable state dict ({first}); pass a .safetensors, .pth or .pt "
                           "file of tensors") from None
    if not isinstance(sd, dict) or not sd or not all(torch.is_tensor(v) for v in sd.values()):
        raise ReidkitError(f"--weights {path}: holds no state dict of tensors; pass a .safetensors, .pth or .pt file of tensors")
    return sd


def _classifier_prefixes(model: Any) -> tuple[str, ...]:
    names = (model.pretrained_cfg or {}).get("classifier") or ()
    return tuple(f"{n}." for n in ((names,) if isinstance(names, str) else names))


def _timm_filter(model: Any) -> Any:
    """The function timm applies to a pretrained file before loading it into ``model`` (its
    module's ``checkpoint_filter_fn``): it resamples position embeddings and relative-position
    tables to the size the model was built for. None when the model's module has none."""
    import sys

    return getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)


def _whole_model_names(key: str) -> tuple[str, ...]:
    """Where a features-only backbone's tensor may sit in the whole network: at the same name;
    under ``model.`` (getter-style wrappers, e.g. ViT, nest the model); or, where timm's
    FeatureListNet flattened a stage list into its own children (``stages.0`` -> ``stages_0``,
    MaxViT, Swin), with the first name's last ``_`` read back as the ``.`` it replaced."""
    head, _, rest = key.partition(".")
    names = [key, key.removeprefix("model.")]
    if "_" in head:
        names.append(".".join(head.rsplit("_", 1)) + (f".{rest}" if rest else ""))
    return tuple(names)


def load_backbone_weights(backbone: Any, name: str, path: str | Path, model_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load ``path`` into ``backbone`` (timm ``name``, features_only, built with ``model_kwargs``
    such as ``img_size``) or raise ReidkitError.

    Returns what the checkpoint records: the file's name and sha256, and how it was matched.
    """
    import timm
    from timm.models import remap_state_dict

    path = Path(path)
    fix = f"pass weights trained for {name}, or the --backbone they belong to"
    sd = read_state_dict(path)
    # the whole network at the member's size: the naming the file may use, the shapes it must fit
    full = timm.create_model(name, pretrained=False, **(model_kwargs or {}))
    ref = full.state_dict()
    if set(sd) <= set(ref):
        mapped, how = sd, "timm"
        resample = _timm_filter(full)
        if resample is not None and any(tuple(v.shape) != tuple(ref[k].shape) for k, v in sd.items()):
            # a file saved at another input size (position embeddings, window tables): timm's own resampling
            mapped, how = {k: v for k, v in resample(dict(sd), full).items() if k in ref}, "timm, resampled to the input size"
    else:
        if len(sd) > len(ref):
            raise ReidkitError(f"--weights {path} does not fit {name}: the file has {len(sd)} tensors under other names, "
                               f"the model {len(ref)}; {fix}")
        try:
            mapped, how = remap_state_dict(sd, full, allow_reshape=False), "remapped by order"
        except AssertionError as exc:  # timm's way of saying "shape mismatch at tensor k"
            raise ReidkitError(f"--weights {path} does not fit {name}: {str(exc).replace(' Remap failed.', '')}; {fix}") from None
    heads = _classifier_prefixes(full)
    mapped = {k: v for k, v in mapped.items() if not k.startswith(heads)}  # the ImageNet classifier: never used
    for k, v in mapped.items():
        if tuple(v.shape) != tuple(ref[k].shape):
            raise ReidkitError(f"--weights {path} does not fit {name}: {k} is {_shape(v)} in the file, {_shape(ref[k])} in the model; {fix}")

    state, missing = {}, []
    for k in backbone.state_dict():
        src = next((c for c in _whole_model_names(k) if c in mapped), None)
        if src is not None:
            state[k] = mapped[src]
        else:
            missing.append(k)
    if missing:
        raise ReidkitError(f"--weights {path} lacks {len(missing)} of the {name} backbone's tensors (first: {missing[0]}); {fix}")
    backbone.load_state_dict(state, strict=True)
    unused = len(mapped) - len(state)
    info = {"file": path.name, "sha256": sha256_file(path), "match": how, "tensors": len(state)}
    log.info("loaded %d tensors from %s into %s (%s%s)", len(state), path.name, name, how,
             f"; {unused} head tensors not used by the features-only backbone" if unused else "")
    return info


def pretrained_normalisation(name: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The mean/std timm's pretrained config gives ``name`` (None when timm has none)."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None or cfg.mean is None or cfg.std is None:
        return None
    return tuple(cfg.mean), tuple(cfg.std)
