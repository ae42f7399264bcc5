"""A 2-D picture of sentence vectors: PCA (numpy SVD) or t-SNE, optionally coloured by label.

Torch-free; matplotlib (and scikit-learn for t-SNE) come from the `eval` extra. Readability choices:
points are drawn in a shuffled order so no label paints over another wholesale; marker size and
opacity shrink as the point count grows; only the most frequent labels get their own colour (the
rest share grey "other"); a small unlabelled set gets each point's text written beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from textae.atomic import atomic_write
from textae.errors import TextaeError
from textae.evaluation.readers import read_labelled_file, read_text_file
from textae.evaluation.settings import MAX_POINTS
from textae.extras import import_optional
from textae.runtime.model import TextAE

METHODS = ("pca", "tsne")
MAX_COLOURED_LABELS = 10  # tab10's distinct colours; further labels become "other"
ANNOTATE_UP_TO = 30  # unlabelled maps this small show each sentence's text
OTHER_COLOUR = "#9e9e9e"


@dataclass
class MapSummary:
    out: str
    points: int  # sentences drawn
    total: int  # sentences in the file (more than points when sampled)
    method: str
    labels: int  # distinct labels (0 when unlabelled)


def pca_2d(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(coordinates (N, 2), share of variance of each axis) of the first two principal components."""
    centred = np.asarray(vectors, dtype=np.float64) - np.mean(vectors, axis=0)
    # thin SVD: the right singular vectors are the principal directions
    _, singular, directions = np.linalg.svd(centred, full_matrices=False)
    coordinates = centred @ directions[:2].T
    if coordinates.shape[1] < 2:  # one-dimensional vectors: a flat second axis
        coordinates = np.pad(coordinates, ((0, 0), (0, 2 - coordinates.shape[1])))
    variance = singular**2
    shares = variance[:2] / variance.sum() if variance.sum() > 0 else np.zeros(2)
    return coordinates, np.pad(shares, (0, 2 - len(shares)))


def tsne_2d(vectors: np.ndarray, seed: int = 0) -> np.ndarray:
    manifold = import_optional("sklearn.manifold", "--method tsne")
    # perplexity must stay below the number of points; 30 is the usual value for larger sets
    perplexity = float(min(30.0, max(2.0, (len(vectors) - 1) / 3)))
    return manifold.TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(vectors)


def plot_map(
    model: TextAE,
    source: Path,
    out: Path,
    *,
    labelled: bool = False,
    method: str = "pca",
    max_points: int = MAX_POINTS,
    seed: int = 0,
) -> MapSummary:
    """Embed source (one sentence a line, or `label<TAB>text` when labelled) and write a PNG map."""
    out = Path(out)
    check_map_options(out, method, max_points)
    import_optional("matplotlib", "the map")
    if labelled:
        data = read_labelled_file(source)
        labels: list[str] | None = data.labels
        texts = data.texts
    else:
        labels, texts = None, read_text_file(source)
    minimum = 4 if method == "tsne" else 2
    if len(texts) < minimum:
        raise TextaeError(f"{source}: {len(texts)} sentence(s); a {method} map needs at least {minimum}")
    total = len(texts)
    rows = np.arange(total)
    if total > max_points:  # a uniform sample keeps the picture's proportions
        rows = np.sort(np.random.default_rng(seed).choice(total, size=max_points, replace=False))
    texts = [texts[row] for row in rows]
    labels = [labels[row] for row in rows] if labels is not None else None
    vectors = model.embed(texts)
    if method == "pca":
        coordinates, shares = pca_2d(vectors)
        axis_names = [f"PC{i + 1} ({100 * share:.1f} % of variance)" for i, share in enumerate(shares)]
    else:
        coordinates = tsne_2d(vectors, seed)
        axis_names = ["t-SNE 1", "t-SNE 2"]
    sampled = f", a sample of {len(texts):,} of {total:,}" if len(texts) < total else ""
    title = f"textae map of {Path(source).name} ({len(texts):,} sentences{sampled}, {method.upper() if method == 'pca' else 't-SNE'})"
    draw_map(coordinates, out, title=title, axis_names=axis_names, labels=labels, texts=texts, seed=seed)
    return MapSummary(str(out), len(texts), total, method, len(set(labels)) if labels is not None else 0)


def check_map_options(out: Path, method: str, max_points: int) -> None:
    if method not in METHODS:
        raise TextaeError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if out.suffix.lower() != ".png":
        raise TextaeError(f"{out}: the map is written as PNG; give a file name ending in .png")
    if not out.parent.is_dir():
        raise TextaeError(f"{out.parent}: output folder does not exist")
    if max_points < 2:
        raise TextaeError(f"max_points must be at least 2, got {max_points}")


def draw_map(
    coordinates: np.ndarray,
    out: Path,
    *,
    title: str,
    axis_names: list[str],
    labels: list[str] | None = None,
    texts: list[str] | None = None,
    seed: int = 0,
) -> None:
    """Scatter (N, 2) coordinates into a PNG with a title, axis names and a legend."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; the file is the only output
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    count = len(coordinates)
    size, alpha = _marker_style(count)
    order = np.random.default_rng(seed).permutation(count)  # interleave labels: no colour hides another
    if labels is None:
        colours = np.array(["tab:blue"] * count, dtype=object)
        handles = [Line2D([], [], marker="o", linestyle="", color="tab:blue", label=f"sentence ({count:,})")]
    else:
        colours, handles = _label_colours(labels)

    fig, axis = plt.subplots(figsize=(9, 7), dpi=120)
    axis.scatter(
        coordinates[order, 0], coordinates[order, 1], c=list(colours[order]), s=size, alpha=alpha, linewidths=0,
        rasterized=count > 5000,  # keeps very large maps fast to save
    )  # fmt: skip
    if labels is None and texts is not None and count <= ANNOTATE_UP_TO:
        for (x, y), text in zip(coordinates, texts):
            axis.annotate(_shorten(text), (x, y), xytext=(4, 3), textcoords="offset points", fontsize=7, color="#333333")
    axis.set_title(title, fontsize=11)
    axis.set_xlabel(axis_names[0])
    axis.set_ylabel(axis_names[1])
    axis.grid(alpha=0.25)
    legend_title = "label" if labels is not None else None
    axis.legend(handles=handles, title=legend_title, loc="best", fontsize=8, title_fontsize=9, framealpha=0.85)
    fig.tight_layout()
    atomic_write(Path(out), lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def _label_colours(labels: list[str]) -> tuple[np.ndarray, list]:
    """A colour per point and one legend entry per label (most frequent first, the rest as 'other')."""
    from matplotlib.lines import Line2D

    names, counts = np.unique(np.array(labels, dtype=object), return_counts=True)
    ranked = [str(names[i]) for i in np.lexsort((names, -counts))]
    count_of = dict(zip(map(str, names), counts.tolist()))
    palette = [f"C{i}" for i in range(MAX_COLOURED_LABELS)]
    colour_of = {name: palette[i] for i, name in enumerate(ranked[:MAX_COLOURED_LABELS])}
    colours = np.array([colour_of.get(label, OTHER_COLOUR) for label in labels], dtype=object)
    handles = [
        Line2D([], [], marker="o", linestyle="", color=colour_of[name], label=f"{_shorten(name, 24)} ({count_of[name]:,})")
        for name in ranked[:MAX_COLOURED_LABELS]
    ]
    rest = ranked[MAX_COLOURED_LABELS:]
    if rest:
        others = sum(count_of[name] for name in rest)
        handles.append(Line2D([], [], marker="o", linestyle="", color=OTHER_COLOUR, label=f"{len(rest)} other labels ({others:,})"))
    return colours, handles


def _marker_style(count: int) -> tuple[float, float]:
    """(marker area, opacity): big solid dots for a handful of points, fine translucent ones for many."""
    if count <= 100:
        return 40.0, 0.9
    if count <= 1000:
        return 14.0, 0.7
    if count <= 10_000:
        return 5.0, 0.5
    return 2.0, 0.35


def _shorten(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
