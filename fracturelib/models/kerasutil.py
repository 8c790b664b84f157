"""Small Keras graph helpers shared by training and explanation code (so neither imports the other)."""
from __future__ import annotations


def layer_output(model, layer):
    """The symbolic output of ``layer`` inside ``model``'s graph. For a nested model (a backbone)
    ``layer.output`` belongs to its own inner graph; its call in the outer graph is its last
    inbound node.

    Args:
        model: the outer Keras model (unused; names the graph meant).
        layer: a layer, or nested model, of ``model``.

    Returns:
        The first symbolic output tensor of that call.
    """
    import keras
    if isinstance(layer, keras.Model) and layer._inbound_nodes:
        return layer._inbound_nodes[-1].output_tensors[0]
    return layer.output


def layer_outputs(model, layer) -> list:
    """All symbolic outputs of ``layer`` inside ``model``'s graph (a nested model may have several).

    Args:
        model: the outer Keras model (unused; names the graph meant).
        layer: a layer, or nested model, of ``model``.

    Returns:
        List of symbolic output tensors.
    """
    import keras
    if isinstance(layer, keras.Model) and layer._inbound_nodes:
        return list(layer._inbound_nodes[-1].output_tensors)
    out = layer.output
    return list(out) if isinstance(out, (list, tuple)) else [out]
