"""Speed against quality for image decoding methods: same classes, seeds and models, one run.

Every method generates ``per_class`` images of every class; image i of every method uses the same
seed, and the methods take turns image by image (rotated order) so drift in machine speed is shared.
Reported per method: wall-clock speedup over plain AR, target forwards per image, τ, acceptance,
TV mass moved by relaxation, class accuracy and Fréchet distance on the features of the in-domain
classifier (not Inception: numbers are comparable within this table only), and the target's NLL of
the generated tokens under the guided distribution.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from tqdm import tqdm

from modalities import report
from modalities.report import MethodTally, rotated

from multispec.methods import DraftModelConfig, GroupConfig, JacobiConfig, Method, NeighborhoodConfig, PromptLookupConfig

from .generation import ImageModels, generate_tokens


_DRAFT, _LANTERN = DraftModelConfig(), NeighborhoodConfig
DEFAULT_METHODS = (
    Method(),
    Method(_DRAFT),
    Method(JacobiConfig()),
    Method(_DRAFT, _LANTERN(delta=0.05)),
    Method(_DRAFT, _LANTERN(delta=0.1)),
    Method(_DRAFT, _LANTERN(delta=0.2)),
    Method(_DRAFT, _LANTERN(delta=0.4)),
    Method(JacobiConfig(), _LANTERN(delta=0.1)),
    Method(_DRAFT, GroupConfig(group_size=4)),
    Method(_DRAFT, GroupConfig(group_size=8)),
    Method(_DRAFT, _LANTERN(delta=0.4, max_ratio=20.0)),  # LANTERN++: p̃(x) <= λ·p(x)
    Method(_DRAFT, _LANTERN(delta=0.4, max_ratio=50.0)),
    Method(_DRAFT, _LANTERN(delta=0.4, max_ratio=100.0)),
    Method(PromptLookupConfig()),
    Method(PromptLookupConfig(), _LANTERN(delta=0.2)),
)


@torch.inference_mode()
def guided_nll(models: ImageModels, tokens: torch.Tensor, labels: list[int], guidance_scale: float) -> float:
    """Mean −log p(x_t) per token under the target's guided, codes-only distribution (T = 1)."""
    total = 0.0
    for grid, label in zip(tokens, labels):
        seq = torch.cat([models.prompt(label)[0], grid.flatten()])
        lm = models.guided(models.target, guidance_scale)
        logp = torch.log_softmax(lm.forward(seq[:-1]).float(), -1)
        total += float(-logp.gather(1, seq[1:, None]).mean())
    return total / len(labels)


def run(models: ImageModels, methods=DEFAULT_METHODS, per_class: int = 8, classes=None, *,
        guidance_scale: float = 3.0, temperature: float = 1.0, top_k: int | None = None, seed: int = 0,
        progress: bool = True) -> list[MethodTally]:
    """Generate with every method; one tally per method (same order), ``outputs`` = (label, grid)."""
    class_ids = [models.class_id(c) for c in (classes or models.class_names)]
    jobs = [(c, i) for i in range(per_class) for c in class_ids]
    tallies = [MethodTally(spec) for spec in methods]
    for j, (label, i) in enumerate(tqdm(jobs, desc="images", disable=not progress, mininterval=5)):
        for m in rotated(len(methods), j):
            spec = methods[m]

            def one(spec=spec, label=label, i=i):
                sample = generate_tokens(models, label, spec, guidance_scale=guidance_scale,
                                         temperature=temperature, top_k=top_k, generator=torch.Generator().manual_seed(seed * 1_000_003 + label * 1009 + i))
                return (label, sample.tokens), sample.stats
            tallies[m].timed(one)
    return tallies


def score(models: ImageModels, results: list[MethodTally], classifier, real_images: torch.Tensor,
          real_labels: torch.Tensor, guidance_scale: float) -> list[dict]:
    """Rows of metrics, one per method; ``real_images`` float [N, 3, H, W] in [−1, 1] (held-out)
    with their labels [N]: FD is taken against their class-balanced statistics, since every method
    generates the same number of images per class."""
    from .metrics import balanced_statistics, class_accuracy, fit_to, frechet_distance

    with torch.inference_mode():
        reference = balanced_statistics(classifier.features(fit_to(classifier, real_images)), real_labels)
    rows = []
    for tally in results:
        labels = torch.tensor([label for label, _ in tally.outputs])
        grids = torch.stack([grid for _, grid in tally.outputs])
        images = fit_to(classifier, models.tokenizer.decode_tensor(grids))
        with torch.inference_mode():
            features = classifier.features(images)
        rows.append({
            "method": tally.spec.name, **_spec_columns(tally.spec),
            "images": len(labels), **tally.speed_columns(results[0].wall_s),
            "forwards_per_image": round(tally.steps / len(labels), 2),
            "class_accuracy": round(float(class_accuracy(classifier, images, labels)), 4),
            "feature_fd": round(float(frechet_distance(features, reference)), 3),
            "nll": round(guided_nll(models, grids, labels.tolist(), guidance_scale), 4),
        })
    return rows


COLUMNS = ("method", "speedup", "forwards_per_image", "tau", "acceptance", "moved_mass_per_token",
           "class_accuracy", "feature_fd", "nll")


def _spec_columns(method: Method) -> dict:
    """The row settings of :meth:`Method.columns`, with the sweep plot's families: the neighbourhood
    rule with a λ cap (LANTERN++) is ``neighborhood λ``, relaxed rules over Jacobi drafts
    ``jacobi+<rule>``."""
    columns = method.columns()
    if columns["rule"] == "neighborhood" and columns.get("max_ratio") is not None:
        columns["rule"] = "neighborhood λ"
    if columns["drafter"] == "jacobi" and columns["rule"] != "exact":  # its own line in the sweep plot
        columns["rule"] = "jacobi+" + columns["rule"]
    return columns


def markdown_table(rows: list[dict]) -> str:
    return report.markdown_table(rows, COLUMNS)


def save_grid(models: ImageModels, results: list[MethodTally], path: Path, scale: int = 3) -> None:
    """PNG: one row per method, one column per class (each method's first image of the class)."""
    from PIL import Image, ImageDraw

    classes = sorted({label for label, _ in results[0].outputs})
    size = models.meta.image_size * scale
    names = [res.spec.name.replace("δ", "d").replace("λ", "lambda") for res in results]  # PIL's default font has no Greek
    label_w = max(150, 8 + 6 * max(map(len, names)))  # the default bitmap font is 6 px a character
    grid = Image.new("RGB", (label_w + size * len(classes), size * len(results)), "white")
    draw = ImageDraw.Draw(grid)
    for r, (res, name) in enumerate(zip(results, names)):
        draw.text((4, r * size + size // 2 - 6), name, fill="black")
        first = {}
        for label, tokens in res.outputs:
            first.setdefault(label, tokens)
        for c, label in enumerate(classes):
            tokens = first[label]
            image = models.tokenizer.decode(tokens[None])[0].resize((size, size), Image.NEAREST)
            grid.paste(image, (label_w + c * size, r * size))
    grid.save(path)


def save_sweep_plot(rows: list[dict], path: Path) -> None:
    """Speedup against class accuracy and feature-FD, one line per rule family."""
    report.save_sweep_plot(
        rows, path, ("class_accuracy", "feature_fd"),
        (("neighborhood", "o"), ("neighborhood λ", "D"), ("group", "s"), ("jacobi+neighborhood", "v"),
         ("exact", "^")),
        "image decoding: speed against quality (in-domain classifier, not Inception)",
        label=lambda r: r["method"].replace("draft+", "").replace("jacobi+", "").replace("neighborhood ", ""))


def write_report(rows: list[dict], out: Path, settings: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=1) + "\n")
    (out / "results.md").write_text(markdown_table(rows))


QUICK_METHODS = (DEFAULT_METHODS[0], DEFAULT_METHODS[1], DEFAULT_METHODS[2], DEFAULT_METHODS[11])


def select_methods(names: str) -> tuple[Method, ...]:
    """Benchmark methods by name, comma-separated (``d=`` and ``lambda=`` stand for ``δ=`` and
    ``λ=``), in the order given; plain is put first if missing (speedups are relative to it)."""
    by_name = {spec.name: spec for spec in DEFAULT_METHODS}
    chosen = []
    for name in (n.strip() for n in names.split(",") if n.strip()):
        name = name.replace("lambda=", "λ=").replace(" d=", " δ=")
        if name not in by_name:
            raise ValueError(f"unknown image method {name!r}; known: {', '.join(by_name)}")
        chosen.append(by_name[name])
    if not chosen or chosen[0].name != "plain":
        chosen = [by_name["plain"], *(spec for spec in chosen if spec.name != "plain")]
    return tuple(chosen)


def run_report(models: ImageModels, out: Path, per_class: int = 8, *, guidance_scale: float = 3.0,
               temperature: float = 1.0, top_k: int | None = None, seed: int = 0, quick: bool = False,
               classifier=None, real=None, methods=None) -> dict:
    """Run, score and write results.json / results.md / grid.png / sweep.png under ``out``.
    ``real`` = (held-out images, labels); default: the bundled classifier and held-out set."""
    if classifier is None or real is None:
        from models import zoo

        from .classifier import load_classifier
        classifier, real = load_classifier(zoo.resolve("image-classifier")), zoo.image_heldout_images()
    methods = methods or (QUICK_METHODS if quick else DEFAULT_METHODS)
    started = time.time()
    results = run(models, methods, per_class, guidance_scale=guidance_scale, temperature=temperature,
                  top_k=top_k, seed=seed)
    rows = score(models, results, classifier, *real, guidance_scale)
    settings = {"per_class": per_class, "classes": len(models.class_names), "guidance_scale": guidance_scale,
                "temperature": temperature, "top_k": top_k, "seed": seed, "threads": torch.get_num_threads(),
                "wall_s": round(time.time() - started, 1), "torch": torch.__version__}
    write_report(rows, out, settings)
    save_grid(models, results, out / "grid.png")
    save_sweep_plot(rows, out / "sweep.png")
    return {"settings": settings, "rows": rows}
