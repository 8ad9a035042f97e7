"""Response shapes, for the OpenAPI docs (/docs) and to keep answers to them."""
from __future__ import annotations

from pydantic import BaseModel


class Prediction(BaseModel):
    label: str
    probability: float


class Cam(BaseModel):
    label: str          # the class the heatmap explains (the top prediction)
    png_base64: str     # the model's input view with the Grad-CAM heatmap blended over it


class ClassifyResponse(BaseModel):
    success: bool
    predictions: list[Prediction]
    cam: Cam | None = None


class BatchResult(BaseModel):
    filename: str
    success: bool
    predictions: list[Prediction] | None = None
    status: int | None = None       # a failed file: the status a single request would have got
    error: str | None = None


class BatchResponse(BaseModel):
    success: bool
    results: list[BatchResult]


class ErrorResponse(BaseModel):
    success: bool = False
    error: str
