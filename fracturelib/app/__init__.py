"""The user-facing layer: predict (one image -> an answer), the notebook widget, the command line."""
