"""Score-CAM (Wang et al. 2020): no gradients. Each channel of the feature map, upsampled to the
input and scaled to [0, 1], masks the image; the model's score for the explained class on that
masked image is the channel's weight (softmax over channels). Costs one forward pass per channel,
so for wide backbones only the ``max_channels`` most active channels of each image are scored
(the others weigh 0)."""
from __future__ import annotations

import numpy as np

from fracturelib.explain.faithfulness import class_scores
from fracturelib.explain.gradcam import find_target_layer
from fracturelib.models.kerasutil import layer_output


def scorecam(model, images, class_index: int | None = None, layer: str | None = None,
             max_channels: int = 64, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps (N, h, w) in [0, 1] at the feature map's resolution, and the model's outputs,
    like :func:`fracturelib.explain.gradcam.gradcam`."""
    import cv2
    import keras
    images = np.asarray(images, dtype="float32")
    target = find_target_layer(model, layer)
    fmodel = keras.Model(model.inputs, [layer_output(model, target), model.output])
    fmaps, preds = fmodel.predict(images, batch_size=batch_size, verbose=0)
    size = images.shape[1:3]
    cams = []
    for x, fmap, pred in zip(images, fmaps, preds):
        if class_index is not None:
            cls = int(class_index)
        else:
            cls = int(pred[0] >= 0.5) if pred.shape[-1] == 1 else int(np.argmax(pred))
        keep = np.argsort(fmap.mean(axis=(0, 1)))[::-1][:max_channels]
        masks = []
        for k in keep:
            m = cv2.resize(fmap[:, :, k].astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
            lo, hi = m.min(), m.max()
            masks.append((m - lo) / (hi - lo) if hi > lo else np.zeros_like(m))
        masks = np.stack(masks)[..., None]
        scores = class_scores(model, x[None] * masks, cls, batch_size)
        w = np.exp(scores - scores.max())
        w /= w.sum()
        cam = np.maximum((fmap[:, :, keep] * w).sum(axis=-1), 0)
        cams.append(cam / cam.max() if cam.max() > 0 else cam)
    return np.stack(cams), preds
