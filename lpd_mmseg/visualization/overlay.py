"""The one drawing code for class maps over H&E images.

Used by ``tools/segment_slide.py`` (slide thumbnails, patch folders) and by
``tools/test.py --show-dir`` (ground truth | prediction panels).  A figure
is one or more titled panels side by side and a legend below them:

* class colours are blended over the image (``alpha``, 0.45 by default) so
  the tissue stays visible under them;
* the background class is not tinted: its pixels are dimmed towards grey
  and, where ``hatch`` is on, crossed by thin diagonal lines, so glass
  reads as "background" even when the palette colour is white;
* legend swatches have a dark outline, so a white or pale class colour is
  never white on white.

Drawing uses Pillow only (no plotting backend).
"""
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

Colour = Sequence[int]
TEXT = (20, 20, 20)
OUTLINE = (40, 40, 40)
CANVAS = (255, 255, 255)
BACKGROUND_TINT = (150, 150, 150)


def colour_lut(palette: Sequence[Colour]) -> np.ndarray:
    """``(256, 3)`` uint8 look-up table; indices without a colour are
    black."""
    lut = np.zeros((256, 3), np.uint8)
    lut[:len(palette)] = np.asarray(palette, np.uint8).reshape(-1, 3)
    return lut


def blend_labels(rgb: np.ndarray,
                 labels: np.ndarray,
                 palette: Sequence[Colour],
                 background_index: Optional[int] = None,
                 alpha: float = 0.45,
                 hatch: bool = True) -> np.ndarray:
    """Blend class colours over an image.

    Args:
        rgb (np.ndarray): ``(H, W, 3)`` uint8 image.
        labels (np.ndarray): ``(H, W)`` class indices (0..255).
        palette (list): one RGB triple per class index.
        background_index (int, optional): this class is dimmed towards
            grey (and hatched) instead of tinted with its colour.
        alpha (float): weight of the class colour, in ``[0, 1]``.
        hatch (bool): diagonal lines over the background class.

    Returns:
        np.ndarray: ``(H, W, 3)`` uint8.
    """
    if not 0 <= alpha <= 1:
        raise ValueError(f'alpha must be in [0, 1], got {alpha}')
    labels = np.asarray(labels)
    if labels.shape != rgb.shape[:2]:
        raise ValueError(f'labels {labels.shape} and image {rgb.shape[:2]} '
                         'differ in size')
    colours = colour_lut(palette)[labels.astype(np.uint8)].astype(np.float32)
    image = rgb.astype(np.float32)
    out = (1 - alpha) * image + alpha * colours
    if background_index is not None:
        back = labels == background_index
        grey = np.asarray(BACKGROUND_TINT, np.float32)
        out[back] = 0.6 * image[back] + 0.4 * grey
        if hatch:
            diagonal = np.add.outer(np.arange(labels.shape[0], dtype=np.int32),
                                    np.arange(labels.shape[1],
                                              dtype=np.int32))
            lines = back & (diagonal % 12 == 0)
            out[lines] = grey * 0.7
    return out.round().clip(0, 255).astype(np.uint8)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> Tuple[int,
                                                                     int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def draw_legend(names: Sequence[str], palette: Sequence[Colour],
                width: int, background_index: Optional[int] = None,
                font_size: int = 14) -> Image.Image:
    """A legend strip ``width`` pixels wide: outlined swatches and names,
    wrapped onto as many rows as needed.  The background swatch is drawn
    as the overlay draws background (grey, hatched)."""
    font = _font(font_size)
    probe = ImageDraw.Draw(Image.new('RGB', (1, 1)))
    box = font_size
    pad = font_size // 2
    items = []
    for i, name in enumerate(names):
        tw, _ = _text_size(probe, str(name), font)
        items.append((i, str(name), box + pad + tw + 2 * pad))
    rows: List[List[tuple]] = [[]]
    used = pad
    for item in items:
        if rows[-1] and used + item[2] > width:
            rows.append([])
            used = pad
        rows[-1].append(item)
        used += item[2]
    row_h = box + pad
    legend = Image.new('RGB', (width, pad + row_h * len(rows)), CANVAS)
    draw = ImageDraw.Draw(legend)
    for r, row in enumerate(rows):
        x, y = pad, pad // 2 + r * row_h + pad // 2
        for i, name, step in row:
            if i == background_index:
                fill = tuple(int(0.6 * 255 + 0.4 * c)
                             for c in BACKGROUND_TINT)
            else:
                fill = tuple(int(c) for c in palette[i])
            draw.rectangle([x, y, x + box, y + box], fill=fill,
                           outline=OUTLINE, width=1)
            if i == background_index:
                draw.line([x, y + box, x + box, y], fill=OUTLINE, width=1)
            draw.text((x + box + pad, y), name, fill=TEXT, font=font)
            x += step
    return legend


def _titled(panel: Image.Image, title: str, font_size: int) -> Image.Image:
    if not title:
        return panel
    font = _font(font_size)
    head = font_size + font_size // 2 + 4
    out = Image.new('RGB', (panel.width, panel.height + head), CANVAS)
    draw = ImageDraw.Draw(out)
    tw, _ = _text_size(draw, title, font)
    draw.text(((panel.width - tw) // 2, 2), title, fill=TEXT, font=font)
    out.paste(panel, (0, head))
    return out


def overlay_figure(rgb: np.ndarray,
                   panels: Sequence[Tuple[str, Optional[np.ndarray]]],
                   class_names: Sequence[str],
                   palette: Sequence[Colour],
                   background_index: Optional[int] = None,
                   alpha: float = 0.45,
                   min_panel_width: int = 384,
                   title: str = '') -> np.ndarray:
    """Titled overlay panels side by side with one legend below.

    Args:
        rgb (np.ndarray): ``(H, W, 3)`` uint8 image.
        panels (list): ``(title, labels)`` pairs; ``labels`` is an
            ``(H, W)`` class map, or None for the plain image.
        class_names (list[str]): one name per palette entry shown in the
            legend.
        palette (list): RGB triples, same length as ``class_names``.
        background_index (int, optional): see :func:`blend_labels`.
        alpha (float): class colour weight.
        min_panel_width (int): small images are enlarged (nearest) to this
            width, so patch overlays stay readable.
        title (str): a line above all panels (e.g. the image name).

    Returns:
        np.ndarray: ``(H', W', 3)`` uint8 figure.
    """
    if len(class_names) != len(palette):
        raise ValueError(f'{len(class_names)} class names but '
                         f'{len(palette)} palette colours')
    height, width = rgb.shape[:2]
    scale = max(1, int(np.ceil(min_panel_width / max(width, 1))))
    font_size = 14 if width * scale < 1200 else 22
    gap = 8
    drawn = []
    for name, labels in panels:
        img = rgb if labels is None else blend_labels(
            rgb, labels, palette, background_index, alpha)
        panel = Image.fromarray(img)
        if scale > 1:
            panel = panel.resize((width * scale, height * scale),
                                 Image.NEAREST)
        drawn.append(_titled(panel, name, font_size))
    total_w = sum(p.width for p in drawn) + gap * (len(drawn) - 1)
    legend = draw_legend(class_names, palette, total_w, background_index,
                         font_size)
    top = _titled(Image.new('RGB', (total_w, 0), CANVAS), title,
                  font_size) if title else None
    head = top.height if top is not None else 0
    fig = Image.new('RGB', (total_w, head + drawn[0].height + legend.height),
                    CANVAS)
    if top is not None:
        fig.paste(top, (0, 0))
    x = 0
    for panel in drawn:
        fig.paste(panel, (x, head))
        x += panel.width + gap
    fig.paste(legend, (0, head + drawn[0].height))
    return np.asarray(fig)


def save_figure(path: str, figure: np.ndarray) -> None:
    """Write an ``(H, W, 3)`` uint8 figure as PNG."""
    Image.fromarray(figure).save(path)
