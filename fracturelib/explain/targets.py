"""What a class activation map explains, said once for every CAM method, faithfulness and predict.

A model of this project ends in ONE sigmoid unit (``p`` = probability of the positive class) or in
a softmax over classes. A *target* names the explained class of each image:

- :class:`ClassTarget`: a fixed class. Softmax: its index. One sigmoid unit: 1 is the positive
  class (explained score ``p``), 0 the negative class (score ``1 - p``).
- :class:`PredictedClass`: the class the model predicts. Softmax: the arg-max. One sigmoid unit:
  positive when ``p >= threshold`` (default 0.5; predict passes its model card's threshold).

The explained *score* of an image is its explained class's probability (:func:`score`). The rules
are written with ``keras.ops``, so the same code runs on NumPy outputs and inside the compiled
graph of :class:`fracturelib.explain.cams.CAMEngine`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _ops():
    import keras
    return keras.ops


def score(outputs, classes):
    """The probability of each image's explained class.

    Args:
        outputs: model outputs (N, units): one sigmoid unit or softmax probabilities.
        classes: explained class per image (N,), integers (sigmoid: 1 positive, 0 negative).

    Returns:
        (N,) scores, of the same kind as ``outputs`` (a NumPy array or a tensor).
    """
    ops = _ops()
    units = outputs.shape[-1]
    if units == 1:
        p = outputs[:, 0]
        return ops.where(ops.equal(classes, 1), p, 1.0 - p)
    return ops.sum(outputs * ops.one_hot(classes, units, dtype=outputs.dtype), axis=-1)


class Target:
    """Base of the target family: a rule ``(outputs, value) -> class per image`` and its one value.

    Subclasses define the static :meth:`rule` and the float :attr:`value` (a class index or a
    threshold); the CAM engine compiles one graph per subclass and feeds ``value`` as a tensor.
    """

    @staticmethod
    def rule(outputs, value):
        """The explained class of each image (``keras.ops``: NumPy or graph tensors).

        Args:
            outputs: model outputs (N, units).
            value: the rule's parameter (a class index or a threshold), a float.

        Returns:
            (N,) int32 classes.
        """
        raise NotImplementedError

    @property
    def value(self) -> float:
        """The rule's parameter fed to :meth:`rule` (a class index or a threshold)."""
        raise NotImplementedError

    def check(self, units: int) -> None:
        """Refuse a model this target cannot apply to.

        Args:
            units: the model's output width (1: one sigmoid unit).

        Raises:
            ValueError: the target names a class the model does not have.
        """

    def classes(self, outputs) -> np.ndarray:
        """The explained class of each image.

        Args:
            outputs: model outputs (N, units).

        Returns:
            (N,) int array; for one sigmoid unit 1 = positive, 0 = negative.
        """
        outputs = np.asarray(outputs, dtype="float32")
        return np.asarray(self.rule(outputs, np.float32(self.value))).astype(int)

    def scores(self, outputs) -> np.ndarray:
        """The explained class's probability for each image (see :func:`score`).

        Args:
            outputs: model outputs (N, units).

        Returns:
            (N,) float array.
        """
        outputs = np.asarray(outputs, dtype="float32")
        return np.asarray(score(outputs, self.classes(outputs)))


@dataclass(frozen=True)
class ClassTarget(Target):
    """A fixed class: a softmax index, or for one sigmoid unit 1 = positive and 0 = negative.

    Args:
        index: the class explained in every image.
    """

    index: int

    @staticmethod
    def rule(outputs, value):
        """Class ``value`` for every image.

        Args:
            outputs: model outputs (N, units).
            value: the class index, as a float.

        Returns:
            (N,) int32 classes.
        """
        ops = _ops()
        return ops.zeros_like(outputs[:, 0], dtype="int32") + ops.cast(value, "int32")

    @property
    def value(self) -> float:
        return float(self.index)

    def check(self, units: int) -> None:
        """Refuse a class the model does not have.

        Args:
            units: the model's output width (1: one sigmoid unit, classes 0 and 1).

        Raises:
            ValueError: ``index`` is not a class of the model.
        """
        n = 2 if units == 1 else units
        if not 0 <= int(self.index) < n:
            kind = "one sigmoid unit (1 = positive, 0 = negative)" if units == 1 else f"{units} classes"
            raise ValueError(f"class {self.index} does not exist for a model with {kind}")


@dataclass(frozen=True)
class PredictedClass(Target):
    """The predicted class: arg-max of a softmax; for one sigmoid unit, positive when
    ``p >= threshold``.

    Args:
        threshold: the decision threshold of a one-unit sigmoid model (ignored for softmax).
    """

    threshold: float = 0.5

    @staticmethod
    def rule(outputs, value):
        """The predicted class of each image.

        Args:
            outputs: model outputs (N, units).
            value: the threshold (one sigmoid unit: positive when p >= value).

        Returns:
            (N,) int32 classes.
        """
        ops = _ops()
        if outputs.shape[-1] == 1:
            return ops.cast(ops.greater_equal(outputs[:, 0], ops.cast(value, outputs.dtype)), "int32")
        return ops.cast(ops.argmax(outputs, axis=-1), "int32")

    @property
    def value(self) -> float:
        return float(self.threshold)


POSITIVE = ClassTarget(1)       #: one sigmoid unit: the positive class (score p)
NEGATIVE = ClassTarget(0)       #: one sigmoid unit: the negative class (score 1 - p)
PREDICTED = PredictedClass()    #: the predicted class at threshold 0.5 (softmax: arg-max)


def predicted(threshold: float = 0.5) -> PredictedClass:
    """The predicted class at ``threshold`` (for one sigmoid unit; softmax: arg-max).

    Args:
        threshold: decision threshold, e.g. a model card's ``threshold``.

    Returns:
        The target.
    """
    return PredictedClass(float(threshold))


def as_target(target: Target | int | None) -> Target:
    """A target from what callers pass.

    Args:
        target: None (the predicted class at 0.5), an int (that class) or a :class:`Target`.

    Returns:
        The :class:`Target`.

    Raises:
        TypeError: ``target`` is none of these.
    """
    if target is None:
        return PREDICTED
    if isinstance(target, Target):
        return target
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        return ClassTarget(int(target))
    raise TypeError(f"target must be None, a class index or a targets.Target, not {target!r}")
