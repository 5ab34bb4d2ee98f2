"""Decisions from fitted curves: the efficient regime and Pareto frontier, the budgeted recommendation,
the tradeoff of two tasks, steering vs prompting, and the numbers of an atlas entry."""
