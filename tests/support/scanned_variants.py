"""Make scanned-looking copies of a samples-like folder (image and image-only PDF) for OCR tests.

Usage: python -m tests.support.scanned_variants SRC_DIR OUT_DIR [--dpi 200] [--seed 7]

SRC_DIR holds docs/*.pdf and gt/*.json as in ../shared/samples; OUT_DIR gets docs/ and gt/ with,
per document, `NAME-image.png` (multi-page documents: `.tif`) of kind "scanned-image" and
`NAME-scan.pdf` of kind "scanned-pdf". The ground truth is copied with the kind changed.
"""

from __future__ import annotations

import argparse
import io
import json
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pymupdf
from PIL import Image, ImageFilter

# pymupdf's constructor has no annotations; one typed alias keeps strict mypy quiet.
_open_pdf: Callable[..., Any] = pymupdf.open

IMAGE_KIND = "scanned-image"
PDF_KIND = "scanned-pdf"


@dataclass(frozen=True, slots=True)
class Degradation:
    """How rough the fake scan is; the defaults look like an office scanner on a bad day."""

    dpi: int = 200
    max_angle_deg: float = 1.5
    min_angle_deg: float = 0.4  # below this a scan is effectively straight; test deskew too
    blur_radius: float = 0.7
    noise_sigma: float = 9.0
    jpeg_quality: int = 65


def _rng(seed: int, name: str) -> np.random.Generator:
    # crc32, not hash(): str hashes are salted per process and the output must be reproducible.
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def degrade(image: Image.Image, rng: np.random.Generator, spec: Degradation) -> Image.Image:
    """Rotate slightly, blur, add sensor noise and JPEG artifacts; returns an RGB image."""
    magnitude = rng.uniform(spec.min_angle_deg, spec.max_angle_deg)
    angle = float(magnitude if rng.random() < 0.5 else -magnitude)
    rotated = image.convert("RGB").rotate(
        angle, resample=Image.Resampling.BICUBIC, expand=False, fillcolor=(255, 255, 255)
    )
    blurred = rotated.filter(ImageFilter.GaussianBlur(spec.blur_radius))
    pixels = np.asarray(blurred, dtype=np.float32)
    # Grey noise (same on all channels) like a scanner's sensor, plus a faint paper tint.
    noise = rng.normal(0.0, spec.noise_sigma, size=pixels.shape[:2])[..., None]
    tint = np.array([0.0, -2.0, -6.0], dtype=np.float32)
    noisy = np.clip(pixels + noise + tint, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noisy, "RGB").save(buf, format="JPEG", quality=spec.jpeg_quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality, dpi=(200, 200))
    return buf.getvalue()


def scan_pdf(
    pdf_path: Path, seed: int = 7, spec: Degradation | None = None
) -> tuple[list[Image.Image], list[tuple[float, float]]]:
    """Each page rendered and degraded, with the page sizes in points."""
    spec = spec or Degradation()
    rng = _rng(seed, pdf_path.name)
    images: list[Image.Image] = []
    sizes: list[tuple[float, float]] = []
    with _open_pdf(pdf_path) as doc:
        for page in doc:
            pix = page.get_pixmap(dpi=spec.dpi, alpha=False)
            rendered = Image.frombuffer(
                "RGB", (pix.width, pix.height), pix.samples_mv, "raw", "RGB", pix.stride, 1
            ).copy()
            images.append(degrade(rendered, rng, spec))
            sizes.append((page.rect.width, page.rect.height))
    return images, sizes


def write_image(images: list[Image.Image], out: Path, dpi: int) -> Path:
    """PNG for one page; a multi-page TIFF otherwise (PNG has no pages)."""
    if len(images) == 1:
        path = out.with_suffix(".png")
        images[0].save(path, format="PNG", dpi=(dpi, dpi), compress_level=1)
    else:
        path = out.with_suffix(".tif")
        images[0].save(
            path,
            format="TIFF",
            save_all=True,
            append_images=images[1:],
            dpi=(dpi, dpi),
            compression="tiff_deflate",
        )
    return path


def write_pdf(
    images: list[Image.Image], sizes: list[tuple[float, float]], out: Path, quality: int
) -> Path:
    """An image-only PDF: one full-page JPEG per page, no text layer."""
    path = out.with_suffix(".pdf")
    with _open_pdf() as doc:
        for image, (width, height) in zip(images, sizes, strict=True):
            page = doc.new_page(width=width, height=height)
            page.insert_image(page.rect, stream=_jpeg(image, quality))
        # no_new_id: a fresh random /ID would make every run a different file.
        doc.save(path, garbage=3, deflate=True, no_new_id=True)
    return path


def _gt_copy(gt: dict[str, Any], doc_name: str, kind: str, spec: Degradation) -> dict[str, Any]:
    copied = dict(gt)
    copied["doc"] = doc_name
    copied["kind"] = kind
    copied["notes"] = [
        *gt.get("notes", []),
        f"scanned variant of {gt.get('doc')}: {spec.dpi} dpi, rotated up to "
        f"±{spec.max_angle_deg}°, blur, noise, JPEG q{spec.jpeg_quality}",
    ]
    return copied


def make_variants(
    src_dir: Path,
    out_dir: Path,
    *,
    names: Iterable[str] | None = None,
    seed: int = 7,
    spec: Degradation | None = None,
) -> list[Path]:
    """Write the variants of every (or each named) docs/*.pdf; returns the document paths."""
    spec = spec or Degradation()
    docs_out, gt_out = out_dir / "docs", out_dir / "gt"
    docs_out.mkdir(parents=True, exist_ok=True)
    gt_out.mkdir(parents=True, exist_ok=True)
    wanted = set(names) if names is not None else None
    written: list[Path] = []
    manifest: list[dict[str, Any]] = []
    for pdf_path in sorted((src_dir / "docs").glob("*.pdf")):
        if wanted is not None and pdf_path.name not in wanted and pdf_path.stem not in wanted:
            continue
        gt_path = src_dir / "gt" / f"{pdf_path.stem}.json"
        gt: dict[str, Any] = (
            json.loads(gt_path.read_text(encoding="utf-8")) if gt_path.exists() else {}
        )
        gt.setdefault("doc", pdf_path.name)
        images, sizes = scan_pdf(pdf_path, seed, spec)
        image_path = write_image(images, docs_out / f"{pdf_path.stem}-image", spec.dpi)
        pdf_out = write_pdf(images, sizes, docs_out / f"{pdf_path.stem}-scan", spec.jpeg_quality)
        for path, kind in ((image_path, IMAGE_KIND), (pdf_out, PDF_KIND)):
            copied = _gt_copy(gt, path.name, kind, spec)
            (gt_out / f"{path.stem}.json").write_text(
                json.dumps(copied, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
            )
            manifest.append(
                {"doc": path.name, "source": gt.get("doc"), "kind": kind, "pages": len(images)}
            )
            written.append(path)
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", "utf-8")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("src_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--dpi", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--only", action="append", help="document name or stem (repeatable)")
    args = parser.parse_args(argv)
    written = make_variants(
        args.src_dir, args.out_dir, names=args.only, seed=args.seed, spec=Degradation(dpi=args.dpi)
    )
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
