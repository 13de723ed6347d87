"""Reproducible emoji image dataset (32x32 or 64x64) for the image modality (class-conditional
generation).

Renders every fully-qualified emoji of ``emoji-test.txt`` with Noto Color Emoji, composites it on
white, crops and centres it, and downscales to ``--size`` (32 by default, 64 for the 16x16-token
models) RGB. Label = emoji group ("Component" and
groups with fewer than ``MIN_PER_CLASS`` images dropped). Held-out split: in each class the ~10%
of emoji with the smallest sha256 of their code points (so every class has held-out images and
the split does not depend on render order or random state).

    python -m models.recipes.image.data [--out runs/image] [--size 64]

writes ``OUT/data.npz`` (images uint8 [N,S,S,3], labels int64 [N], split int64 [N] with
0 = train / 1 = held-out, class_names, codepoints) and the committed manifest
``models/data/image/data_manifest.json`` (``data_manifest_64.json`` at size 64). ``load_dataset(path)`` reads the npz back.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np

FONT_PATH = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")
APT_HINT = "apt-get install fonts-noto-color-emoji unicode-data"
FONT_SIZE = 109  # the only size at which Pillow renders the CBDT bitmaps of Noto Color Emoji
IMAGE_SIZE = 32
MIN_PER_CLASS = 50
HELDOUT_FRACTION = 0.1
DROP_GROUPS = ("Component",)
MANIFEST = Path(__file__).resolve().parents[2] / "data" / "image" / "data_manifest.json"


def parse_emoji_test(path: Path = EMOJI_TEST) -> list[tuple[str, str, str]]:
    """(code points like "1F600 200D", group, name) for every fully-qualified line."""
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: {APT_HINT}")
    out, group = [], None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line and not line.startswith("#"):
            cps, rest = line.split(";", 1)
            status, comment = rest.split("#", 1)
            if status.strip() == "fully-qualified":
                name = comment.strip().split(" ", 2)[-1]  # "😀 E1.0 grinning face" -> name
                out.append((cps.strip(), group, name))
    return out


def split_hash(codepoints: str) -> int:
    return int.from_bytes(hashlib.sha256(codepoints.encode()).digest()[:8], "big")


def render(text: str, font, size: int = IMAGE_SIZE) -> np.ndarray | None:
    """One emoji as uint8 [size, size, 3] on white, cropped to its alpha box and centred."""
    from PIL import Image, ImageDraw

    canvas = Image.new("RGBA", (192, 192), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((16, 16), text, font=font, embedded_color=True)
    box = canvas.getchannel("A").getbbox()
    if box is None:  # the font has no glyph for this sequence
        return None
    glyph = canvas.crop(box)
    side = max(glyph.size)
    square = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    square.alpha_composite(glyph, ((side - glyph.width) // 2, (side - glyph.height) // 2))
    # Composite first, then a Lanczos reduce from ~130 px: good antialiasing, no dark fringes.
    small = square.convert("RGB").resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.asarray(small, dtype=np.uint8)


def manifest_path_for(size: int) -> Path:
    return MANIFEST if size == IMAGE_SIZE else MANIFEST.with_name(f"data_manifest_{size}.json")


def build(out_dir: Path, manifest_path: Path | None = None, size: int = IMAGE_SIZE) -> dict:
    """Render, label, split and write ``out_dir/data.npz`` and the manifest (default: the committed
    one for ``size``, :func:`manifest_path_for`); returns the arrays."""
    try:
        from PIL import ImageFont
    except ImportError as e:  # pragma: no cover
        raise ImportError("Pillow is required: pip install pillow") from e
    if not FONT_PATH.exists():
        raise FileNotFoundError(f"{FONT_PATH} not found: {APT_HINT}")
    font = ImageFont.truetype(str(FONT_PATH), FONT_SIZE)
    entries = [e for e in parse_emoji_test() if e[1] not in DROP_GROUPS]

    rendered, skipped = [], []
    for cps, group, name in entries:
        img = render("".join(chr(int(c, 16)) for c in cps.split()), font, size)
        (skipped if img is None else rendered).append((cps, group, name, img))
    counts = Counter(r[1] for r in rendered)
    class_names = [g for g in dict.fromkeys(r[1] for r in rendered) if counts[g] >= MIN_PER_CLASS]
    rendered = [r for r in rendered if r[1] in class_names]

    labels = np.array([class_names.index(r[1]) for r in rendered], dtype=np.int64)
    split = np.zeros(len(rendered), dtype=np.int64)
    for c in range(len(class_names)):
        idx = np.flatnonzero(labels == c)
        order = sorted(idx, key=lambda i: split_hash(rendered[i][0]))
        split[order[: math.ceil(HELDOUT_FRACTION * len(idx))]] = 1
    data = dict(images=np.stack([r[3] for r in rendered]), labels=labels, split=split,
                class_names=np.array(class_names), codepoints=np.array([r[0] for r in rendered]))

    out_dir.mkdir(parents=True, exist_ok=True)
    npz = out_dir / "data.npz"
    np.savez_compressed(npz, **data)
    write_manifest(manifest_path or manifest_path_for(size), npz, data, n_skipped=len(skipped), size=size)
    return data


def write_manifest(path: Path, npz: Path, data: dict, n_skipped: int, size: int = IMAGE_SIZE) -> None:
    per_class = {name: {"train": int(((data["labels"] == c) & (data["split"] == 0)).sum()),
                        "heldout": int(((data["labels"] == c) & (data["split"] == 1)).sum())}
                 for c, name in enumerate(data["class_names"].tolist())}
    manifest = {
        "source": {"font": f"Noto Color Emoji ({FONT_PATH}, Debian fonts-noto-color-emoji)",
                   "font_licence": "OFL-1.1",
                   "emoji_list": f"{EMOJI_TEST} (Debian unicode-data)",
                   "emoji_list_licence": "Unicode License v3 (Unicode-3.0)",
                   "emoji_test_sha256": hashlib.sha256(EMOJI_TEST.read_bytes()).hexdigest()},
        "recipe": {"font_size": FONT_SIZE, "image_size": size, "background": "white",
                   "resample": "LANCZOS after crop to alpha bbox and centring on a square",
                   "label": "emoji group", "dropped_groups": list(DROP_GROUPS),
                   "min_per_class": MIN_PER_CLASS,
                   "heldout": f"per class, the ceil({HELDOUT_FRACTION}*n) emoji with the smallest "
                              "sha256 of their code-point string"},
        "class_names": data["class_names"].tolist(),
        "counts": {"total": int(len(data["labels"])), "train": int((data["split"] == 0).sum()),
                   "heldout": int((data["split"] == 1).sum()), "not_rendered": n_skipped,
                   "per_class": per_class},
        "npz_sha256": hashlib.sha256(npz.read_bytes()).hexdigest(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")


def load_dataset(path: str | Path) -> dict:
    """Arrays of ``data.npz``: images uint8 [N,S,S,3], labels int64 [N], split int64 [N]
    (0 train, 1 held-out), class_names list[str], codepoints list[str]."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: build it with `python -m models.recipes.image.data`")
    with np.load(path, allow_pickle=False) as z:
        out = {k: z[k] for k in z.files}
    out["class_names"] = out["class_names"].tolist()
    if "codepoints" in out:
        out["codepoints"] = out["codepoints"].tolist()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/image"))
    ap.add_argument("--size", type=int, default=IMAGE_SIZE, help="image side in pixels (32 or 64)")
    ap.add_argument("--manifest", type=Path, default=None, help="default: the committed manifest for --size")
    args = ap.parse_args()
    data = build(args.out, args.manifest, args.size)
    print(f"{len(data['labels'])} images -> {args.out / 'data.npz'}")
    for c, name in enumerate(data["class_names"].tolist()):
        m = data["labels"] == c
        print(f"  {c} {name:20s} train {int((m & (data['split'] == 0)).sum()):5d}  "
              f"held-out {int((m & (data['split'] == 1)).sum()):4d}")


if __name__ == "__main__":
    main()
