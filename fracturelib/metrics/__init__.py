"""Numbers about predictions: metrics with bootstrap CIs, calibration, DeLong. Pure functions of arrays."""
