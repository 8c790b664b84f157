"""Where a model looks: CAM methods, localisation against expert boxes, faithfulness, shortcut checks."""
from fracturelib.explain import targets
from fracturelib.explain.cams import compute, find_target_layer, gradcam, names, register, unregister
from fracturelib.explain.localisation import localisation_scores, summarise_localisation
from fracturelib.explain.shortcuts import shortcut_masks, shortcut_scores

__all__ = ["compute", "find_target_layer", "gradcam", "localisation_scores", "names", "register", "shortcut_masks",
           "shortcut_scores", "summarise_localisation", "targets", "unregister"]
