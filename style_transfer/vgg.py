"""The encoder's weights for --vgg_weights (train.py): torchvision's own ImageNet VGG-16 loader, a
local copy of it, or a seeded random init. No download is attempted: none is possible here."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pasyn.files import UserError, require_file  # noqa: E402

import cnn_adain_model as M  # noqa: E402

CHOICES_HELP = ("imagenet | auto (imagenet when in the torch hub cache, else random with a warning) "
                "| none (random init) | PATH to a VGG-16 .pth")


def imagenet_cache_file():
    """Where torchvision's VGG16_Weights.IMAGENET1K_V1 lies once downloaded (the torch hub cache)."""
    from torchvision.models import VGG16_Weights
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(VGG16_Weights.IMAGENET1K_V1.url).name


def imagenet_features_state():
    """torchvision's ImageNet VGG-16 `features` weights, through its own loader (from the cache)."""
    from torchvision.models import VGG16_Weights, vgg16
    return vgg16(weights=VGG16_Weights.IMAGENET1K_V1).features.state_dict()


def features_state_from_file(path):
    """VGG-16 `features` weights from a local .pth: a whole VGG-16 ("features.0.weight") or its
    features only ("0.weight"), optionally under "state_dict"."""
    path = require_file(path, made_by="your own copy of torchvision's vgg16-397923af.pth")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"cannot read VGG weights {path}: {e}") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else {}
    state = {k[len("features."):] if k.startswith("features.") else k: v for k, v in state.items()}
    if not all(k in state for k in M.VGG_LAYER_NAMES):
        raise UserError(f"{path} is not a VGG-16 state dict (no features.0.weight ... features.10.bias)")
    if tuple(state["0.weight"].shape) != (64, 3, 3, 3) or tuple(state["10.weight"].shape) != (256, 128, 3, 3):
        raise UserError(f"{path} has layers of other shapes than VGG-16's")
    return state


def vgg_features_state(choice):
    """(VGG-16 `features` weights or None for a random init, a description for the checkpoint)."""
    if choice == "none":
        return None, "random init (--vgg_weights none)"
    if choice in ("imagenet", "auto"):
        cached = imagenet_cache_file()
        if cached.exists():
            return imagenet_features_state(), "imagenet"
        if choice == "imagenet":
            raise UserError(f"ImageNet VGG-16 weights are not in the torch hub cache ({cached}) and "
                            "cannot be downloaded here: copy that file there, or pass --vgg_weights PATH or none")
        print(f"warning: no ImageNet VGG-16 weights ({cached} is missing): training with a seeded random-init "
              "encoder; pass --vgg_weights PATH to use a local copy", file=sys.stderr)
        return None, "random init (ImageNet weights unavailable)"
    return features_state_from_file(choice), f"file {choice}"
