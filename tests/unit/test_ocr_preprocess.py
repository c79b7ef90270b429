"""OCR pieces on drawn pages: the clean-up steps (glyph size, skew, rulings, shaded bars),
Tesseract's TSV, strip cuts, and a whole page read."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from pipeline import ocr


def _text_image(angle: float = 0.0, table: bool = False) -> np.ndarray[Any, Any]:
    image = Image.new("L", (1700, 1200), 255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=36)
    for n in range(12):
        draw.text((100, 80 + 80 * n), f"Line {n} of sample text 123,45 EUR", font=font, fill=0)
    if table:
        for y in (60, 140, 220):
            draw.line((80, y, 1600, y), fill=0, width=4)
        for x in (80, 800, 1600):
            draw.line((x, 60, x, 220), fill=0, width=4)
    rotated = image.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=255)
    return np.asarray(rotated, dtype=np.uint8)


def test_glyph_height_counts_letters_inside_a_ruled_box() -> None:
    gray = _text_image()
    boxed = Image.fromarray(gray)
    ImageDraw.Draw(boxed).rectangle((60, 60, 1650, 1100), outline=0, width=4)
    height = ocr.glyph_height(gray)
    # 36 px type: a mix of x-height and capitals, measured on a 1,500 px copy, scaled back.
    assert height is not None and 20 < height < 30
    assert ocr.glyph_height(np.asarray(boxed, dtype=np.uint8)) == height


def test_glyph_height_of_a_blank_page_is_unknown() -> None:
    assert ocr.glyph_height(np.full((800, 600), 255, dtype=np.uint8)) is None


@pytest.mark.parametrize("angle", [-1.5, -0.6, 0.0, 0.8, 1.5])
def test_skew_is_measured(angle: float) -> None:
    assert ocr.estimate_skew(_text_image(angle)) == pytest.approx(angle, abs=0.15)


def test_rulings_are_removed_and_text_kept() -> None:
    gray = _text_image(table=True)
    cleaned = ocr.remove_rulings(gray, 300)
    ink_before = int((gray < 128).sum())
    ink_after = int((cleaned < 128).sum())
    assert ink_after < ink_before
    # The long horizontal rule at y=140 is gone; text rows still have ink.
    assert (cleaned[138:143, 820:1580] < 128).sum() == 0
    assert (cleaned[80:120, 100:700] < 128).sum() > 500


def test_light_text_on_a_dark_bar_survives_flattening() -> None:
    image = Image.new("L", (1200, 300), 255)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 50, 1200, 200), fill=40)
    draw.text((100, 90), "Description Qty Amount", font=ImageFont.load_default(size=40), fill=255)
    flat = ocr.flatten_background(np.asarray(image, dtype=np.uint8), 300)
    assert (flat[60:190, :] < 128).sum() > 1000  # the text, now dark on white
    assert (flat[60:190, :] > 200).mean() > 0.8  # the bar, now white


def test_tsv_words_share_their_line_height() -> None:
    tsv = (
        "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight"
        "\tconf\ttext\n"
        "5\t1\t1\t1\t1\t1\t10\t10\t40\t30\t95.0\tBei\n"
        "5\t1\t1\t1\t1\t2\t60\t20\t50\t20\t91.0\tecke\n"
        "5\t1\t1\t1\t2\t1\t10\t60\t40\t30\t-1\t \n"
    )
    words = ocr.parse_tsv(tsv)
    assert [w.text for w in words] == ["Bei", "ecke"]
    assert words[1].y0 == 10.0 and words[1].y1 == 40.0
    assert words[0].line == words[1].line == 0


def test_strip_cuts_fall_in_blank_rows() -> None:
    gray = _text_image()
    for cut in ocr.blank_row_cuts(gray, 2):
        assert (gray[cut] < 128).sum() == 0


def test_ocr_reads_a_rotated_table_with_rulings() -> None:
    gray = _text_image(angle=1.2, table=True)
    words = ocr.ocr_page(Image.fromarray(cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)), 1700 * 72 / 300)
    text = " ".join(w.text for w in words)
    assert "Line 0" in text and "Line 11" in text
    assert "123,45" in text
