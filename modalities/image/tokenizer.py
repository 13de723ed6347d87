"""Image <-> token-grid conversion for the image modality, wrapping a trained diffusers ``VQModel``.

Knows nothing about the AR model or decoding: it turns S x S RGB images (S = the VQ's
``sample_size``, or the ``image_size`` asked for: the convolutions take any multiple of the
downsampling, so the 32x32 VQ also tokenises 64x64 images into 16x16) into an [h, w] grid of
codebook ids (row-major when flattened) and back. The codebook table is exposed for neighbour
search (LANTERN latent proximity).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


class ImageTokenizer:
    """A VQ tokenizer: ``encode`` images -> LongTensor [B, h, w], ``decode`` ids -> images.

    Accepted image inputs (``encode``), never resized:
      * a PIL image or a sequence of PIL images (converted to RGB),
      * uint8 tensor / ndarray [B, H, W, 3] (or [H, W, 3]) with values in 0..255,
      * float tensor [B, 3, H, W] (or [3, H, W]) with values in [-1, 1].
    """

    def __init__(self, model, image_size: int | None = None):
        self.model = model.eval()
        k = model.config.num_vq_embeddings
        down = 2 ** (len(model.config.block_out_channels) - 1)
        size = int(image_size or model.config.sample_size)
        if size <= 0 or size % down:
            raise ValueError(f"image size {size} is not a positive multiple of the VQ's downsampling {down}")
        self._image_size, self._grid, self._k = size, (size // down, size // down), k

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu",
                        image_size: int | None = None) -> "ImageTokenizer":
        """Load ``save_pretrained`` output (config.json + safetensors weights only); ``image_size``
        overrides the side the VQ was trained at (its grid scales with it)."""
        from diffusers import VQModel

        folder = Path(folder)
        if not any(folder.glob("*.safetensors")):
            raise FileNotFoundError(f"no .safetensors weights in {folder} (pickle is not loaded)")
        model = VQModel.from_pretrained(folder, use_safetensors=True, low_cpu_mem_usage=False).to(device)
        return cls(model, image_size)

    @property
    def image_size(self) -> int:
        return self._image_size

    @property
    def grid_size(self) -> tuple[int, int]:
        return self._grid

    @property
    def num_tokens(self) -> int:
        return self._grid[0] * self._grid[1]

    @property
    def codebook_size(self) -> int:
        return self._k

    @property
    def codebook(self) -> torch.Tensor:
        """The [K, D] code embedding table (a view of the model's weights; do not modify)."""
        return self.model.quantize.embedding.weight.detach()

    @property
    def device(self) -> torch.device:
        return self.codebook.device

    # -- images -> ids -------------------------------------------------------------------
    def to_tensor(self, images) -> torch.Tensor:
        """Any accepted input -> float [B, 3, H, W] in [-1, 1] on the model's device."""
        if _is_pil(images) or (isinstance(images, (list, tuple)) and images and _is_pil(images[0])):
            pils = [images] if _is_pil(images) else list(images)
            images = np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8) for im in pils])
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(np.ascontiguousarray(images))
        if not torch.is_tensor(images):
            raise ValueError(f"expected PIL images, a uint8 array/tensor [B,H,W,3] or a float tensor "
                             f"[B,3,H,W]; got {type(images).__name__}")
        if images.dtype == torch.uint8:
            if images.dim() == 3:
                images = images[None]
            if images.dim() != 4 or images.shape[-1] != 3:
                raise ValueError(f"uint8 images must be [B,H,W,3] with 3 (RGB) channels last; "
                                 f"got shape {tuple(images.shape)}")
            images = images.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        elif images.is_floating_point():
            if images.dim() == 3:
                images = images[None]
            if images.dim() != 4 or images.shape[1] != 3:
                raise ValueError(f"float images must be [B,3,H,W] with 3 (RGB) channels first; "
                                 f"got shape {tuple(images.shape)}")
        else:
            raise ValueError(f"unsupported image dtype {images.dtype} (use uint8 or float)")
        hw = tuple(images.shape[-2:])
        if hw != (self._image_size, self._image_size):
            raise ValueError(f"expected {self._image_size}x{self._image_size} images, got "
                             f"{hw[0]}x{hw[1]} (resize them first; the tokenizer does not)")
        return images.to(self.device, self.codebook.dtype)

    @torch.no_grad()
    def encode(self, images) -> torch.Tensor:
        """Images (see the class docstring) -> LongTensor [B, h, w] of codebook ids."""
        x = self.to_tensor(images)  # [B,3,H,W]
        z = self.model.encode(x).latents  # [B,D,h,w]
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        return torch.cdist(flat, self.codebook).argmin(1).view(b, h, w)

    # -- ids -> images -------------------------------------------------------------------
    def check_tokens(self, tokens) -> torch.Tensor:
        """tokens [B, h, w] or [B, h*w] (ints) -> LongTensor [B, h, w] on the model's device."""
        tokens = torch.as_tensor(tokens)
        if tokens.is_floating_point() or tokens.dtype == torch.bool:
            raise ValueError(f"token ids must be integers, got {tokens.dtype}")
        h, w = self._grid
        if tokens.dim() == 2:
            if tokens.shape[1] != h * w:
                raise ValueError(f"expected {h * w} tokens per image ({h}x{w} grid), "
                                 f"got {tokens.shape[1]}")
            tokens = tokens.view(-1, h, w)
        elif tokens.dim() != 3 or tuple(tokens.shape[1:]) != (h, w):
            raise ValueError(f"expected tokens [B,{h},{w}] or [B,{h * w}], got {tuple(tokens.shape)}")
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= self._k):
            raise ValueError(f"token ids must be in [0, {self._k}); got range "
                             f"[{int(tokens.min())}, {int(tokens.max())}]")
        return tokens.long().to(self.device)

    @torch.no_grad()
    def decode_tensor(self, tokens) -> torch.Tensor:
        """tokens [B, h, w] or [B, h*w] -> float [B, 3, H, W] in [-1, 1]."""
        ids = self.check_tokens(tokens)
        b, h, w = ids.shape
        z_q = self.codebook[ids.flatten()].view(b, h, w, -1).permute(0, 3, 1, 2)  # [B,D,h,w]
        return self.model.decode(z_q, force_not_quantize=True).sample.clamp(-1, 1)

    def decode(self, tokens) -> list:
        """tokens [B, h, w] or [B, h*w] -> list of B RGB PIL images."""
        from PIL import Image

        x = self.decode_tensor(tokens)
        arr = ((x.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        return [Image.fromarray(a) for a in arr.permute(0, 2, 3, 1).cpu().numpy()]


def _is_pil(x) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        return False
    return isinstance(x, Image.Image)


__all__ = ["ImageTokenizer"]
