"""Figures for the notebooks and reports. Each function returns a matplotlib Figure."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from fracturelib.data.schema import usable


def class_balance(counts: pd.DataFrame):
    """Stacked horizontal bars of usable files per class, one colour per split: the imbalance at a glance.

    Args:
        counts: the table of :func:`fracturelib.data.eda.counts` (``total`` and ``share`` are left out).

    Returns:
        The matplotlib Figure.
    """
    cols = [c for c in counts.columns if c not in ("total", "share")]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(counts) + 1.5))
    counts[cols].plot.barh(stacked=True, ax=ax)
    ax.set_xlabel("images")
    ax.set_title("Class balance (usable files)")
    fig.tight_layout()
    return fig


def sizes(df: pd.DataFrame):
    """Image sizes (width against height) and the aspect-ratio histogram per class.

    Args:
        df: the scan manifest (``width``, ``height`` in pixels, ``label``); only usable files are drawn.

    Returns:
        The matplotlib Figure (two panels).
    """
    ok = usable(df).assign(aspect=lambda d: d["width"] / d["height"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    sns.scatterplot(data=ok, x="width", y="height", hue="label", s=12, alpha=0.6, ax=axes[0],
                    legend=False)
    axes[0].set_title("Image sizes (px)")
    sns.histplot(data=ok, x="aspect", hue="label", bins=40, element="step", ax=axes[1])
    sns.move_legend(axes[1], "upper left", bbox_to_anchor=(1.01, 1), fontsize=8, title=None)
    axes[1].set_title("Aspect ratio (width / height)")
    fig.tight_layout()
    return fig


def intensity(per_image: pd.DataFrame, hists: pd.DataFrame):
    """Mean gray-level histogram per class and per-image mean intensity by class.

    Args:
        per_image, hists: the two tables of :func:`fracturelib.data.eda.intensity_stats`.

    Returns:
        The matplotlib Figure (two panels).
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for c in hists.columns:
        axes[0].plot(hists.index, hists[c], label=c)
    axes[0].set_title("Mean intensity histogram per class")
    axes[0].set_xlabel("gray level")
    axes[0].legend(fontsize=8)
    sns.boxplot(data=per_image, x="mean", y="label", ax=axes[1])
    axes[1].set_title("Per-image mean intensity")
    fig.tight_layout()
    return fig


def image_grid(images, titles=None, ncols: int = 6, size: float = 2.0, suptitle: str | None = None,
               overlays=None, cmap="gray"):
    """Show uint8/float images (HxW, HxWx1 or HxWx3) in a grid; optional RGBA overlays.

    Args:
        images: the images; values above 1.5 are taken as 0-255 and cast to uint8.
        titles: one title per image, or None.
        ncols: images per row.
        size: width of one cell in inches.
        suptitle: title of the figure, or None.
        overlays: one array per image drawn on top (alpha 0.45, jet colormap), or None.
        cmap: colormap of single-channel images.

    Returns:
        The matplotlib Figure.
    """
    n = len(images)
    nrows = max(1, int(np.ceil(n / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * size * 1.1), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if k >= n:
            continue
        im = np.asarray(images[k])
        if im.ndim == 3 and im.shape[-1] == 1:
            im = im[..., 0]
        ax.imshow(im.astype(np.uint8) if im.max() > 1.5 else im, cmap=cmap if im.ndim == 2 else None)
        if overlays is not None:
            ax.imshow(overlays[k], alpha=0.45, cmap="jet")
        if titles:
            ax.set_title(titles[k], fontsize=7)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def training_curves(history: dict):
    """Loss, AUC, PR-AUC and accuracy per epoch, train beside validation (those the history has).

    Args:
        history: a Keras ``History.history`` dict (``loss``, ``val_loss``, ...).

    Returns:
        The matplotlib Figure, one panel per metric.
    """
    keys = [k for k in ("loss", "auc", "pr_auc", "accuracy") if k in history]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    for ax, k in zip(axes[0], keys):
        ax.plot(history[k], label="train")
        if f"val_{k}" in history:
            ax.plot(history[f"val_{k}"], label="validation")
        ax.set_title(k)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def roc_pr(y, p, threshold: float | None = None):
    """ROC and precision-recall curves of binary scores, with AUC, average precision and prevalence.

    Args:
        y: binary labels (0/1).
        p: predicted probabilities of the positive class.
        threshold: operating threshold marked on the ROC curve, or None.

    Returns:
        The matplotlib Figure (two panels).
    """
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve
    fpr, tpr, _ = roc_curve(y, p)
    prec, rec, _ = precision_recall_curve(y, p)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].plot(fpr, tpr, label=f"AUC {roc_auc_score(y, p):.3f}")
    axes[0].plot([0, 1], [0, 1], "k--", lw=0.8, label="chance")
    axes[0].set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC (test)")
    axes[1].plot(rec, prec, label=f"AP {average_precision_score(y, p):.3f}")
    axes[1].axhline(np.mean(y), color="k", ls="--", lw=0.8, label="prevalence")
    axes[1].set(xlabel="recall (sensitivity)", ylabel="precision", title="Precision-recall (test)")
    if threshold is not None:
        yb = np.asarray(y).astype(bool)
        pb = np.asarray(p) >= threshold
        axes[0].plot((pb & ~yb).sum() / max(1, (~yb).sum()), (pb & yb).sum() / max(1, yb.sum()),
                     "ro", label=f"threshold {threshold:.2f}")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def confusion(y, pred, labels, normalize: str | None = None, title: str = "Confusion matrix"):
    """Confusion matrix as an annotated heatmap (rows true, columns predicted).

    Args:
        y, pred: true and predicted integer class labels.
        labels: class names in label order.
        normalize: None for counts, or ``"true"``, ``"pred"``, ``"all"`` (as scikit-learn).
        title: title of the plot.

    Returns:
        The matplotlib Figure.
    """
    from sklearn.metrics import confusion_matrix
    cm = confusion_matrix(y, pred, labels=range(len(labels)), normalize=normalize)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * len(labels), 0.8 + 0.5 * len(labels)) if len(labels) > 3 else (4, 3.4))
    sns.heatmap(cm, annot=True, fmt=".2f" if normalize else "d", cmap="Blues", cbar=False,
                xticklabels=labels, yticklabels=labels, ax=ax)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    return fig


def calibration(y, p, bins: int = 10):
    """Reliability curve of binary scores in equal-mass (quantile) bins beside the diagonal.

    Args:
        y: binary labels (0/1).
        p: predicted probabilities of the positive class.
        bins: number of bins.

    Returns:
        The matplotlib Figure.
    """
    from sklearn.calibration import calibration_curve
    frac, mean = calibration_curve(y, p, n_bins=bins, strategy="quantile")
    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect")
    ax.plot(mean, frac, "o-", label="model")
    ax.set(xlabel="mean predicted probability", ylabel="observed fraction fractured",
           title="Calibration (test, quantile bins)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def reliability(curves: dict, bins: int = 10, strategy: str = "quantile"):
    """Reliability diagrams, one panel per model: ``{name: (y, p_as_trained, p_scaled)}``
    (binary: P(positive); multiclass: top-label confidence), before and after temperature scaling.

    Args:
        curves: model name -> (labels, probabilities as trained, temperature-scaled probabilities).
        bins, strategy: binning, as for :func:`fracturelib.metrics.calibration.reliability`.

    Returns:
        The matplotlib Figure, the ECE of each curve in its legend.
    """
    from fracturelib.metrics.calibration import ece
    from fracturelib.metrics.calibration import reliability as table
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 4), squeeze=False)
    for ax, (name, (y, p0, p1)) in zip(axes[0], curves.items()):
        ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect")
        for lab, p in (("as trained", p0), ("temperature-scaled", p1)):
            r = table(y, p, bins, strategy)
            ax.plot(r["predicted"], r["observed"], "o-", label=f"{lab} (ECE {ece(y, p, bins, strategy):.3f})")
        ax.set(xlabel="mean predicted probability", ylabel="observed frequency", title=f"{name} (test)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def decision_curves(curves: dict):
    """Net benefit against threshold probability, ``{name: evaluate.decision_curve(...)}``, with
    the treat-all and treat-none strategies of the first.

    Args:
        curves: model name -> table of :func:`fracturelib.metrics.evaluate.decision_curve` (same thresholds).

    Returns:
        The matplotlib Figure.
    """
    fig, ax = plt.subplots(figsize=(6, 4))
    first = next(iter(curves.values()))
    for name, dc in curves.items():
        ax.plot(dc["threshold"], dc["model"], label=name)
    ax.plot(first["threshold"], first["treat all"], "k--", lw=0.9, label="treat all")
    ax.plot(first["threshold"], first["treat none"], "k:", lw=0.9, label="treat none")
    top = max(float(first["treat all"].max()), max(float(dc["model"].max()) for dc in curves.values()))
    ax.set(xlabel="threshold probability", ylabel="net benefit", title="Decision curve (test)",
           ylim=(-0.05, top * 1.1 + 0.01))
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def overlay_gallery(rows: pd.DataFrame, heats, title: str, k: int = 6, caption: str = "p"):
    """Heatmap overlays of the first ``k`` rows (``heats`` aligned with ``rows``), captioned with
    the file name and ``rows[caption]``; prints a line instead when there are none.

    Args:
        rows: manifest rows with ``path``, ``relpath`` and the ``caption`` column.
        heats: heatmaps in [0, 1], one per row, in the image's pixels.
        title: title of the gallery.
        k: maximum number of images.
        caption: numeric column shown beside each file name.

    Returns:
        The matplotlib Figure (also shown), or None when ``rows`` is empty.
    """
    from fracturelib.data.geometry import overlay
    from fracturelib.data.imageio import read_image
    rows, heats = rows.head(k), list(heats)[:k]
    if not len(rows):
        print(f"none: {title}")
        return None
    imgs = [overlay(read_image(p, modalities=None), h) for p, h in zip(rows["path"], heats)]
    names = [f"{r.rsplit('/', 1)[-1]} {caption}={v:.2f}" for r, v in zip(rows["relpath"], rows[caption])]
    fig = image_grid(imgs, names, ncols=k, size=2.4, suptitle=title)
    plt.show()
    return fig


def froc(curves: dict, fp_rates=(0.125, 0.25, 0.5, 1, 2, 4)):
    """FROC curves: sensitivity against false positives per image (log scale), the standard rates marked.

    Args:
        curves: name -> ``metrics.detection.froc_curve`` table (``fp_per_image``, ``sensitivity``).
        fp_rates: the false-positive rates to mark on the x axis.

    Returns:
        The matplotlib Figure.
    """
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for name, c in curves.items():
        ax.step(np.maximum(c["fp_per_image"], fp_rates[0] / 2), c["sensitivity"], where="post", label=name)
    ax.set_xscale("log")
    ax.set_xticks(list(fp_rates), [f"{r:g}" for r in fp_rates])
    ax.set_xlim(fp_rates[0] / 2, fp_rates[-1] * 1.5)
    ax.set_ylim(0, 1)
    ax.set(xlabel="false positives per image", ylabel="sensitivity (fractures found)", title="FROC")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def box_gallery(images, gt_boxes, dets, titles, suptitle: str, ncols: int = 6):
    """Images with the expert boxes (white) and the detector's boxes (amber, with scores).

    Args:
        images: the images in their own pixels.
        gt_boxes: per image its expert boxes ``[x, y, w, h]``.
        dets: per image the boxes to draw ``x0, y0, x1, y1, score``.
        titles: one title per image.
        suptitle: title of the figure.
        ncols: images per row.

    Returns:
        The matplotlib Figure, or None when there is nothing to show.
    """
    from fracturelib.data.geometry import draw_boxes
    if not len(images):
        print(f"{suptitle}: none")
        return None
    drawn = [draw_boxes(draw_boxes(im, [[x, y, x + w, y + h] for x, y, w, h in g]), d, (255, 200, 0))
             for im, g, d in zip(images, gt_boxes, dets)]
    return image_grid(drawn, titles, ncols=ncols, size=2.4, suptitle=suptitle)
