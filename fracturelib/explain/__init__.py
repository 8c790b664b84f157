"""Where a model looks: Grad-CAM / Grad-CAM++, localisation against expert boxes, shortcut checks."""
from .gradcam import find_target_layer, gradcam, heatmap_to_image, letterbox, overlay, overlay_with_regions
from .localisation import localisation_scores, summarise_localisation
from .shortcuts import shortcut_masks, shortcut_scores

__all__ = ["find_target_layer", "gradcam", "heatmap_to_image", "letterbox", "overlay", "overlay_with_regions",
           "localisation_scores", "summarise_localisation", "shortcut_masks", "shortcut_scores"]
