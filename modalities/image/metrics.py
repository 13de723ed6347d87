"""Image quality metrics for the image modality: class accuracy of class-conditional samples,
Frechet distance between feature sets, and PSNR.

The feature extractor is the small in-domain classifier of ``models/recipes/image/classifier.py`` (emoji
groups, 32x32; larger samples are reduced to its size by ``fit_to``), not Inception-v3: Frechet distances computed here are NOT comparable to
published FID numbers, only to each other (same classifier checkpoint, same sample sizes).
Plain torch/numpy; the matrix square root uses a symmetric eigendecomposition.
"""

from __future__ import annotations

import numpy as np
import torch


def fit_to(classifier, images: torch.Tensor) -> torch.Tensor:
    """images float [N,3,S,S] -> [N,3,s,s] at the classifier's side s (antialiased bilinear when
    S != s: the 64x64 samples are scored by the 32x32 classifier, as the real images it was trained
    on were Lanczos-reduced renders)."""
    side = classifier.config.image_size
    if images.shape[-1] == side and images.shape[-2] == side:
        return images
    return torch.nn.functional.interpolate(images.float(), size=(side, side), mode="bilinear",
                                           antialias=True, align_corners=False).clamp(-1, 1)


@torch.no_grad()
def extract_features(classifier, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """images float [N,3,32,32] in [-1,1] -> classifier penultimate features [N, F] (CPU)."""
    dev = next(classifier.parameters()).device
    return torch.cat([classifier.features(images[i:i + batch_size].to(dev)).float().cpu()
                      for i in range(0, len(images), batch_size)])


@torch.no_grad()
def class_accuracy(classifier, images: torch.Tensor, labels, batch_size: int = 256) -> float:
    """Fraction of images [N,3,32,32] (float in [-1,1]) the classifier assigns to labels [N]."""
    labels = torch.as_tensor(labels).long().flatten()
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if len(labels) == 0:
        raise ValueError("class_accuracy of an empty set")
    dev = next(classifier.parameters()).device
    pred = torch.cat([classifier.logits(images[i:i + batch_size].to(dev)).argmax(1).cpu()
                      for i in range(0, len(images), batch_size)])
    return float((pred == labels).float().mean())


def _as_f64(feats) -> np.ndarray:
    x = feats.detach().cpu().double().numpy() if torch.is_tensor(feats) else np.asarray(feats, np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"features must be [N, F] with N >= 2, got shape {x.shape}")
    return x


def feature_statistics(feats) -> tuple[np.ndarray, np.ndarray]:
    """feats [N, F] (tensor or array) -> (mean [F], covariance [F, F]) in float64 (N-1 normalised)."""
    x = _as_f64(feats)
    return x.mean(0), np.cov(x, rowvar=False)


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def balanced_statistics(feats, labels) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) of the equal-weight mixture of the classes in ``feats`` [N, F]: the
    reference for generated sets with the same number of images per class, when the real set is
    imbalanced. μ = mean_c μ_c, Σ = mean_c (Σ_c + μ_c μ_cᵀ) − μ μᵀ."""
    x, labels = _as_f64(feats), np.asarray(torch.as_tensor(labels)).reshape(-1)
    means, seconds = [], []
    for c in np.unique(labels):
        xc = x[labels == c]
        means.append(xc.mean(0))
        seconds.append(xc.T @ xc / len(xc))
    mu = np.mean(means, 0)
    return mu, np.mean(seconds, 0) - np.outer(mu, mu)


def frechet_distance(feats_a, feats_b) -> float:
    """Frechet distance between Gaussians fitted to feats_a [N, F] and feats_b [M, F] (or a
    (mean, covariance) pair, e.g. from :func:`balanced_statistics`):
    ||mu_a - mu_b||^2 + tr(S_a) + tr(S_b) - 2 tr((sqrt(S_a) S_b sqrt(S_a))^(1/2))."""
    mu_a, s_a = feats_a if isinstance(feats_a, tuple) else feature_statistics(feats_a)
    mu_b, s_b = feats_b if isinstance(feats_b, tuple) else feature_statistics(feats_b)
    if mu_a.shape != mu_b.shape:
        raise ValueError(f"feature dims differ: {mu_a.shape[0]} vs {mu_b.shape[0]}")
    root_a = _sqrt_psd(s_a)
    eig = np.linalg.eigvalsh(root_a @ s_b @ root_a)
    tr_covmean = np.sqrt(np.clip(eig, 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * tr_covmean)


def psnr(a, b) -> float:
    """Mean per-image PSNR in dB on the 0..255 scale. a, b: uint8 [N,H,W,3] (arrays or tensors) or
    float [N,3,H,W] in [-1,1]; both in the same format."""
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    scale = (lambda t: t.double()) if a.dtype == torch.uint8 else (lambda t: (t.double() + 1) * 127.5)
    if a.dim() == 3:
        a, b = a[None], b[None]
    mse = ((scale(a) - scale(b)) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return float((10 * torch.log10(255.0 ** 2 / mse)).mean())
