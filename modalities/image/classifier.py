"""The in-domain classifier of the 32x32 emoji images (label = emoji group): its network, and
saving and loading it as config.json + model.safetensors. ``metrics`` scores generated images with
it (class accuracy, a Frechet distance on its features); the recipe that trains it is
``models.recipes.image.classifier``. Knows nothing about decoding or training."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"


@dataclass(frozen=True)
class ClassifierConfig:
    num_classes: int
    channels: tuple[int, ...] = (24, 48, 96)
    feature_dim: int = 128
    image_size: int = 32
    class_names: tuple[str, ...] = ()


class ImageClassifier(nn.Module):
    """Three conv stages (2 convs + BN + ReLU each, 2x2 pooling between) -> global average pool ->
    ``feature_dim`` features -> linear logits. Inputs: float [B,3,32,32] in [-1, 1]."""

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        layers, c_in = [], 3
        for i, c in enumerate(config.channels):
            layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                       nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
            if i < len(config.channels) - 1:
                layers.append(nn.MaxPool2d(2))
            c_in = c
        self.body = nn.Sequential(*layers)
        self.proj = nn.Sequential(nn.Linear(c_in, config.feature_dim), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(config.feature_dim, config.num_classes))

    def check(self, images: torch.Tensor) -> None:
        s = self.config.image_size
        if images.dim() != 4 or tuple(images.shape[1:]) != (3, s, s) or not images.is_floating_point():
            raise ValueError(f"expected float images [B,3,{s},{s}] in [-1,1], got "
                             f"{images.dtype} {tuple(images.shape)}")

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """images float [B,3,32,32] in [-1,1] -> penultimate features [B, feature_dim]."""
        self.check(images)
        return self.proj(self.body(images).mean((2, 3)))

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """images float [B,3,32,32] in [-1,1] -> logits [B, num_classes]."""
        return self.head(self.features(images))

    forward = logits


def save_classifier(model: ImageClassifier, folder: Path, metrics: dict | None = None) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = asdict(model.config)
    (folder / CONFIG_FILE).write_text(json.dumps({**cfg, "metrics": metrics or {}}, indent=1) + "\n")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE))


def load_classifier(folder: str | Path, device: str | torch.device = "cpu") -> ImageClassifier:
    """The classifier saved in ``folder`` (config.json + model.safetensors), in eval mode."""
    folder = Path(folder)
    if not (folder / WEIGHTS_FILE).exists():
        raise FileNotFoundError(f"{folder / WEIGHTS_FILE} not found: train it with "
                                f"`python -m models.recipes.image.classifier`")
    cfg = json.loads((folder / CONFIG_FILE).read_text())
    cfg.pop("metrics", None)
    cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}
    model = ImageClassifier(ClassifierConfig(**cfg))
    model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    return model.to(device).eval()
