"""Vectors: :class:`SteeringVector` (per-layer directions with provenance, stored as safetensors) and
representation reading (contrastive pairs → a direction per layer). Imports ``models`` and ``data``."""
