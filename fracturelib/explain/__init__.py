"""Where a model looks: CAM methods, localisation against expert boxes, faithfulness, shortcut checks."""
from fracturelib.explain.gradcam import find_target_layer, gradcam
from fracturelib.explain.localisation import localisation_scores, summarise_localisation
from fracturelib.explain.shortcuts import shortcut_masks, shortcut_scores

__all__ = ["find_target_layer", "gradcam", "localisation_scores", "summarise_localisation", "shortcut_masks",
           "shortcut_scores"]
