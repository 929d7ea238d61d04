"""What the service answers, as pydantic models: the OpenAPI schema's response bodies.

Every refusal has the same body (:class:`ErrorBody`); :func:`errors` lists the refusals a route
can answer, each with its meaning, for the route's ``responses=``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    status: int = Field(description="the HTTP status, repeated")
    field: str | None = Field(description="the request field at fault, or null when it is the request as a whole")
    message: str = Field(description="what was wrong and what was expected")


class ErrorBody(BaseModel):
    error: ErrorDetail


_MEANING = {
    400: "the body is not well-formed JSON or multipart form data",
    401: "no API key, or one the service does not know (header `X-API-Key` or `Authorization: Bearer`)",
    404: "no such product or job",
    409: "the job is not done yet",
    413: "an upload or the whole body is too large, or an image has too many pixels",
    415: "an upload is not a JPEG, PNG or WebP image",
    422: "a field is missing or out of range (the body names it)",
    429: "too many requests for this key or client, or too many pending jobs; see `Retry-After`",
    501: "the model has no head for this task",
}


def errors(*statuses: int) -> dict[int | str, dict]:
    """``responses=`` entries for the refusals ``statuses`` (each with :class:`ErrorBody`)."""
    out: dict[int | str, dict] = {}
    for status in statuses:
        entry: dict = {"model": ErrorBody, "description": _MEANING[status]}
        if status == 429:
            entry["headers"] = {
                "Retry-After": {"description": "seconds to wait before trying again", "schema": {"type": "integer"}}
            }
        if status == 401:
            entry["headers"] = {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}}
        out[status] = entry
    return out


class SearchResult(BaseModel):
    id: str
    score: float = Field(description="image_score + caption_weight * caption_score")
    image_score: float
    caption_score: float
    category: str
    title: str | None
    generated_caption: str
    captions: list[str]
    attributes: dict[str, str]
    image_url: str


class SearchResponse(BaseModel):
    kind: Literal["text", "image", "composed", "similar"]
    query: dict[str, str] = Field(description="the query as the service understood it (cleaned text, image size)")
    results: list[SearchResult]
    took_ms: float


class Product(BaseModel):
    id: str
    category: str
    title: str | None
    captions: list[str]
    generated_caption: str
    attributes: dict[str, str]
    image_mime: str
    image_url: str


class Health(BaseModel):
    status: Literal["ok"]
    products: int
    catalog_version: str
    heads: list[str]
    captions_in_catalog: bool
    jobs_pending: int
    auth: bool = Field(description="whether the API asks for a key")
    limits: dict[str, float]


class Categories(BaseModel):
    categories: list[str]


class Attributes(BaseModel):
    attributes: dict[str, list[str]] = Field(description="every attribute name with the values products have")


class Caption(BaseModel):
    caption: str
    style: str
    took_ms: float


class Job(BaseModel):
    id: str
    kind: str = Field(description="generate or tryon")
    status: Literal["queued", "running", "done", "failed"]
    step: int
    steps: int
    error: str | None
    seconds: float | None
    image_url: str | None = Field(None, description="present once the job is done")
    status_url: str | None = Field(None, description="where to poll (in the answer to a new job)")
