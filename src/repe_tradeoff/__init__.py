"""Measure, explain and predict the alignment-helpfulness tradeoff of steering."""

__version__ = "0.1.0"
