"""Run an exported ``.tflite`` model in the LiteRT interpreter (``ai-edge-litert``), without TensorFlow.

:class:`LiteModel` answers the few calls :class:`fracturelib.app.predict.Predictor` and
:func:`fracturelib.models.localiser.heatmaps` make of a Keras model (``input_shape``,
``output_shape``, ``predict_on_batch``, ``predict``), so a ``.tflite`` classifier, localiser and
radiograph (OOD) feature extractor go through the same code. Importing this module imports neither
TensorFlow nor Keras (a test runs a whole ``.tflite`` prediction and checks ``sys.modules``).
"""
from __future__ import annotations

import os
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
    """A ``.tflite`` model in a LiteRT interpreter (one input, one output, batch 1 inside).

    Attributes:
        path: the file (None when built from bytes).
        input_shape, output_shape: Keras-style shapes with batch None, e.g. ``(None, 224, 224, 1)``.
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
        ins, outs = self._it.get_input_details(), self._it.get_output_details()
        if len(ins) != 1 or len(outs) != 1:
            raise ModelCardError(f"{self.path or 'LiteRT model'}: has {len(ins)} inputs and {len(outs)} outputs; "
                                 "fracturelib models have one each")
        self._in, self._out = ins[0], outs[0]
        self.input_shape = (None, *(int(d) for d in self._in["shape"][1:]))
        self.output_shape = (None, *(int(d) for d in self._out["shape"][1:]))

    def _one(self, x: np.ndarray) -> np.ndarray:
        """One image (1 x S x S x C float32) -> the output (1 x ...), (de)quantized as the file says."""
        scale, zero = self._in.get("quantization", (0.0, 0))
        if self._in["dtype"] != np.float32 and scale:
            info = np.iinfo(self._in["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        self._it.set_tensor(self._in["index"], np.ascontiguousarray(x, dtype=self._in["dtype"]))
        self._it.invoke()
        y = self._it.get_tensor(self._out["index"])
        scale, zero = self._out.get("quantization", (0.0, 0))
        if self._out["dtype"] != np.float32 and scale:
            y = (y.astype(np.float32) - zero) * scale
        return np.array(y, np.float32)

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray:
        """The outputs of a batch, one image at a time (the file's batch is 1).

        Args:
            x: (N, S, S, C) float32, pixels as the Keras model takes them.

        Returns:
            (N, ...) float32 outputs.
        """
        x = np.asarray(x, np.float32)
        return np.concatenate([self._one(x[i:i + 1]) for i in range(len(x))]) if len(x) else \
            np.zeros((0, *self.output_shape[1:]), np.float32)

    def predict(self, x: np.ndarray, verbose: int = 0, batch_size: int | None = None) -> np.ndarray:
        """Keras' ``predict`` signature (``verbose`` and ``batch_size`` are accepted and ignored).

        Args:
            x: (N, S, S, C) float32.
            verbose: ignored.
            batch_size: ignored.

        Returns:
            (N, ...) float32 outputs.
        """
        return self.predict_on_batch(x)


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
