"""The paper's laws and their fits: the curve forms, weighted least squares with intervals, per-curve
candidates and comparison, bootstrap replicates, and the joint (several vectors) surface. numpy/scipy only."""
