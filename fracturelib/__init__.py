"""fracturelib: the library behind the fracture-classification notebooks (data accounting,
models, evaluation with confidence intervals, Grad-CAM, reports)."""
__version__ = "0.1.0"
