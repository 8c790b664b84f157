"""Is a heatmap faithful to the model, not only plausible to a reader?

- Deletion / insertion (Petsiuk et al. 2018, RISE): replace the hottest pixels first by a blurred
  copy of the image (blurring, as in ROAD, keeps the image closer to what the model has seen
  than black) and watch the explained class's score fall (deletion; lower area = more faithful),
  or start from the blurred image and put the hottest pixels back (insertion; higher = better).
  Each beside the same curves in a random pixel order.
- Model randomisation (Adebayo et al. 2018, "Sanity checks for saliency maps"): heatmaps of the
  model with its weights scrambled must differ from the trained model's; a method whose maps
  barely change explains the image, not the model.

Heatmaps here are at the model's input resolution (S x S, the letterboxed image).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from fracturelib.explain.targets import Target, as_target


def class_scores(model, x: np.ndarray, cls: Target | int | None, batch_size: int = 32) -> np.ndarray:
    """The explained class's probability for each image.

    Args:
        model: the model explained.
        x: images N x S x S x C.
        cls: what is explained (:func:`fracturelib.explain.targets.as_target`): a class index
            (one sigmoid unit: 1 = positive, score p; 0 = negative, score 1 - p) or a target.
            For the curves pass a fixed class: :class:`~fracturelib.explain.targets.PredictedClass`
            decides again on every altered image.
        batch_size: images per forward pass.

    Returns:
        (N,) scores.
    """
    target = as_target(cls)
    target.check(int(model.output.shape[-1]))
    return target.scores(model.predict(x, batch_size=batch_size, verbose=0))


def to_input(cams: np.ndarray, size: int) -> np.ndarray:
    """Feature-map heatmaps (N, h, w) resized to the model input (N, S, S).

    Args:
        cams: heatmaps (N, h, w) at the feature map's resolution.
        size: the model's input side S in pixels.

    Returns:
        (N, S, S) float32 heatmaps, bilinear.
    """
    import cv2
    return np.stack([cv2.resize(c.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR) for c in cams])


def curves(model, images: np.ndarray, heats: np.ndarray, cls: int, kind: str = "deletion", steps: int = 10,
           order: str = "heat", seed: int = 0) -> np.ndarray:
    """Scores (N, steps + 1) as 0, 1/steps, ..., all pixels are deleted (or inserted) hottest
    first (``order="heat"``) or in a random order (``order="random"``).

    A deleted pixel takes the value of a Gaussian-blurred copy of the image; insertion starts from
    that blurred copy and puts the original pixels back.

    Args:
        model: the model explained.
        images: N x S x S x C, raw pixels.
        heats: heatmaps (N, S, S) at the input resolution (:func:`to_input`).
        cls: the explained class, fixed (see :func:`class_scores`).
        kind: ``"deletion"`` or ``"insertion"``.
        steps: steps from no pixel to all pixels changed.
        order: ``"heat"`` (hottest first); any other value is a random order.
        seed: seed of the random order.

    Returns:
        (N, steps + 1) explained-class scores; column k after k/steps of the pixels are changed.

    Raises:
        ValueError: ``kind`` is neither deletion nor insertion.
    """
    import cv2
    if kind not in ("deletion", "insertion"):
        raise ValueError(f"kind {kind!r}: deletion or insertion")
    rng = np.random.default_rng(seed)
    images = np.asarray(images, np.float32)
    n, s = len(images), images.shape[1]
    out = np.zeros((n, steps + 1))
    for i, (x, h) in enumerate(zip(images, heats)):
        blurred = cv2.GaussianBlur(x, (0, 0), sigmaX=max(1.0, s / 16))
        blurred = blurred.reshape(x.shape)
        rank = np.argsort(-h.ravel(), kind="stable") if order == "heat" else rng.permutation(s * s)
        start, fill = (x, blurred) if kind == "deletion" else (blurred, x)
        batch = []
        for k in range(steps + 1):
            m = np.zeros(s * s, bool)
            m[rank[: int(round(k / steps * s * s))]] = True
            m = m.reshape(s, s)[..., None]
            batch.append(np.where(m, fill, start))
        out[i] = class_scores(model, np.stack(batch), cls)
    return out


def area(curve: np.ndarray) -> np.ndarray:
    """Area under each curve over the fraction of pixels changed (0..1), trapezoidal.

    Args:
        curve: scores (N, steps + 1) as :func:`curves` gives them, or one curve (steps + 1,).

    Returns:
        (N,) areas, in the scores' units (probabilities: 0..1).
    """
    c = np.atleast_2d(curve)
    return ((c[:, 1:] + c[:, :-1]) / 2).mean(axis=1)


def faithfulness_table(model, images: np.ndarray, heats: np.ndarray, cls: int, steps: int = 10,
                       n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Deletion and insertion areas (mean over images, 95% CI) for the heatmap order and a random
    order. A faithful map: deletion area below random, insertion area above.

    Args:
        model: the model explained.
        images: N x S x S x C, raw pixels.
        heats: heatmaps (N, S, S) at the input resolution (:func:`to_input`).
        cls: the explained class, fixed (see :func:`class_scores`).
        steps: steps of each curve (:func:`curves`).
        n_boot: bootstrap resamples for the CIs.
        seed: seed of the random order and of the bootstrap.

    Returns:
        Four rows indexed by (deletion or insertion, "heatmap order" or "random order"); columns
        area, ci_low, ci_high.
    """
    from fracturelib.metrics.evaluate import mean_ci
    rows = {}
    for order in ("heat", "random"):
        for kind in ("deletion", "insertion"):
            a = area(curves(model, images, heats, cls, kind, steps, order, seed))
            lo, hi = mean_ci(a, n_boot, seed)
            rows[(kind, "heatmap order" if order == "heat" else "random order")] = {
                "area": float(a.mean()), "ci_low": lo, "ci_high": hi}
    return pd.DataFrame(rows).T


def randomisation_check(model, images: np.ndarray, explain, seed: int = 0) -> np.ndarray:
    """Spearman rank correlation, per image, between ``explain(model, images)`` heatmaps of the
    trained model and of the same model with every weight array scrambled (a permutation of its
    own values, so scales stay plausible). The trained weights are restored afterwards.

    Args:
        model: the model explained; its weights are scrambled during the call.
        images: N x S x S x C, raw pixels.
        explain: ``explain(model, images) -> N heatmaps``, e.g.
            :func:`fracturelib.explain.batch.cams_at_input`.
        seed: seed of the permutations.

    Returns:
        (N,) correlations (0.0 where undefined, e.g. a constant map); near 1 means the method's maps
        barely depend on the weights.
    """
    from scipy.stats import spearmanr
    rng = np.random.default_rng(seed)
    trained = explain(model, images)
    saved = model.get_weights()
    try:
        model.set_weights([rng.permutation(w.ravel()).reshape(w.shape) for w in saved])
        scrambled = explain(model, images)
    finally:
        model.set_weights(saved)
    out = []
    for a, b in zip(trained, scrambled):
        r = spearmanr(a.ravel(), b.ravel()).statistic
        out.append(0.0 if np.isnan(r) else float(r))
    return np.array(out)
