"""Checks of the theory's assumptions: A1 and A3 (with the helpfulness curve they predict) and where
steering breaks the model."""
