"""Generated receipt photos with known answers: narrow thermal-printer layouts, photographed.

A till receipt is drawn as a thermal printer prints it (a 58 or 80 mm roll, monospaced type,
the shop name in large type on top), then photographed: laid on a table, seen in perspective,
crumpled, shaded, with low contrast, blur, noise and JPEG artefacts. The answer is what was
printed, in the `receipt` schema's shape.

Usage: python -m tests.support.receipts OUT_DIR [--count 12] [--seed 3]
writes OUT_DIR/docs/receipt-NN.jpg and OUT_DIR/gt/receipt-NN.json (the samples' layout).
"""

from __future__ import annotations

import argparse
import io
import json
import random
from dataclasses import dataclass, field
from datetime import date, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

_CENT = Decimal("0.01")
_FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")

_SHOPS = [
    ("Bäckerei Sonnenkorn", "Lindenstraße 14", "50674 Köln", "de"),
    ("Café Morgenrot", "Kastanienallee 3", "10435 Berlin", "de"),
    ("Getränke Hoffmann KG", "Marktplatz 7", "80331 München", "de"),
    ("Boulangerie du Canal", "12 quai de Jemmapes", "75010 Paris", "fr"),
    ("Epicerie Bleue", "4 rue Sainte-Catherine", "33000 Bordeaux", "fr"),
    ("Corner Deli & Co", "221 King Street", "London EC2V 7HH", "en"),
    ("Green Leaf Grocers", "18 Harbour Road", "Leeds LS1 4AB", "en"),
    ("Bakkerij De Molen", "Prinsengracht 88", "1015 DV Amsterdam", "nl"),
]
_ITEMS = {
    "de": [
        "Brötchen",
        "Croissant",
        "Kaffee groß",
        "Milch 1L",
        "Apfelsaft",
        "Käsebrot",
        "Brezel",
        "Wasser still",
        "Bananen kg",
        "Schokolade",
    ],
    "fr": [
        "Baguette",
        "Croissant",
        "Pain au chocolat",
        "Cafe creme",
        "Eau minerale",
        "Tarte citron",
        "Fromage",
        "Pommes kg",
        "Jus d'orange",
        "Yaourt",
    ],
    "en": [
        "Sourdough loaf",
        "Flat white",
        "Orange juice",
        "Bagel",
        "Cheddar 200g",
        "Bananas kg",
        "Still water",
        "Muffin",
        "Tea",
        "Chocolate bar",
    ],
    "nl": [
        "Bruin brood",
        "Koffie",
        "Appeltaart",
        "Melk 1L",
        "Kaas jong",
        "Stroopwafel",
        "Thee",
        "Sinaasappelsap",
        "Broodje kaas",
        "Water",
    ],
}
# Per language: total label, tax line ("{rate}" filled in), payment words, thanks.
_WORDS = {
    "de": ("SUMME", "MwSt {rate}%", "BAR", "GEGEBEN", "RÜCKGELD", "Vielen Dank!", "Beleg-Nr."),
    "fr": (
        "TOTAL TTC",
        "TVA {rate}%",
        "ESPECES",
        "RENDU",
        "MONNAIE",
        "Merci de votre visite",
        "Ticket",
    ),
    "en": ("TOTAL", "VAT {rate}%", "CASH", "TENDERED", "CHANGE", "Thank you!", "Receipt No."),
    "nl": ("TOTAAL", "BTW {rate}%", "CONTANT", "BETAALD", "WISSELGELD", "Bedankt!", "Bon nr."),
}
_CURRENCY = {"de": "EUR", "fr": "EUR", "en": "GBP", "nl": "EUR"}
_RATES = {"de": Decimal(19), "fr": Decimal(20), "en": Decimal(20), "nl": Decimal(21)}


@dataclass(slots=True)
class SyntheticReceipt:
    """What a generated receipt prints; `expected()` is the `receipt` schema's answer."""

    merchant_name: str
    street: str
    town: str
    language: str
    number: str
    day: date
    at: time
    currency: str
    tax_rate: Decimal
    items: list[tuple[str, int, Decimal]] = field(default_factory=list)  # text, qty, unit

    @property
    def total(self) -> Decimal:
        return sum((Decimal(q) * p for _, q, p in self.items), Decimal(0))

    @property
    def tax(self) -> Decimal:
        # Prices include tax, as on European receipts: the tax is the part of the total.
        return (self.total * self.tax_rate / (100 + self.tax_rate)).quantize(_CENT, ROUND_HALF_UP)

    def expected(self) -> dict[str, Any]:
        return {
            "merchant_name": self.merchant_name,
            "date": self.day.isoformat(),
            "total": str(self.total),
            "tax": str(self.tax),
            "currency": self.currency,
            "receipt_number": self.number,
            "line_items": [
                {
                    "description": text,
                    "quantity": str(qty),
                    "unit_price": str(price),
                    "amount": str(Decimal(qty) * price),
                }
                for text, qty, price in self.items
            ],
        }


def make_receipt(seed: int) -> SyntheticReceipt:
    rng = random.Random(seed)
    name, street, town, language = rng.choice(_SHOPS)
    items = []
    for text in rng.sample(_ITEMS[language], rng.randint(2, 6)):
        qty = rng.choice([1, 1, 1, 2, 3])
        price = Decimal(rng.randint(45, 1299)) / 100
        items.append((text, qty, price))
    return SyntheticReceipt(
        merchant_name=name,
        street=street,
        town=town,
        language=language,
        number=str(rng.randint(1000, 99999)),
        day=date(2025, 1, 1) + timedelta(days=rng.randint(0, 600)),
        at=time(rng.randint(7, 21), rng.randint(0, 59), rng.randint(0, 59)),
        currency=_CURRENCY[language],
        tax_rate=_RATES[language],
        items=items,
    )


def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    path = _FONT_DIR / ("DejaVuSansMono-Bold.ttf" if bold else "DejaVuSansMono.ttf")
    if path.exists():
        return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size=size)


def _money(value: Decimal, language: str) -> str:
    text = f"{value:.2f}"
    return text.replace(".", ",") if language in ("de", "fr", "nl") else text


def _date(receipt: SyntheticReceipt) -> str:
    if receipt.language == "en":
        return receipt.day.strftime("%d/%m/%Y")
    return receipt.day.strftime("%d.%m.%Y" if receipt.language == "de" else "%d/%m/%Y")


def render_receipt(receipt: SyntheticReceipt, *, wide: bool = False) -> Image.Image:
    """The receipt as the printer made it: black on white, 8 dots per mm."""
    columns = 42 if wide else 32
    char_w, line_h = 12, 26
    width = columns * char_w + 40
    body = _font(20)
    lines: list[tuple[str, str, Any]] = []  # (text, alignment, font)
    lines.append((receipt.merchant_name, "center", _font(30, bold=True)))
    lines += [(receipt.street, "center", body), (receipt.town, "center", body), ("", "left", body)]
    words = _WORDS[receipt.language]
    lines.append((f"{_date(receipt)}  {receipt.at:%H:%M:%S}", "left", body))
    lines.append((f"{words[6]} {receipt.number}", "left", body))
    lines.append(("-" * columns, "left", body))
    for text, qty, price in receipt.items:
        amount = _money(Decimal(qty) * price, receipt.language)
        if qty > 1:
            lines.append((text[: columns - 2], "left", body))
            left = f"  {qty} x {_money(price, receipt.language)}"
        else:
            left = text[: columns - len(amount) - 1]
        lines.append((left + " " * (columns - len(left) - len(amount)) + amount, "left", body))
    lines.append(("-" * columns, "left", body))
    total = _money(receipt.total, receipt.language)
    label = f"{words[0]} {receipt.currency}"
    lines.append(
        (label + " " * (columns - len(label) - len(total)) + total, "left", _font(20, bold=True))
    )
    given = (receipt.total / 5).to_integral_value(rounding="ROUND_CEILING") * 5
    for word, value in ((words[3], given), (words[4], given - receipt.total)):
        amount = _money(value, receipt.language)
        lines.append((word + " " * (columns - len(word) - len(amount)) + amount, "left", body))
    tax_label = words[1].format(rate=receipt.tax_rate)
    tax = _money(receipt.tax, receipt.language)
    lines.append((tax_label + " " * (columns - len(tax_label) - len(tax)) + tax, "left", body))
    lines += [("", "left", body), (words[5], "center", body)]
    height = len(lines) * line_h + 60
    image = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(image)
    y = 30
    for text, align, font in lines:
        box = draw.textbbox((0, 0), text or " ", font=font)
        x = (width - (box[2] - box[0])) // 2 if align == "center" else 20
        draw.text((x, y), text, font=font, fill=0)
        y += line_h + (10 if font is not body and align == "center" else 0)
    return image


@dataclass(frozen=True, slots=True)
class Photo:
    """How the receipt was photographed."""

    tilt: float = 0.06  # corner displacement, as a share of the size (perspective)
    crumple: float = 2.5  # amplitude of the paper's waves, in pixels
    shadow: float = 0.45  # darkest part of the shadow across the receipt, 0..1
    contrast: float = 0.55  # ink-to-paper contrast left after fading, 0..1
    blur: float = 1.0
    noise: float = 6.0
    jpeg_quality: int = 70


def photograph(printed: Image.Image, rng: random.Random, photo: Photo | None = None) -> bytes:
    """A phone photo of the printed receipt on a table, as JPEG bytes."""
    spec = photo or Photo()
    paper = np.asarray(printed, dtype=np.float32)
    h, w = paper.shape
    # Crumples: smooth random displacement of the paper.
    waves_x = cv2.GaussianBlur(
        np.random.default_rng(rng.randint(0, 2**31)).normal(0, 1, (h, w)).astype(np.float32),
        (0, 0),
        25,
    )
    waves_y = cv2.GaussianBlur(
        np.random.default_rng(rng.randint(0, 2**31)).normal(0, 1, (h, w)).astype(np.float32),
        (0, 0),
        25,
    )
    scale = spec.crumple / max(float(np.abs(waves_x).max()), 1e-6)
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    paper = cv2.remap(
        paper,
        grid_x + waves_x * scale,
        grid_y + waves_y * scale,
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    # Faded thermal print: ink lighter, paper a little grey.
    ink, white = 255 * (1 - spec.contrast), 235.0
    paper = ink + (paper / 255.0) * (white - ink)
    # On a darker table, seen in perspective.
    margin = int(0.15 * max(h, w))
    canvas_w, canvas_h = w + 2 * margin, h + 2 * margin
    table = np.full((canvas_h, canvas_w), 90.0 + rng.uniform(-20, 20), np.float32)
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    jitter = spec.tilt * max(h, w)
    dst = np.float32(
        [
            [
                x + margin + rng.uniform(-jitter, jitter) * (w / max(h, w)),
                y + margin + rng.uniform(-jitter, jitter) * 0.5,
            ]
            for x, y in src
        ]
    )
    matrix = cv2.getPerspectiveTransform(src, dst)
    warped = cv2.warpPerspective(paper, matrix, (canvas_w, canvas_h), borderValue=-1)
    mask = cv2.warpPerspective(np.ones_like(paper), matrix, (canvas_w, canvas_h))
    scene = np.where(mask > 0.5, warped, table)
    # A shadow falling across: a soft gradient from one side.
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (
        np.cos(angle) * grid_of(canvas_w, canvas_h)[0]
        + np.sin(angle) * grid_of(canvas_w, canvas_h)[1]
    )
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    scene = scene * (1 - spec.shadow * np.clip(ramp - 0.3, 0, 1) / 0.7)
    scene = cv2.GaussianBlur(scene, (0, 0), spec.blur)
    scene += np.random.default_rng(rng.randint(0, 2**31)).normal(0, spec.noise, scene.shape)
    rgb = np.clip(np.stack([scene * 1.02, scene, scene * 0.95], axis=-1), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=spec.jpeg_quality, dpi=(200, 200))
    return buffer.getvalue()


def grid_of(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = np.meshgrid(np.linspace(0, 1, width), np.linspace(0, 1, height))
    return xs.astype(np.float32), ys.astype(np.float32)


def receipt_photo(seed: int, photo: Photo | None = None) -> tuple[bytes, SyntheticReceipt]:
    """One photographed receipt (JPEG) and what it prints."""
    rng = random.Random(seed * 7919 + 1)
    receipt = make_receipt(seed)
    printed = render_receipt(receipt, wide=rng.random() < 0.4)
    return photograph(printed, rng, photo), receipt


def write_set(out_dir: Path, count: int, seed: int) -> list[Path]:
    """`count` receipt photos with ground truth, in the samples' layout."""
    docs, gt = out_dir / "docs", out_dir / "gt"
    docs.mkdir(parents=True, exist_ok=True)
    gt.mkdir(parents=True, exist_ok=True)
    written = []
    for n in range(count):
        data, receipt = receipt_photo(seed + n)
        name = f"receipt-{n + 1:02d}.jpg"
        (docs / name).write_bytes(data)
        expected = receipt.expected()
        fields = {
            "invoice_number": expected["receipt_number"],
            "date": expected["date"],
            "total": expected["total"],
            "currency": expected["currency"],
            "vendor_name": expected["merchant_name"],
            "tax": expected["tax"],
        }
        record = {
            "doc": name,
            "source": "generated:tests.support.receipts",
            "kind": "receipt-photo",
            "pages": 1,
            "fields": fields,
            "line_items": expected["line_items"],
            "extra": {"language": receipt.language, "seed": seed + n},
        }
        (gt / f"receipt-{n + 1:02d}.json").write_text(
            json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        written.append(docs / name)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--count", type=int, default=12)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    for path in write_set(args.out_dir, args.count, args.seed):
        print(path)


if __name__ == "__main__":
    main()
