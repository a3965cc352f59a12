"""Prototype figures: the per-image panel and the coverage bar chart.

Drawing uses matplotlib's object API with the Agg canvas, so importing or
calling this module never changes the global matplotlib backend.
"""
from typing import Optional, Sequence

import numpy as np

from .overlay import blend_labels


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def draw_prototype_panel(path: str,
                         rgb: np.ndarray,
                         pred: np.ndarray,
                         similarity: np.ndarray,
                         class_names: Sequence[str],
                         palette: Sequence[Sequence[int]],
                         num_prototypes: int,
                         shares: Optional[np.ndarray] = None,
                         title: str = ''):
    """Save the image / mask overlay / per-prototype heatmap panel.

    Args:
        path (str): output PNG.
        rgb (np.ndarray): ``(H, W, 3)`` uint8.
        pred (np.ndarray): ``(H, W)`` mask, values ``0..C``.
        similarity (np.ndarray): ``(C*k, H, W)`` cosine maps.
        class_names (list[str]): ``C + 1`` names (background last).
        palette (list): ``C + 1`` RGB triples.
        num_prototypes (int): ``k``.
        shares (np.ndarray, optional): ``(C, k)`` coverage shares of this
            image, shown under each heatmap title.
        title (str): figure title.

    Returns:
        matplotlib.figure.Figure: the saved figure.
    """
    from matplotlib.patches import Patch
    k = num_prototypes
    num_classes = similarity.shape[0] // k
    cols = max(k, 2)
    fig = _new_figure(2.2 * cols + 1.2, 2.3 * (num_classes + 1))
    grid = fig.add_gridspec(num_classes + 1, cols + 1,
                            width_ratios=[1] * cols + [0.06], top=0.94,
                            hspace=0.35)
    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(rgb)
    ax.set_title('image', fontsize=9)
    ax.axis('off')
    ax = fig.add_subplot(grid[0, 1])
    ax.imshow(blend_labels(rgb, pred, palette, alpha=0.5, hatch=False))
    ax.set_title('prediction', fontsize=9)
    ax.axis('off')
    handles = [Patch(facecolor=np.asarray(palette[i]) / 255.0,
                     edgecolor='black', label=str(name))
               for i, name in enumerate(class_names)]
    legend_anchor = fig.add_subplot(grid[0, 2:cols]) if cols > 2 else ax
    if cols > 2:
        legend_anchor.axis('off')
        legend_anchor.legend(handles=handles, loc='center left',
                             fontsize=8, frameon=False)
    else:
        ax.legend(handles=handles, loc='upper left', fontsize=6,
                  bbox_to_anchor=(1.0, 1.0), frameon=False)
    grey = rgb.astype(np.float32).mean(axis=2)
    low, high = float(similarity.min()), float(similarity.max())
    if high <= low:
        high = low + 1e-6
    shown = None
    for c in range(num_classes):
        for j in range(k):
            ax = fig.add_subplot(grid[c + 1, j])
            ax.imshow(grey, cmap='gray', vmin=0, vmax=255)
            shown = ax.imshow(similarity[c * k + j], cmap='jet', alpha=0.55,
                              vmin=low, vmax=high)
            label = f'{class_names[c]} p{j}'
            if shares is not None and not np.isnan(shares[c, j]):
                label += f'\n{100 * shares[c, j]:.0f}% of {class_names[c]}'
            ax.set_title(label, fontsize=8)
            ax.axis('off')
    cax = fig.add_subplot(grid[1:, cols])
    fig.colorbar(shown, cax=cax, label='cosine similarity')
    if title:
        fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=80, bbox_inches='tight')
    return fig


def draw_coverage_figure(path: str, report: dict, num_prototypes: int,
                         palette: Sequence[Sequence[int]],
                         title: str = ''):
    """Bar chart per class of the share of its region won by each
    prototype (from :func:`coverage_report`); returns the saved
    ``Figure``."""
    names = list(report)
    fig = _new_figure(2.6 * len(names) + 0.5, 3.0)
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    xs = np.arange(num_prototypes)
    for c, (ax, name) in enumerate(zip(axes, names)):
        entry = report[name]
        ax.set_xticks(xs, [f'p{j}' for j in xs], fontsize=7)
        ax.set_xlim(-0.6, num_prototypes - 0.4)
        ax.set_ylim(0, 1)
        ax.axhline(1.0 / num_prototypes, color='grey', lw=0.8, ls='--')
        if entry['shares'] is None:
            ax.set_title(f'{name}: no pixels', fontsize=9)
            continue
        colour = np.asarray(palette[c]) / 255.0
        ax.bar(xs, entry['shares'], color=colour, edgecolor='black')
        ax.set_title(f"{name}: {entry['pixels']} px\nentropy "
                     f"{entry['entropy']:.2f}, eff. "
                     f"{entry['effective_prototypes']:.1f}/{num_prototypes}",
                     fontsize=8)
    axes[0].set_ylabel('share of class region')
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return fig


__all__ = [
    'draw_prototype_panel', 'draw_coverage_figure'
]
