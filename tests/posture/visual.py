"""Screenshot comparison for the dashboard's pictures against baseline PNGs in tests/posture/baselines/.

Why not compare the pages pixel for pixel: text is drawn by whatever fonts the machine has (DejaVu here,
something else on a developer's laptop) and anti-aliased differently by each Chromium release, so a text pixel
diff fails on every machine but the one that made the baseline. What the pictures say is geometry and colour:
which cell is which colour, where an exception's bar starts and ends, how long a denial bar is. So the test
renders each picture in its *geometry view* (`GEOMETRY_CSS`): text transparent, columns of equal fixed width,
no wrapping, inline bars aligned to the line top, the timeline's "now" line 6 pixels wide (a 2-pixel line that
moved would pass as thin), and the picture alone on the page (`ISOLATE_JS`: the text above
it wraps differently under another font and would move it by a fraction of a pixel). Every box is then placed by CSS numbers alone (line-height is
a number times the font size, never a font metric), and the picture is the same whatever the font; the test
proves it by rendering once more under another font family. Text itself is asserted from the DOM.

Refresh the baselines after an intended change of the pictures:
    BASTION_UPDATE_BASELINES=1 .venv/bin/python -m pytest tests/posture/test_dashboard.py -k baseline
and look at the new PNGs before committing them.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageChops, ImageFilter

BASELINES = Path(__file__).parent / "baselines"
UPDATE_ENV = "BASTION_UPDATE_BASELINES"

# A pixel differs when one channel moved by more than this (anti-aliasing of a fractional edge moves by less
# than this between Chromium releases; one state colour to another moves by more than 60 in some channel).
CHANNEL_TOLERANCE = 48
# Differences no thicker than 2 pixels (a 1-pixel move of an edge, anti-aliasing) are tolerated: the mask of
# differing pixels is eroded with a 3x3 minimum filter, and any pixel left (a differing region at least 3x3,
# such as a bar or a cell in another colour) fails. Thin differences are bounded too, at this share of the
# picture: every edge of the matrix moved by one pixel right and one down is about 5.5%.
MAX_THIN_SHARE = 0.10

GEOMETRY_CSS = """
*{color:transparent!important;text-decoration-color:transparent!important;text-shadow:none!important;
  caret-color:transparent!important}
table{table-layout:fixed}
th,td{white-space:nowrap;overflow:hidden}
td i{vertical-align:top}
[data-test="timeline"] div[style*="border-left"]{border-left-width:6px!important}
"""

# Leave only the picture on the page, at its top-left corner.
ISOLATE_JS = "(selector) => document.body.replaceChildren(document.querySelector(selector))"


@dataclass(frozen=True, slots=True)
class Comparison:
    """The outcome of comparing one screenshot with its baseline."""

    name: str
    matches: bool
    detail: str


def compare(name: str, png: bytes, out_dir: Path) -> Comparison:
    """Compare a screenshot with `baselines/<name>.png`. With BASTION_UPDATE_BASELINES=1 the screenshot becomes
    the baseline. On a mismatch the actual, expected and diff images are written to `out_dir`."""
    path = BASELINES / f"{name}.png"
    if os.environ.get(UPDATE_ENV) == "1":
        BASELINES.mkdir(exist_ok=True)
        path.write_bytes(png)
        return Comparison(name, True, f"baseline written to {path}")
    if not path.exists():
        return Comparison(name, False, f"no baseline {path}: run with {UPDATE_ENV}=1 to create it")
    actual = Image.open(io.BytesIO(png)).convert("RGB")
    expected = Image.open(path).convert("RGB")
    if actual.size != expected.size:
        _write(out_dir, name, actual, expected, None)
        return Comparison(name, False, f"size {actual.size} != baseline {expected.size}; images in {out_dir}")
    diff = ImageChops.difference(actual, expected)
    mask = diff.point(lambda v: 255 if v > CHANNEL_TOLERANCE else 0).convert("L").point(lambda v: 255 if v else 0)
    differing = mask.histogram()[255]
    share = differing / (actual.width * actual.height)
    solid = mask.filter(ImageFilter.MinFilter(3)).histogram()[255]
    summary = f"{differing} pixels differ ({share:.3%}), {solid} of them inside a differing 3x3 region"
    if solid == 0 and share <= MAX_THIN_SHARE:
        return Comparison(name, True, summary)
    _write(out_dir, name, actual, expected, mask)
    return Comparison(name, False, f"{summary} (tolerated: none, and at most {MAX_THIN_SHARE:.0%} thin); "
                                   f"actual, expected and diff images in {out_dir}")


def _write(out_dir: Path, name: str, actual: Image.Image, expected: Image.Image, mask: Image.Image | None) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    actual.save(out_dir / f"{name}.actual.png")
    expected.save(out_dir / f"{name}.expected.png")
    if mask is not None:
        # the differing pixels in red over a faded copy of the baseline
        faded = Image.blend(expected, Image.new("RGB", expected.size, "white"), 0.7)
        faded.paste(Image.new("RGB", expected.size, (220, 0, 0)), mask=mask)
        faded.save(out_dir / f"{name}.diff.png")


def colour_at(png: bytes, x: float, y: float) -> tuple[int, int, int]:
    """The RGB colour of one pixel of a screenshot (CSS pixels, device scale 1)."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    r, g, b = image.getpixel((int(x), int(y)))  # type: ignore[misc]
    return r, g, b


def hex_rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)
