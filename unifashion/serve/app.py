"""``unifashion serve``: the REST API and web page over a model and a catalog.

    unifashion serve --model MODEL --catalog CATALOG [--host 127.0.0.1 --port 8000]
    open http://127.0.0.1:8000/            the web page
         http://127.0.0.1:8000/openapi.json the API contract; /docs its Swagger UI (served from local files)

Endpoints (all JSON unless said):
    GET  /api/health                       model heads, catalog size and version, pending jobs
    GET  /api/categories, /api/attributes  what the filters can take
    POST /api/search/text                  {"text", "k", "category", "attributes", "caption_weight"}
    POST /api/search/image                 form: image, k, category, attribute
    POST /api/search/composed              form: image or product_id, text, k, category, attribute
    POST /api/search/similar               {"product_id", "k", "category", "attributes"}: more like this
    POST /api/caption                      form: image, style
    POST /api/generate                     form: text and/or image, seed, steps -> 202 job
    POST /api/tryon                        form: person, cloth, pose (keypoints JSON), mask or garment, seed -> 202 job
    GET  /api/jobs/{id}                    status and denoising progress; /api/jobs/{id}/image: the PNG
    GET  /api/products/{id}                metadata; /api/products/{id}/image: the product image
    GET  /metrics                          Prometheus metrics

``/openapi.json`` is the exact contract: required fields required, ranges, the texts accepted
(``VISIBLE_TEXT``), the categories and attribute values of this catalog, and every refusal with
its status. Every refusal is ``{"error": {"status", "field", "message"}}`` (see ``serve/inputs.py``
for the limits). With API keys (``serve/auth.py``) every ``/api`` route but health and the two
image routes needs a key; rate limits answer 429 with ``Retry-After``. Search encodings are
batched (``serve/batching.py``) and share one lock with captions (one model pass at a time keeps
2 cores busy without thrashing); generation runs in its own bounded job queue.
"""

import contextlib
import copy
import json
import os
import re
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

import numpy as np
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from unifashion.catalog.build import mean_vectors
from unifashion.catalog.store import Catalog, Hit
from unifashion.serve import schema
from unifashion.serve.auth import KeyStore, RateLimiter, key_from_headers
from unifashion.serve.batching import Batcher
from unifashion.serve.inputs import VISIBLE_TEXT, InputError, Limits, clean_text, read_image
from unifashion.serve.jobs import JobQueue, QueueFull
from unifashion.serve.metrics import PROMETHEUS_CONTENT_TYPE, Metrics, log_request, route_of
from unifashion.serve.priority import PriorityLock
from unifashion.utils.errors import UniFashionError

__all__ = ["Limits", "create_app", "serve"]

IMAGE_TYPES = "image/jpeg, image/png, image/webp"
# Routes a key is not asked for: the page's own assets, health probes, and the two image routes
# (an <img> cannot send a header; product images are the catalog's public pictures and a job's
# image is reached only through its random id).
_OPEN_PATHS = ("/", "/docs", "/openapi.json", "/api/health")
_OPEN_PREFIXES = ("/docs/",)
_ENUM_LIMIT = 2000  # attribute name:value pairs listed in the schema (beyond: a pattern)


def _open_route(path: str) -> bool:
    if path in _OPEN_PATHS or path.startswith(_OPEN_PREFIXES):
        return True
    parts = path.strip("/").split("/")
    return len(parts) == 4 and parts[0] == "api" and parts[1] in ("products", "jobs") and parts[3] == "image"


def _read_upload(upload: UploadFile | None, field: str, limits: Limits):
    data = upload.file.read(limits.max_upload_bytes + 1)
    return read_image(data, field, limits)


class Service:
    """What the endpoints share: the model, the catalog, the limits, keys, locks and the job queue."""

    def __init__(
        self,
        model,
        catalog: Catalog,
        limits: Limits,
        *,
        steps: int | None = None,
        keys: KeyStore | None = None,
    ):
        self.model = model
        self.catalog = catalog
        self.limits = limits
        self.steps = steps
        self.keys = keys if keys is not None and keys.keys else None
        self.rates = RateLimiter()
        # One model pass at a time: searches and captions first, generation steps in between.
        self.search_lock = PriorityLock()
        self.jobs = JobQueue(limits.max_generation_jobs, limits.max_queued_jobs)
        self.metrics = Metrics(lambda: self.batcher.waiting, self.jobs.states)
        self.batcher = Batcher(
            {
                "text": lambda texts: model.encode_texts(texts).float().numpy(),
                "image": lambda images: model.encode_images(images).float().numpy(),
                "composed": lambda pairs: (
                    model.encode_composed([p for p, _ in pairs], [t for _, t in pairs]).float().numpy()
                ),
            },
            self.search_lock,
            max_batch=limits.max_batch,
            wait_ms=limits.batch_wait_ms,
            on_pass=self.metrics.observe_pass,
        )
        # Uploads are one-off images: keep them out of the on-disk feature cache.
        model.feature_cache.enabled = False

    @property
    def rate_limited(self) -> bool:
        """Whether any client can be answered 429 for its request rate."""
        per_key = self.keys is not None and any(k.per_minute for k in self.keys.keys)
        return self.limits.rate_per_minute is not None or per_key

    # -- argument checks -------------------------------------------------------------

    def check_category(self, category: str | None) -> str | None:
        if category in (None, ""):
            return None
        if category not in self.catalog.categories():
            raise InputError(
                422,
                "category",
                f"category: {category!r} is not in the catalog (one of {', '.join(self.catalog.categories())})",
            )
        return category

    def check_attributes(self, wanted: dict[str, str | list[str]], field: str) -> dict[str, str | list[str]]:
        """Filters name -> value(s), each a name and a value some product has."""
        known = self.catalog.attribute_values()
        for name, values in wanted.items():
            if name not in known:
                raise InputError(
                    422, field, f"{field}: no product has an attribute {name!r} (names: {', '.join(known)})"
                )
            for value in [values] if isinstance(values, str) else values:
                if value not in known[name]:
                    raise InputError(
                        422,
                        field,
                        f"{field}: no product has {name}={value!r} ({name} is one of {', '.join(known[name])})",
                    )
        return wanted

    def attribute_pairs(self, items: list[str] | None) -> dict[str, str | list[str]]:
        """Form filters ``name:value`` (the field ``attribute``, repeated: several values of one name
        match any of them) as name -> values."""
        wanted: dict[str, list[str]] = {}
        for item in items or ():
            name, sep, value = item.partition(":")
            if not sep or not name or not value:
                raise InputError(422, "attribute", f"attribute: {item!r}; expected name:value, e.g. colour:red")
            wanted.setdefault(name, []).append(value)
        return self.check_attributes(wanted, "attribute")

    def check_product(self, product_id: str) -> str:
        if product_id not in self.catalog:
            raise InputError(404, "product_id", f"product_id: no product {product_id!r} in the catalog")
        return product_id

    def need_head(self, task: str, field: str) -> None:
        if task not in self.model.heads:
            raise InputError(501, field, f"this model has no {task} head (heads: {', '.join(self.model.heads)})")

    # -- search ------------------------------------------------------------------------

    def results(self, hits: list[Hit]) -> list[dict[str, Any]]:
        meta = self.catalog.products([h.id for h in hits])
        return [
            {
                "id": h.id,
                "score": round(h.score, 6),
                "image_score": round(h.image_score, 6),
                "caption_score": round(h.caption_score, 6),
                "category": m["category"],
                "title": m["title"],
                "generated_caption": m["generated_caption"],
                "captions": m["captions"],
                "attributes": {k: str(v) for k, v in m["attributes"].items() if isinstance(v, str | int | float)},
                "image_url": _image_url(h.id),
            }
            for h, m in zip(hits, meta, strict=True)
        ]

    def search(
        self,
        kind: str,
        vector: np.ndarray,
        *,
        by: str,
        k: int,
        category: str | None,
        attributes: dict[str, str | list[str]],
        caption_weight: float | None,
        start: float,
        query: dict,
        exclude: tuple[str, ...] = (),
    ) -> dict:
        hits = self.catalog.search(
            vector,
            by=by,
            k=k,
            category=category,
            attributes=attributes,
            caption_weight=caption_weight,
            exclude=exclude,
        )
        return {
            "kind": kind,
            "query": query,
            "results": self.results(hits),
            "took_ms": round((time.perf_counter() - start) * 1000, 2),
        }


def _json_integer(value: Any) -> int:
    """An integer as JSON Schema counts them: 5 and 5.0, not "5" or true (the JSON bodies' models are strict)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not float(value).is_integer():
        raise ValueError("expected an integer")
    return int(value)


JsonInt = Annotated[int, BeforeValidator(_json_integer)]


def _image_url(product_id: str) -> str:
    return f"/api/products/{quote(product_id, safe='')}/image"


def _error(status: int, field: str | None, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(InputError(status, field, message).payload(), status_code=status, headers=headers)


def create_app(
    model,
    catalog: Catalog,
    limits: Limits | None = None,
    *,
    steps: int | None = None,
    keys: KeyStore | None = None,
    cors_origins: tuple[str, ...] = (),
) -> FastAPI:
    """The FastAPI app over a loaded :class:`UniFashion` model and a :class:`Catalog`. With ``keys``
    (a :class:`KeyStore` holding at least one key) every protected route needs one; ``cors_origins``
    are the web origins allowed to call the API from a browser (none: same origin only)."""
    limits = limits or Limits()
    svc = Service(model, catalog, limits, steps=steps, keys=keys)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        svc.jobs.shutdown()
        svc.batcher.close()

    app = FastAPI(
        title="UniFashion",
        version="0.1.0",
        lifespan=lifespan,
        description="Fashion search (text, image, composed, similar), captions and generation over a product catalog.",
        docs_url=None,  # served below from the swagger-ui-bundle package, not from a CDN
        redoc_url=None,
    )
    app.state.service = svc

    _add_docs_routes(app)
    _add_searches_first(app, svc)
    _add_access_control(app, svc)
    _add_error_handlers(app, limits)
    _add_metrics(app, svc)
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
            expose_headers=["Retry-After"],
            max_age=600,
        )
    _add_catalog_routes(app, svc)
    _add_search_routes(app, svc)
    _add_caption_and_image_routes(app, svc)

    def openapi() -> dict:
        if app.openapi_schema is None:
            base = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            app.openapi_schema = _contract(base, svc)
        return app.openapi_schema

    app.openapi = openapi
    return app


def _add_searches_first(app: FastAPI, svc: Service) -> None:
    """Searches and captions are marked active for their whole request; generation steps wait for them."""

    @app.middleware("http")
    async def _searches_first(request: Request, call_next):
        if request.url.path.startswith(("/api/search/", "/api/caption")):
            with svc.search_lock.activity():
                return await call_next(request)
        return await call_next(request)


def _add_access_control(app: FastAPI, svc: Service) -> None:
    """API keys and rate limits, before any work is done for a request."""

    @app.middleware("http")
    async def _access(request: Request, call_next):
        path = request.url.path
        if request.method == "OPTIONS" or _open_route(path):
            return await call_next(request)
        per_minute = svc.limits.rate_per_minute
        client = f"address:{request.client.host if request.client else '?'}"
        if svc.keys is not None:
            key = key_from_headers(request.headers)
            found = svc.keys.find(key) if key else None
            if found is None:
                why = "missing" if not key else "not a key of this service"
                return _error(
                    401,
                    "X-API-Key",
                    f"API key {why}: send it as the X-API-Key header or as Authorization: Bearer KEY",
                    {"WWW-Authenticate": "Bearer"},
                )
            client = f"key:{found.name}"
            per_minute = found.per_minute or per_minute
            request.state.key_name = found.name
        if per_minute:
            wait = svc.rates.take(client, per_minute)
            if wait:
                who = client.split(":", 1)[0]
                return _error(
                    429,
                    None,
                    f"more than {per_minute:g} requests a minute for this {who}; try again in {wait} s",
                    {"Retry-After": str(wait)},
                )
        return await call_next(request)


def _add_error_handlers(app: FastAPI, limits: Limits) -> None:
    """Every refusal as a JSON body naming the field: bad input, schema errors, HTTP errors, model errors."""

    @app.exception_handler(InputError)
    async def _input_error(_: Request, exc: InputError):
        return JSONResponse(exc.payload(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":
            return _error(
                422, None, f"request body: invalid JSON ({first.get('ctx', {}).get('error', 'cannot parse')})"
            )
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "form")]
        field = loc[0] if loc else None
        msg = "missing" if first.get("type") == "missing" else first.get("msg", "invalid request")
        return _error(422, field, f"{field}: {msg}" if field else msg)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException):
        # 405 keeps its Allow header (which methods the path takes).
        return _error(exc.status_code, None, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(UniFashionError)
    async def _model_error(_: Request, exc: UniFashionError):
        return _error(422, None, str(exc))

    @app.middleware("http")
    async def _body_limit(request: Request, call_next):
        # Refuse an oversized body before reading it (uploads of a few files plus form fields).
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > 4 * limits.max_upload_bytes + 65536:
            return _error(413, None, f"request body of {int(length):,} bytes; at most {4 * limits.max_upload_bytes:,}")
        return await call_next(request)


def _add_metrics(app: FastAPI, svc: Service) -> None:
    """/metrics, and every request (refusals included) counted, timed and logged as one JSON line."""

    @app.middleware("http")
    async def _measure(request: Request, call_next):
        start = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            seconds = time.perf_counter() - start
            route = route_of(request.scope)
            svc.metrics.observe_request(request.method, route, status, seconds)
            client = request.client.host if request.client else None
            log_request(request.method, request.url.path, route, status, seconds, client)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(svc.metrics.exposition(), media_type=PROMETHEUS_CONTENT_TYPE)


def _add_docs_routes(app: FastAPI) -> None:
    """/docs: Swagger UI over /openapi.json, its scripts and styles from the installed swagger-ui-bundle
    package, so the page works on a machine without internet."""
    import swagger_ui_bundle
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    app.mount("/docs/assets", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title="UniFashion API",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/docs/assets/favicon-32x32.png",
        )


def _add_catalog_routes(app: FastAPI, svc: Service) -> None:
    """The page, health, categories, attributes and products."""
    limits = svc.limits

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(resources.files("unifashion.serve").joinpath("static/index.html").read_text())

    @app.get("/api/health", response_model=schema.Health)
    def health() -> dict:
        return {
            "status": "ok",
            "products": len(svc.catalog),
            "catalog_version": svc.catalog.version,
            "heads": list(svc.model.heads),
            "captions_in_catalog": svc.catalog.has_captions,
            "jobs_pending": svc.jobs.active(),
            "auth": svc.keys is not None,
            "limits": {k: float(v) for k, v in limits.__dict__.items() if v is not None},
        }

    @app.get("/api/categories", response_model=schema.Categories, responses=schema.errors(401, 429))
    def categories() -> dict:
        return {"categories": svc.catalog.categories()}

    @app.get("/api/attributes", response_model=schema.Attributes, responses=schema.errors(401, 429))
    def attributes() -> dict:
        return {"attributes": svc.catalog.attribute_values()}

    @app.get("/api/products/{product_id}", response_model=schema.Product, responses=schema.errors(401, 404, 429))
    def product(product_id: str) -> dict:
        return svc.catalog.product(svc.check_product(product_id)) | {"image_url": _image_url(product_id)}

    @app.get(
        "/api/products/{product_id}/image",
        response_class=Response,
        responses={200: {"content": {t.strip(): {} for t in IMAGE_TYPES.split(",")}}, **schema.errors(404)},
    )
    def product_image(product_id: str) -> Response:
        data, mime = svc.catalog.image(svc.check_product(product_id))
        return Response(data, media_type=mime, headers={"Cache-Control": "max-age=3600"})


_SEARCH_ERRORS = schema.errors(400, 401, 413, 415, 422, 429)


def _add_search_routes(app: FastAPI, svc: Service) -> None:
    """Text, image, composed and similar search: the encoding in a batched model pass (``Batcher``),
    then the catalog."""
    limits = svc.limits

    # Strict: a JSON body's types are the schema's ("5" is not a number), as the contract says.
    class TextSearch(BaseModel):
        model_config = ConfigDict(strict=True)

        text: str = Field(
            max_length=limits.max_text_chars, description="what to look for, e.g. 'a red midi dress with short sleeves'"
        )
        k: JsonInt = Field(12, ge=1, le=limits.max_k, description="number of results")
        category: str | None = Field(None, description="only products of this category ('' or null: all)")
        attributes: dict[str, str] | None = Field(None, description="only products with these attribute values")
        caption_weight: float | None = Field(
            None, ge=0, le=100, description="weight of the generated-caption score (default: the catalog's)"
        )

    class SimilarSearch(BaseModel):
        model_config = ConfigDict(strict=True)

        product_id: str = Field(description="the product to find more like")
        k: JsonInt = Field(12, ge=1, le=limits.max_k)
        category: str | None = Field(None, description="only products of this category ('' or null: all)")
        attributes: dict[str, str] | None = Field(None, description="only products with these attribute values")

    K = Annotated[int, Form(ge=1, le=limits.max_k, description="number of results")]
    Category = Annotated[str | None, Form(description="only products of this category ('' or absent: all)")]
    Attribute = Annotated[
        list[str] | None, Form(description="filters name:value (repeat the field for several), e.g. colour:red")
    ]

    @app.post("/api/search/text", response_model=schema.SearchResponse, responses=_SEARCH_ERRORS)
    def search_text(body: TextSearch) -> dict:
        start = time.perf_counter()
        text = clean_text(body.text, "text", limits)
        category = svc.check_category(body.category)
        attributes = svc.check_attributes(body.attributes or {}, "attributes")
        vec = svc.batcher.encode("text", text)
        return svc.search(
            "text",
            vec,
            by="queries",
            k=body.k,
            category=category,
            attributes=attributes,
            caption_weight=body.caption_weight,
            start=start,
            query={"text": text},
        )

    @app.post("/api/search/image", response_model=schema.SearchResponse, responses=_SEARCH_ERRORS)
    def search_image(
        image: Annotated[UploadFile, File(description="JPEG, PNG or WebP")],
        k: K = 12,
        category: Category = None,
        attribute: Attribute = None,
    ) -> dict:
        start = time.perf_counter()
        category, attributes = svc.check_category(category), svc.attribute_pairs(attribute)
        pil = _read_upload(image, "image", limits)
        queries = svc.batcher.encode("image", pil)  # (Q, e)
        vec = mean_vectors(queries[None])[0]
        return svc.search(
            "image",
            vec,
            by="means",
            k=k,
            category=category,
            attributes=attributes,
            caption_weight=0.0,
            start=start,
            query={"image": f"{pil.width}x{pil.height}"},
        )

    @app.post(
        "/api/search/composed", response_model=schema.SearchResponse, responses=schema.errors(404) | _SEARCH_ERRORS
    )
    def search_composed(
        text: Annotated[
            str,
            Form(max_length=limits.max_text_chars, description="the modification, e.g. 'is red with short sleeves'"),
        ],
        image: Annotated[UploadFile | None, File(description="the reference garment (or give product_id)")] = None,
        product_id: Annotated[
            str | None,
            Form(min_length=1, description="a catalog product as the reference (instead of image); not in the results"),
        ] = None,
        k: K = 12,
        category: Category = None,
        attribute: Attribute = None,
        caption_weight: Annotated[
            float | None, Form(ge=0, le=100, description="weight of the generated-caption score (default: catalog's)")
        ] = None,
    ) -> dict:
        start = time.perf_counter()
        category, attributes = svc.check_category(category), svc.attribute_pairs(attribute)
        text = clean_text(text, "text", limits)
        if (image is None) == (product_id is None):
            raise InputError(422, "image", "image: give a reference image or a product_id (one of the two)")
        if image is not None:
            pil = _read_upload(image, "image", limits)
            reference, exclude = f"{pil.width}x{pil.height}", ()
        else:
            data, _ = svc.catalog.image(svc.check_product(product_id))
            pil = read_image(data, "product_id", limits)
            reference, exclude = f"product {product_id}", (product_id,)
        vec = svc.batcher.encode("composed", (pil, text))
        return svc.search(
            "composed",
            vec,
            by="queries",
            k=k,
            category=category,
            attributes=attributes,
            caption_weight=caption_weight,
            start=start,
            query={"text": text, "image": reference},
            exclude=exclude,
        )

    @app.post(
        "/api/search/similar", response_model=schema.SearchResponse, responses=schema.errors(400, 401, 404, 422, 429)
    )
    def search_similar(body: SimilarSearch) -> dict:
        """More like this: the products whose images are nearest the given product's (itself left out)."""
        start = time.perf_counter()
        pid = svc.check_product(body.product_id)
        category = svc.check_category(body.category)
        attributes = svc.check_attributes(body.attributes or {}, "attributes")
        return svc.search(
            "similar",
            svc.catalog.product_vector(pid, "means"),
            by="means",
            k=body.k,
            category=category,
            attributes=attributes,
            caption_weight=0.0,
            start=start,
            query={"product_id": pid},
            exclude=(pid,),
        )


def _add_caption_and_image_routes(app: FastAPI, svc: Service) -> None:
    """Captions (synchronous) and generation / try-on jobs (queued, with progress)."""
    limits = svc.limits
    Seed = Annotated[int, Form(ge=0, le=2**31 - 1, description="the same seed gives the same picture")]
    Steps = Annotated[int | None, Form(ge=1, le=100, description="denoising steps (default: the model's)")]
    job_answers = {202: {"model": schema.Job}, **schema.errors(400, 401, 413, 415, 422, 429, 501)}

    @app.post("/api/caption", response_model=schema.Caption, responses=schema.errors(400, 401, 413, 415, 422, 429, 501))
    def caption(
        image: Annotated[UploadFile, File(description="JPEG, PNG or WebP")],
        style: Annotated[str, Form(description="caption style (one of the model's)")] = "description",
    ) -> dict:
        svc.need_head("captioning", "image")
        styles = svc.model.captioner.styles
        if style not in styles:
            raise InputError(422, "style", f"style: expected one of {', '.join(styles)}, got {style!r}")
        pil = _read_upload(image, "image", limits)
        start = time.perf_counter()
        with svc.search_lock:
            text = svc.model.caption([pil], style=style)[0]
        return {"caption": text, "style": style, "took_ms": round((time.perf_counter() - start) * 1000, 2)}

    def _submit(kind: str, work) -> JSONResponse:
        lock = svc.search_lock

        def behind_searches(on_step):
            # The job holds the model lock while it computes and lets searches go first between steps.
            def step(i: int, n: int) -> None:
                on_step(i, n)
                lock.pause()

            lock.acquire_low()
            try:
                return work(step)
            finally:
                lock.release()

        try:
            job = svc.jobs.submit(kind, behind_searches)
        except QueueFull:
            return _error(
                429, None, f"{svc.jobs.capacity} generation jobs are pending; try again later", {"Retry-After": "10"}
            )
        return JSONResponse(job.public() | {"status_url": f"/api/jobs/{job.id}"}, status_code=202)

    @app.post("/api/generate", status_code=202, response_class=JSONResponse, responses=job_answers)
    def generate(
        text: Annotated[
            str | None,
            Form(
                max_length=limits.max_text_chars,
                description="what to draw; with an image: the change to make (blank: none)",
            ),
        ] = None,
        image: Annotated[UploadFile | None, File(description="optional reference garment")] = None,
        seed: Seed = 0,
        steps: Steps = None,
    ) -> JSONResponse:
        svc.need_head("text2image", "text")
        steps = steps if steps is not None else svc.steps
        if text is not None and image is not None and not re.search(VISIBLE_TEXT, text):
            text = None  # a reference image alone (the text is blank or invisible): image-only conditioning
        text = None if text is None else clean_text(text, "text", limits)
        pil = None if image is None else _read_upload(image, "image", limits)
        if text is None and pil is None:
            raise InputError(422, "text", "text: give a text, a reference image, or both")
        return _submit(
            "generate",
            lambda on_step: svc.model.generate(text=text, image=pil, seed=seed, steps=steps, on_step=on_step)[0],
        )

    @app.post("/api/tryon", status_code=202, response_class=JSONResponse, responses=job_answers)
    def tryon(
        person: Annotated[UploadFile, File(description="the person photo")],
        cloth: Annotated[UploadFile, File(description="the garment to put on")],
        pose: Annotated[UploadFile, File(description="the person's keypoints JSON")],
        mask: Annotated[
            UploadFile | None, File(description="white where the garment goes (left out: made from the pose)")
        ] = None,
        garment: Annotated[
            Literal["upper", "dress", "lower"], Form(description="what the automatic mask makes room for")
        ] = "upper",
        pose_format: Annotated[Literal["openpose", "dresscode"], Form()] = "openpose",
        seed: Seed = 0,
        steps: Steps = None,
    ) -> JSONResponse:
        svc.need_head("tryon", "person")
        steps = steps if steps is not None else svc.steps
        person_im = _read_upload(person, "person", limits)
        cloth_im = _read_upload(cloth, "cloth", limits)
        mask_im = None if mask is None else _read_upload(mask, "mask", limits).convert("L")
        pose_bytes = pose.file.read(limits.max_pose_bytes + 1)
        if len(pose_bytes) > limits.max_pose_bytes:
            raise InputError(413, "pose", f"pose: more than {limits.max_pose_bytes:,} bytes")
        try:
            json.loads(pose_bytes.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise InputError(422, "pose", "pose: not a JSON keypoints file") from None

        def work(on_step):
            with tempfile.TemporaryDirectory(prefix="unifashion-pose-") as tmp:
                path = Path(tmp) / "pose.json"
                path.write_bytes(pose_bytes)
                return svc.model.try_on(
                    person_im,
                    cloth_im,
                    mask=mask_im,
                    garment=garment,
                    pose=path,
                    pose_format=pose_format,
                    seed=seed,
                    steps=steps,
                    on_step=on_step,
                )[0]

        return _submit("tryon", work)

    @app.get("/api/jobs/{job_id}", response_model=schema.Job, responses=schema.errors(401, 404, 429))
    def job_status(job_id: str) -> dict:
        job = svc.jobs.get(job_id)
        if job is None:
            raise InputError(404, "job_id", f"job_id: no job {job_id!r} (finished jobs are kept for a while)")
        return job.public()

    @app.get(
        "/api/jobs/{job_id}/image",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}, **schema.errors(404, 409)},
    )
    def job_image(job_id: str) -> Response:
        job = svc.jobs.get(job_id)
        if job is None:
            raise InputError(404, "job_id", f"job_id: no job {job_id!r}")
        if job.status != "done" or job.png is None:
            raise InputError(409, "job_id", f"job_id: job {job_id} is {job.status}, not done")
        return Response(job.png, media_type="image/png")


# -- the contract --------------------------------------------------------------------------


def _string_branch(prop: dict) -> dict:
    """The ``{"type": "string"}`` part of a property (FastAPI writes ``str | None`` as anyOf)."""
    for branch in prop.get("anyOf", ()):
        if branch.get("type") == "string":
            return branch
    return prop


def _contract(openapi: dict, svc: Service) -> dict:
    """What FastAPI cannot say from the signatures, added to its schema: the texts accepted, this catalog's
    categories, attribute values and caption styles as enums, either-or fields, the media type of every
    upload, 401/429 only where this service can answer them, and the key scheme."""
    openapi = copy.deepcopy(openapi)
    components = openapi.setdefault("components", {})
    schemas = components.get("schemas", {})
    categories = ["", *svc.catalog.categories()]
    values = svc.catalog.attribute_values()
    pairs = [f"{n}:{v}" for n, vs in values.items() for v in vs]
    styles = list(svc.model.captioner.styles) if "captioning" in svc.model.heads else []
    for path, item in openapi.get("paths", {}).items():
        for op in item.values():
            if not svc.rate_limited and not path.startswith(("/api/generate", "/api/tryon")):
                op.get("responses", {}).pop("429", None)
            if svc.keys is None or _open_route(path):
                op.get("responses", {}).pop("401", None)
            elif svc.keys is not None:
                op["security"] = [{"ApiKey": []}, {"Bearer": []}]
            content = op.get("requestBody", {}).get("content", {})
            for media, body in content.items():
                ref = body.get("schema", {}).get("$ref", "")
                target = schemas.get(ref.rsplit("/", 1)[-1]) if ref else body.get("schema")
                if not target:
                    continue
                props = target.get("properties", {})
                for name, prop in props.items():
                    if name == "text" and path != "/api/generate":
                        _string_branch(prop)["pattern"] = VISIBLE_TEXT
                    if name == "category":
                        _string_branch(prop)["enum"] = categories
                    if name == "style" and styles:
                        _string_branch(prop)["enum"] = styles
                    if name == "attributes":
                        obj = next((b for b in prop.get("anyOf", [prop]) if b.get("type") == "object"), prop)
                        obj.pop("additionalProperties", None)
                        obj["properties"] = {n: {"type": "string", "enum": vs} for n, vs in values.items()}
                        obj["additionalProperties"] = False
                    if name == "attribute":
                        arr = next((b for b in prop.get("anyOf", [prop]) if b.get("type") == "array"), prop)
                        arr["items"] = (
                            {"type": "string", "enum": pairs}
                            if len(pairs) <= _ENUM_LIMIT
                            else {"type": "string", "pattern": "^[^:]+:.+$"}
                        )
                        arr["uniqueItems"] = True
                if media == "multipart/form-data":
                    for prop in props.values():  # a form has no null: an optional field is left out
                        branches = [b for b in prop.get("anyOf", ()) if b.get("type") != "null"]
                        if "anyOf" in prop and len(branches) == 1:
                            del prop["anyOf"]
                            prop.update(branches[0])
                    body["encoding"] = {
                        name: {"contentType": "application/json" if name == "pose" else IMAGE_TYPES}
                        for name, prop in props.items()
                        if any(b.get("format") == "binary" for b in prop.get("anyOf", [prop]))
                        or prop.get("contentMediaType") == "application/octet-stream"
                        or any(b.get("contentMediaType") == "application/octet-stream" for b in prop.get("anyOf", []))
                    }
                if path == "/api/search/composed":
                    target["oneOf"] = [{"required": ["image"]}, {"required": ["product_id"]}]
                if path == "/api/generate":
                    target["anyOf"] = [
                        {"required": ["image"]},
                        {"required": ["text"], "properties": {"text": {"type": "string", "pattern": VISIBLE_TEXT}}},
                    ]
    if svc.keys is not None:
        components.setdefault("securitySchemes", {}).update(
            {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "Bearer": {"type": "http", "scheme": "bearer"},
            }
        )
    return openapi


def load_service(model_path: str | os.PathLike, catalog_path: str | os.PathLike, device: str = "cpu"):
    """The model (on ``device``) and catalog of ``unifashion serve``, checked to belong together."""
    from unifashion.catalog.build import check_model
    from unifashion.pipelines.unifashion import UniFashion

    catalog = Catalog.open(catalog_path)
    check_model(catalog, model_path)
    return UniFashion.from_pretrained(model_path, device=device), catalog


def serve(
    model_path,
    catalog_path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: Limits | None = None,
    steps: int | None = None,
    device: str = "cpu",
    keys_path: str | os.PathLike | None = None,
    allow_anonymous: bool = False,
    cors_origins: tuple[str, ...] = (),
) -> None:
    """Run the service. Keys come from ``keys_path`` (default: ``api-keys.json`` in the catalog
    folder); off a loopback address the service refuses to start without one unless
    ``allow_anonymous``."""
    import logging
    import sys

    import uvicorn

    from unifashion.serve.auth import KEYS_FILE, is_loopback

    keys = KeyStore(keys_path if keys_path is not None else Path(catalog_path) / KEYS_FILE)
    if not keys.keys and not allow_anonymous and not is_loopback(host):
        raise UniFashionError(
            f"--host {host}: serving beyond this machine without API keys; make one with "
            f"`unifashion keys add NAME --catalog {catalog_path}` (kept in {keys.path}), "
            "or pass --no-auth to serve without keys"
        )
    model, catalog = load_service(model_path, catalog_path, device)
    model.load_heads()
    app = create_app(model, catalog, limits, steps=steps, keys=keys, cors_origins=cors_origins)
    access = logging.getLogger("unifashion.serve.access")  # one JSON line per request, on stderr
    if not access.handlers:
        access.addHandler(logging.StreamHandler(sys.stderr))
    access.setLevel(logging.INFO)
    access.propagate = False
    auth = f"{len(keys.keys)} API keys from {keys.path}" if keys.keys else "no API keys"
    print(
        f"UniFashion: {len(catalog)} products, heads {', '.join(model.heads)}, on {model.device}, {auth}; "
        f"open http://{host}:{port}/"
    )
    uvicorn.run(app, host=host, port=port, log_level="warning")
