"""`ioc dashboards render`: the layout PNG, checked pixel by pixel at the panel rectangles the
test computes itself from each dashboard's gridPos (the drawing scale is the module's)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

from dashboards import render as r
from ioc.cli.dashboards import app
from tests.support import ROOT

BOARDS = sorted((ROOT / "dashboards/json").glob("*.json"))


def near(pixel: tuple[int, ...], colour: tuple[int, int, int], tolerance: int = 6) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel[:3], colour, strict=True))


def cell(x: int, y: int) -> tuple[int, int]:
    """Top-left pixel of grid cell (x, y)."""
    return r.MARGIN + x * r.COLUMN_PX, r.HEADER + r.MARGIN + y * r.ROW_PX


def check_picture(image: Image.Image, board: dict[str, Any]) -> None:
    grid = list(board["panels"]) + [
        c for p in board["panels"] if p["type"] == "row" for c in p.get("panels", [])]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in grid)
    assert image.size == (2 * r.MARGIN + 24 * r.COLUMN_PX,
                          r.HEADER + 2 * r.MARGIN + rows * r.ROW_PX)
    rgb = image.convert("RGB")
    covered = set()
    for panel in grid:
        g = panel["gridPos"]
        left, top = cell(g["x"], g["y"])
        right, bottom = cell(g["x"] + g["w"], g["y"] + g["h"])
        fill = r.FILL.get(panel["type"], r.OTHER)
        # Inside, near the bottom-right corner (clear of the title and the label): the fill.
        assert near(rgb.getpixel((right - r.GAP - 4, bottom - r.GAP - 4)), fill), panel["title"]
        # The outline, half-way down the left edge and along the top.
        assert near(rgb.getpixel((left + r.GAP, (top + bottom) // 2)), r.BORDER), panel["title"]
        assert near(rgb.getpixel((right - r.GAP - 1, top + r.GAP)), r.BORDER), panel["title"]
        # The gap at the corner of the cells stays background or grid line: not the panel.
        corner = rgb.getpixel((left + 1, top + 1))
        assert near(corner, r.BACKGROUND) or near(corner, r.GRID), panel["title"]
        covered |= {(x, y) for x in range(g["x"], g["x"] + g["w"])
                    for y in range(g["y"], g["y"] + g["h"])}
    for x, y in {(x, y) for x in range(24) for y in range(rows)} - covered:
        left, top = cell(x, y)  # an empty cell: nothing but background
        assert near(rgb.getpixel((left + r.COLUMN_PX // 2, top + r.ROW_PX // 2)), r.BACKGROUND)


@pytest.mark.parametrize("path", BOARDS, ids=[p.stem for p in BOARDS])
def test_every_dashboard_renders_its_grid(path: Path) -> None:
    check_picture(r.render(json.loads(path.read_text(encoding="utf-8"))), json.loads(
        path.read_text(encoding="utf-8")))


def test_rows_collapsed_panels_and_empty_cells() -> None:
    board = {"title": "Thử nghiệm", "panels": [
        {"type": "row", "title": "Hồ sơ", "collapsed": False,
         "gridPos": {"x": 0, "y": 0, "w": 24, "h": 1}},
        {"type": "stat", "title": "Đúng hạn", "gridPos": {"x": 0, "y": 1, "w": 6, "h": 4}},
        {"type": "gauge", "title": "Khác", "gridPos": {"x": 12, "y": 1, "w": 12, "h": 4}},
        {"type": "row", "title": "Phản ánh", "collapsed": True,
         "gridPos": {"x": 0, "y": 5, "w": 24, "h": 1},
         "panels": [{"type": "table", "title": "Danh sách",
                     "gridPos": {"x": 0, "y": 6, "w": 24, "h": 6}}]},
    ]}
    image = r.render(board)
    check_picture(image, board)
    assert image.size[1] == r.HEADER + 2 * r.MARGIN + 12 * r.ROW_PX
    assert [b.title for b in r.boxes(board)][-2] == "▸ Phản ánh (thu gọn)"


def test_cli_writes_a_small_png(tmp_path: Path) -> None:
    out = tmp_path / "wall.png"
    result = CliRunner().invoke(app, ["render", "--out", str(out)])
    assert result.exit_code == 0, result.output
    board = json.loads((ROOT / "dashboards/json/overview.json").read_text(encoding="utf-8"))
    with Image.open(out) as image:
        assert image.format == "PNG"
        check_picture(image, board)
    assert out.stat().st_size < 150 * 1024

    unknown = CliRunner().invoke(app, ["render", "--dashboard", "nope"])
    assert unknown.exit_code == 1 and "overview" in unknown.stderr


def test_committed_picture_matches_the_wall() -> None:
    """docs/overview-layout.png (shown in the README) has the wall's current grid."""
    board = json.loads((ROOT / "dashboards/json/overview.json").read_text(encoding="utf-8"))
    with Image.open(ROOT / "docs/overview-layout.png") as image:
        assert image.size == r.size(board), "stale: run `ioc dashboards render`"
        check_picture(image, board)
