"""What every run-file model shares: strict models (an undeclared field is an error) and open ones
(extra keys kept), the interval and status types, and the list of a model's documented fields.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

FITS_FORMAT_VERSION = 2


Status = Literal["pass", "warn", "fail"]


Interval = list[float | None]  # [low, high]; null: beyond the grid or unknown


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Open(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


def model_fields(model: type[BaseModel]) -> dict[str, Any]:
    """Field name (as written to JSON) → annotation, for documentation checks."""
    return {(f.alias or name): f.annotation for name, f in model.model_fields.items()}
