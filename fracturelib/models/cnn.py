"""The design's small CNN (Functional API with an explicit Input, so Grad-CAM can reach every layer)."""
from __future__ import annotations


def build_binary_cnn(image_size: int = 128, channels: int = 1, dropout: float = 0.5,
                     learning_rate: float = 1e-3):
    """The classic small CNN: Conv 32, pool, Conv 64, pool, Dense 128, sigmoid.

    Inputs are raw pixel values in [0, 255]; the model rescales them itself.

    Args:
        image_size, channels: the model input (square side in pixels, number of channels).
        dropout: dropout rate before the output unit.
        learning_rate: Adam learning rate.

    Returns:
        A compiled ``keras.Model`` (binary cross-entropy; metrics ROC-AUC ``auc``, PR-AUC ``pr_auc``,
        accuracy) with one sigmoid output: the probability of a fracture.
    """
    import keras
    from keras import layers

    inp = keras.Input((image_size, image_size, channels), name="image")
    x = layers.Rescaling(1 / 255.0, name="rescale")(inp)
    x = layers.Conv2D(32, 3, activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(name="pool1")(x)
    x = layers.Conv2D(64, 3, activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(128, activation="relu", name="dense")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    out = layers.Dense(1, activation="sigmoid", name="fractured")(x)
    model = keras.Model(inp, out, name="binary_cnn")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss="binary_crossentropy",
                  metrics=[keras.metrics.AUC(name="auc"),
                           keras.metrics.AUC(curve="PR", name="pr_auc"), "accuracy"])
    return model
