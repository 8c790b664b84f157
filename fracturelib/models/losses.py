"""Training losses saved models need to load, registered as Keras serializables (so loading a model
that was compiled with one finds it by name, with no import of the module that trained it)."""
from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="fracturelib", name="focal_loss")
def focal_loss(y_true, logits):
    """CenterNet's penalty-reduced pixel-wise focal loss (alpha 2, beta 4), per positive, computed
    from logits (log-sigmoid): clipping probabilities instead kills the gradient of a saturated
    map, and the head then never recovers.

    Args:
        y_true: target heatmaps in [0, 1], Gaussian peaks of 1 at object centres.
        logits: predicted heatmap logits, same shape.

    Returns:
        Scalar tensor: the summed loss divided by the number of positives (at least 1).
    """
    from keras import ops
    p = ops.sigmoid(logits)
    pos = ops.cast(y_true >= 0.999, p.dtype)
    pos_loss = ops.log_sigmoid(logits) * ops.square(1 - p) * pos
    neg_loss = ops.log_sigmoid(-logits) * ops.square(p) * ops.power(1 - y_true, 4) * (1 - pos)
    n = ops.maximum(ops.sum(pos), 1.0)
    return -(ops.sum(pos_loss) + ops.sum(neg_loss)) / n
