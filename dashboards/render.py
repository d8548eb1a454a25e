"""A dashboard's layout drawn to PNG: Grafana's 24-column grid, each panel a titled rectangle.

No Grafana runs here to take a screenshot; this picture shows reviewers the wall's arrangement
(positions, sizes, titles, rows) straight from the committed JSON. Panel contents are not drawn.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from dashboards import JSON_DIR

COLUMNS = 24
COLUMN_PX = 40  # one grid column
ROW_PX = 30  # one grid row (Grafana: 30 px high, plus its 8 px margin)
MARGIN = 12  # around the grid
HEADER = 40  # the dashboard's title above the grid
GAP = 3  # between a panel's cells and its rectangle, so neighbours stay apart
BACKGROUND = (255, 255, 255)
GRID = (232, 232, 232)
BORDER = (60, 60, 60)
TEXT = (20, 20, 20)
FILL = {"stat": (207, 226, 255), "timeseries": (209, 240, 214), "table": (255, 228, 196),
        "geomap": (232, 222, 248), "row": (90, 90, 110)}
OTHER = (225, 225, 225)
ROW_TEXT = (255, 255, 255)

FONT_CANDIDATES = (  # fonts with Vietnamese glyphs, first found wins
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",  # Debian fonts-dejavu-core
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/opentype/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
)
SAMPLE = "Tỷ lệ hồ sơ đúng hạn ĐẶỮ"  # what a Vietnamese title needs


@dataclass(frozen=True)
class Box:
    """A panel's rectangle in pixels (inclusive corners) and what is written in it."""

    title: str
    kind: str
    grid: tuple[int, int, int, int]  # Grafana's x, y, w, h
    left: int
    top: int
    right: int
    bottom: int


def size(board: dict[str, Any]) -> tuple[int, int]:
    """Pixels: 24 columns wide, as many rows high as the lowest panel reaches."""
    rows = max((p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels(board)), default=0)
    return 2 * MARGIN + COLUMNS * COLUMN_PX, HEADER + 2 * MARGIN + rows * ROW_PX


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel with a place on the grid, panels of collapsed rows included."""
    found = []
    for panel in board.get("panels", []):
        found.append(panel)
        found += panel.get("panels", []) if panel.get("type") == "row" else []
    return found


def boxes(board: dict[str, Any]) -> list[Box]:
    result = []
    for panel in panels(board):
        g = panel["gridPos"]
        left, top = MARGIN + g["x"] * COLUMN_PX, HEADER + MARGIN + g["y"] * ROW_PX
        title = panel.get("title", "")
        if panel.get("type") == "row" and panel.get("collapsed"):
            title = f"▸ {title} (thu gọn)"
        result.append(Box(title, panel.get("type", ""), (g["x"], g["y"], g["w"], g["h"]),
                          left + GAP, top + GAP,
                          left + g["w"] * COLUMN_PX - GAP - 1,
                          top + g["h"] * ROW_PX - GAP - 1))
    return result


def _covers(font: ImageFont.FreeTypeFont, text: str) -> bool:
    """Whether the font draws every letter of `text` (not its "missing glyph" box)."""
    missing = bytes(font.getmask("\uffff"))
    return all(bytes(font.getmask(c)) != missing for c in set(text) if not c.isspace())


def find_font(size_px: int, text: str = SAMPLE) -> ImageFont.FreeTypeFont:
    """DejaVu Sans or another font that has Vietnamese glyphs; else Pillow's own, with a warning."""
    candidates = list(FONT_CANDIDATES)
    spec = importlib.util.find_spec("matplotlib")
    if spec is not None and spec.origin:  # matplotlib ships DejaVu Sans
        candidates.insert(0, str(Path(spec.origin).parent / "mpl-data/fonts/ttf/DejaVuSans.ttf"))
    for path in candidates:
        if Path(path).is_file():
            font = ImageFont.truetype(path, size_px)
            if _covers(font, text):
                return font
    print("warning: no font with Vietnamese glyphs found (apt-get install fonts-dejavu-core);"
          " titles fall back to Pillow's font and may lose diacritics", file=sys.stderr)
    return ImageFont.load_default(size_px)


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.FreeTypeFont,
         width: int) -> list[str]:
    """Words wrapped to `width` pixels, at most two lines (the second shortened with …)."""
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    if len(lines) > 2:
        lines = [lines[0], " ".join(lines[1:])]
    if lines and draw.textlength(lines[-1], font=font) > width:
        while len(lines[-1]) > 1 and draw.textlength(lines[-1] + "…", font=font) > width:
            lines[-1] = lines[-1][:-1]
        lines[-1] += "…"
    return lines


def render(board: dict[str, Any]) -> Image.Image:
    image = Image.new("RGB", size(board), BACKGROUND)
    draw = ImageDraw.Draw(image)
    titles = " ".join([board.get("title", ""), *(b.title for b in boxes(board))])
    font, small, big = find_font(14, titles), find_font(11, "stat"), find_font(20, titles)
    draw.text((MARGIN, MARGIN), board.get("title", ""), fill=TEXT, font=big)
    width, height = image.size
    for column in range(COLUMNS + 1):
        x = MARGIN + column * COLUMN_PX
        draw.line([(x, HEADER + MARGIN), (x, height - MARGIN)], fill=GRID)
    for y in range(HEADER + MARGIN, height - MARGIN + 1, ROW_PX):
        draw.line([(MARGIN, y), (width - MARGIN, y)], fill=GRID)
    for box in boxes(board):
        fill = FILL.get(box.kind, OTHER)
        draw.rectangle([box.left, box.top, box.right, box.bottom], fill=fill, outline=BORDER)
        colour = ROW_TEXT if box.kind == "row" else TEXT
        lines = _fit(draw, box.title, font, box.right - box.left - 10)
        for i, line in enumerate(lines if box.kind != "row" else lines[:1]):
            draw.text((box.left + 6, box.top + 4 + i * 18), line, fill=colour, font=font)
        if box.kind != "row" and box.bottom - box.top > 50:
            x, y, w, h = box.grid
            label = f"{box.kind} · {w}×{h} tại ({x}, {y})"
            draw.text((box.left + 6, box.bottom - 16), label, fill=BORDER, font=small)
    return image


def render_file(name: str, out: Path, directory: Path = JSON_DIR) -> Path:
    """Draw dashboards/json/<name>.json to `out` (PNG, palette: a few tens of KB)."""
    board = json.loads((directory / f"{name}.json").read_text(encoding="utf-8"))
    out.parent.mkdir(parents=True, exist_ok=True)
    render(board).quantize(colors=64, dither=Image.Dither.NONE).save(out, optimize=True)
    return out
