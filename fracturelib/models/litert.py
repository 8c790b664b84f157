"""Run an exported ``.tflite`` model in the LiteRT interpreter (``ai-edge-litert``), without TensorFlow.

:class:`LiteModel` answers the few calls :class:`fracturelib.app.predict.Predictor` and
:func:`fracturelib.models.localiser.heatmaps` make of a Keras model (``input_shape``,
``output_shape``, ``predict_on_batch``, ``predict``), so a ``.tflite`` classifier, localiser and
radiograph (OOD) feature extractor go through the same code. Importing this module imports neither
TensorFlow nor Keras (a test runs a whole ``.tflite`` prediction and checks ``sys.modules``).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from fracturelib.files import sha256_file
from fracturelib.models.cards import ModelCard, ModelCardError, check_agrees, read_card

#: The interpreter's threads when none are given: ``$FRACTURELIB_LITERT_THREADS``, else 2.
THREADS_ENV = "FRACTURELIB_LITERT_THREADS"
SUFFIX = ".tflite"


def default_threads() -> int:
    """The LiteRT interpreter's threads: ``$FRACTURELIB_LITERT_THREADS`` when set (>= 1), else 2.

    Returns:
        A whole number >= 1.
    """
    try:
        return max(1, int(os.environ.get(THREADS_ENV, "2")))
    except ValueError:
        return 2


def is_litert(path: str | Path | None) -> bool:
    """Whether ``path`` names an exported LiteRT model (a ``.tflite`` file).

    Args:
        path: a model path, or None.

    Returns:
        True for a ``.tflite`` name.
    """
    return path is not None and Path(path).suffix.lower() == SUFFIX


class LiteModel:
    """A ``.tflite`` model in a LiteRT interpreter (one input, one or more outputs, batch 1 inside).

    Attributes:
        path: the file (None when built from bytes).
        input_shape: Keras-style shape with batch None, e.g. ``(None, 224, 224, 1)``.
        output_shape: likewise for one output; for several (the detector's heatmap, box size and offset)
            a list of them in the Keras model's output order, as Keras gives it.
    """

    def __init__(self, model: str | Path | bytes, num_threads: int | None = None):
        """``model``: the .tflite file or its bytes; ``num_threads``: default :func:`default_threads`."""
        from ai_edge_litert.interpreter import Interpreter
        threads = num_threads or default_threads()
        if isinstance(model, (bytes, bytearray)):
            self.path = None
            self._it = Interpreter(model_content=bytes(model), num_threads=threads)
        else:
            self.path = Path(model)
            self._it = Interpreter(model_path=str(model), num_threads=threads)
        self._it.allocate_tensors()
        ins, outs = self._it.get_input_details(), keras_order(self._it)
        if len(ins) != 1 or not outs:
            raise ModelCardError(f"{self.path or 'LiteRT model'}: has {len(ins)} inputs and {len(outs)} outputs; "
                                 "fracturelib models have one input")
        self._in, self._outs = ins[0], outs
        self.input_shape = (None, *(int(d) for d in self._in["shape"][1:]))
        shapes = [(None, *(int(d) for d in o["shape"][1:])) for o in outs]
        self.output_shape = shapes[0] if len(shapes) == 1 else shapes

    def _one(self, x: np.ndarray) -> list[np.ndarray]:
        """One image (1 x S x S x C float32) -> the outputs (1 x ...) in Keras' order, (de)quantized as the
        file says."""
        scale, zero = self._in.get("quantization", (0.0, 0))
        if self._in["dtype"] != np.float32 and scale:
            info = np.iinfo(self._in["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        self._it.set_tensor(self._in["index"], np.ascontiguousarray(x, dtype=self._in["dtype"]))
        self._it.invoke()
        ys = []
        for out in self._outs:
            y = self._it.get_tensor(out["index"])
            scale, zero = out.get("quantization", (0.0, 0))
            if out["dtype"] != np.float32 and scale:
                y = (y.astype(np.float32) - zero) * scale
            ys.append(np.array(y, np.float32))
        return ys

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray | list[np.ndarray]:
        """The outputs of a batch, one image at a time (the file's batch is 1).

        Args:
            x: (N, S, S, C) float32, pixels as the Keras model takes them.

        Returns:
            (N, ...) float32 outputs; for a model of several outputs a list of them in Keras' order (what
            Keras' ``predict_on_batch`` returns).
        """
        x = np.asarray(x, np.float32)
        per_image = [self._one(x[i:i + 1]) for i in range(len(x))]
        outs = [np.concatenate([p[j] for p in per_image]) if per_image else
                np.zeros((0, *(int(d) for d in o["shape"][1:])), np.float32) for j, o in enumerate(self._outs)]
        return outs[0] if len(outs) == 1 else outs

    def predict(self, x: np.ndarray, verbose: int = 0, batch_size: int | None = None) -> np.ndarray | list[np.ndarray]:
        """Keras' ``predict`` signature (``verbose`` and ``batch_size`` are accepted and ignored).

        Args:
            x: (N, S, S, C) float32.
            verbose: ignored.
            batch_size: ignored.

        Returns:
            As :meth:`predict_on_batch`.
        """
        return self.predict_on_batch(x)


#: Output names a model may carry in its serving signature, in the detector's Keras order.
HEADS = ("heatmap", "box_size", "box_offset")


def _rank(name: str) -> tuple[int, str]:
    """Where an output named ``name`` comes in the Keras order: a head of :data:`HEADS` by its place, else
    the number it ends with (``output_2``, ``StatefulPartitionedCall:2``; TensorFlow's ``Identity``,
    ``Identity_1``, ``Identity_2``: no number is the first)."""
    if name in HEADS:
        return HEADS.index(name), name
    tail = re.search(r"(\d+)$", name)
    return (int(tail.group(1)) if tail else 0), name


def keras_order(interpreter) -> list[dict]:
    """The interpreter's output details in the Keras model's output order.

    The converter may list a model's outputs in another order than Keras (a detector's three heads come
    back as box_size, heatmap, box_offset); the serving signature keeps Keras' order in its output names
    (``output_0``, ``output_1`` ... or the heads' own names), so the tensors are taken in that order;
    without a single signature, by the number that ends each tensor's name.

    Args:
        interpreter: an allocated LiteRT ``Interpreter``.

    Returns:
        The output details (dicts with ``index``, ``shape``, ``dtype``, ``quantization``), in Keras' order.
    """
    outs = interpreter.get_output_details()
    if len(outs) < 2:
        return outs
    by_index = {o["index"]: o for o in outs}
    if len(interpreter.get_signature_list()) == 1:
        named = interpreter.get_signature_runner().get_output_details()
        if {d["index"] for d in named.values()} == set(by_index):
            return [by_index[named[n]["index"]] for n in sorted(named, key=_rank)]
    return sorted(outs, key=lambda o: _rank(o["name"]))


def load_lite(path: str | Path, expect: dict | None = None, num_threads: int | None = None):
    """Load a ``.tflite`` model after checking its card (``<name>.tflite.json``), as
    :func:`fracturelib.models.cards.load_model` does for ``.keras``; returns ``(LiteModel, card)``.

    Args:
        path: the .tflite file.
        expect: card key -> the value the caller needs, or None.
        num_threads: the interpreter's threads (default :func:`default_threads`).

    Returns:
        (the :class:`LiteModel`, its :class:`~fracturelib.models.cards.ModelCard`).

    Raises:
        ModelCardError: no such file, a missing or damaged card, a hash mismatch, a file LiteRT cannot
            read, or a shape that differs from the card; one line naming the file and the fix.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelCardError(f"{path}: no such model file; export one with `fracturelib export MODEL.keras "
                             "--format litert`")
    card: ModelCard = read_card(path)
    if card.model_sha256 != sha256_file(path):
        raise ModelCardError(f"{path}: file differs from the one its card describes (hash mismatch); "
                             "export the model again")
    for key, want in (expect or {}).items():
        have = card.to_dict().get(key)
        if have != (list(want) if isinstance(want, tuple) else want):
            raise ModelCardError(f"{path}: card says {key}={have!r}, expected {want!r}")
    try:
        model = LiteModel(path, num_threads)
    except (ValueError, RuntimeError, OSError) as e:
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise ModelCardError(f"{path}: LiteRT cannot load this model ({why}); export it again") from None
    check_agrees(model, card, str(path))
    return model, card
