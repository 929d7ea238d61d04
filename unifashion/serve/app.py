"""``unifashion serve``: the REST API and web page over a model and a catalog.

    unifashion serve --model MODEL --catalog CATALOG [--host 127.0.0.1 --port 8000]
    open http://127.0.0.1:8000/            the web page
         http://127.0.0.1:8000/openapi.json the API schema; /docs its Swagger UI (served from local files)

Endpoints (all JSON unless said):
    GET  /api/health                       model heads, catalog size and version, pending jobs
    GET  /api/categories
    POST /api/search/text                  {"text", "k", "category", "caption_weight"}
    POST /api/search/image                 form: image, k, category
    POST /api/search/composed              form: image, text, k, category  (reference + modification)
    POST /api/caption                      form: image, style
    POST /api/generate                     form: text and/or image, seed, steps -> 202 job
    POST /api/tryon                        form: person, cloth, mask, pose (keypoints JSON), seed -> 202 job
    GET  /api/jobs/{id}                    status and denoising progress; /api/jobs/{id}/image: the PNG
    GET  /api/products/{id}                metadata; /api/products/{id}/image: the product image

Every refusal is ``{"error": {"status", "field", "message"}}`` with a 4xx status naming the
field (see ``serve/inputs.py`` for the limits). Search encodings are batched (``serve/batching.py``)
and share one lock with captions (one model pass at a time keeps 2 cores busy without thrashing);
generation runs in its own bounded job queue.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import numpy as np
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from unifashion.catalog.build import mean_vectors
from unifashion.catalog.store import Catalog, Hit
from unifashion.serve.batching import Batcher
from unifashion.serve.inputs import InputError, Limits, clean_text, read_image
from unifashion.serve.jobs import JobQueue, QueueFull
from unifashion.serve.metrics import PROMETHEUS_CONTENT_TYPE, Metrics, log_request, route_of
from unifashion.utils.errors import UniFashionError

__all__ = ["Limits", "create_app", "serve"]


class TextSearch(BaseModel):
    text: str = Field(description="what to look for, e.g. 'a red midi dress with short sleeves'")
    k: int = Field(12, description="number of results")
    category: str | None = Field(None, description="only products of this category")
    caption_weight: float | None = Field(
        None, description="weight of the generated-caption score (default: the catalog's)"
    )


def _read_upload(upload: UploadFile | None, field: str, limits: Limits, *, required: bool = True):
    if upload is None:
        if required:
            raise InputError(422, field, f"{field}: missing (upload an image file)")
        return None
    data = upload.file.read(limits.max_upload_bytes + 1)
    return read_image(data, field, limits)


class Service:
    """What the endpoints share: the model, the catalog, the limits, the locks and the job queue."""

    def __init__(self, model, catalog: Catalog, limits: Limits, *, steps: int | None = None):
        self.model = model
        self.catalog = catalog
        self.limits = limits
        self.steps = steps
        self.search_lock = threading.Lock()  # one model pass at a time (search and captions)
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

    # -- argument checks -------------------------------------------------------------

    def check_k(self, k: int) -> int:
        if not 1 <= k <= self.limits.max_k:
            raise InputError(422, "k", f"k: expected 1 to {self.limits.max_k}, got {k}")
        return k

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
        caption_weight: float | None,
        start: float,
        query: dict,
    ) -> dict:
        hits = self.catalog.search(vector, by=by, k=k, category=category, caption_weight=caption_weight)
        return {
            "kind": kind,
            "query": query,
            "results": self.results(hits),
            "took_ms": round((time.perf_counter() - start) * 1000, 2),
        }


def _image_url(product_id: str) -> str:
    return f"/api/products/{quote(product_id, safe='')}/image"


def _error(status: int, field: str | None, message: str) -> JSONResponse:
    return JSONResponse(InputError(status, field, message).payload(), status_code=status)


def create_app(model, catalog: Catalog, limits: Limits | None = None, *, steps: int | None = None) -> FastAPI:
    """The FastAPI app over a loaded :class:`UniFashion` model and a :class:`Catalog`."""
    limits = limits or Limits()
    svc = Service(model, catalog, limits, steps=steps)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        svc.jobs.shutdown()
        svc.batcher.close()

    app = FastAPI(
        title="UniFashion",
        version="0.1.0",
        lifespan=lifespan,
        description="Fashion search (text, image, composed), captions and generation over a product catalog.",
        docs_url=None,  # served below from the swagger-ui-bundle package, not from a CDN
        redoc_url=None,
    )
    app.state.service = svc

    _add_docs_routes(app)
    _add_error_handlers(app, limits)
    _add_metrics(app, svc)
    _add_catalog_routes(app, svc)
    _add_search_routes(app, svc)
    _add_caption_and_image_routes(app, svc)
    return app


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
        msg = first.get("msg", "invalid request")
        return _error(422, field, f"{field}: {msg}" if field else msg)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, None, str(exc.detail))

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
    """The page, health, categories and products."""
    limits = svc.limits

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(resources.files("unifashion.serve").joinpath("static/index.html").read_text())

    @app.get("/api/health")
    def health() -> dict:
        return {
            "status": "ok",
            "products": len(svc.catalog),
            "catalog_version": svc.catalog.version,
            "heads": list(svc.model.heads),
            "captions_in_catalog": svc.catalog.has_captions,
            "jobs_pending": svc.jobs.active(),
            "limits": limits.__dict__,
        }

    @app.get("/api/categories")
    def categories() -> dict:
        return {"categories": svc.catalog.categories()}

    @app.get("/api/products/{product_id}")
    def product(product_id: str) -> dict:
        return svc.catalog.product(svc.check_product(product_id)) | {"image_url": _image_url(product_id)}

    @app.get("/api/products/{product_id}/image")
    def product_image(product_id: str) -> Response:
        data, mime = svc.catalog.image(svc.check_product(product_id))
        return Response(data, media_type=mime, headers={"Cache-Control": "max-age=3600"})


def _add_search_routes(app: FastAPI, svc: Service) -> None:
    """Text, image and composed search: the encoding in a batched model pass (``Batcher``), then the catalog."""
    limits = svc.limits

    @app.post("/api/search/text")
    def search_text(body: TextSearch) -> dict:
        start = time.perf_counter()
        text = clean_text(body.text, "text", limits)
        k, category = svc.check_k(body.k), svc.check_category(body.category)
        vec = svc.batcher.encode("text", text)
        return svc.search(
            "text",
            vec,
            by="queries",
            k=k,
            category=category,
            caption_weight=body.caption_weight,
            start=start,
            query={"text": text},
        )

    @app.post("/api/search/image")
    def search_image(
        image: Annotated[UploadFile | None, File(description="JPEG, PNG or WebP")] = None,
        k: Annotated[int, Form()] = 12,
        category: Annotated[str | None, Form()] = None,
    ) -> dict:
        start = time.perf_counter()
        k, category = svc.check_k(k), svc.check_category(category)
        pil = _read_upload(image, "image", limits)
        queries = svc.batcher.encode("image", pil)  # (Q, e)
        vec = mean_vectors(queries[None])[0]
        return svc.search(
            "image",
            vec,
            by="means",
            k=k,
            category=category,
            caption_weight=0.0,
            start=start,
            query={"image": f"{pil.width}x{pil.height}"},
        )

    @app.post("/api/search/composed")
    def search_composed(
        image: Annotated[UploadFile | None, File(description="the reference garment")] = None,
        text: Annotated[str | None, Form(description="the modification, e.g. 'is red with short sleeves'")] = None,
        k: Annotated[int, Form()] = 12,
        category: Annotated[str | None, Form()] = None,
        caption_weight: Annotated[float | None, Form()] = None,
    ) -> dict:
        start = time.perf_counter()
        k, category = svc.check_k(k), svc.check_category(category)
        if text is None:
            raise InputError(422, "text", "text: missing (the modification to apply to the reference image)")
        text = clean_text(text, "text", limits)
        pil = _read_upload(image, "image", limits)
        vec = svc.batcher.encode("composed", (pil, text))
        return svc.search(
            "composed",
            vec,
            by="queries",
            k=k,
            category=category,
            caption_weight=caption_weight,
            start=start,
            query={"text": text, "image": f"{pil.width}x{pil.height}"},
        )


def _add_caption_and_image_routes(app: FastAPI, svc: Service) -> None:
    """Captions (synchronous) and generation / try-on jobs (queued, with progress)."""
    limits = svc.limits

    @app.post("/api/caption")
    def caption(
        image: Annotated[UploadFile | None, File()] = None,
        style: Annotated[str, Form()] = "description",
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
        try:
            job = svc.jobs.submit(kind, work)
        except QueueFull:
            return JSONResponse(
                InputError(429, None, f"{svc.jobs.capacity} generation jobs are pending; try again later").payload(),
                status_code=429,
                headers={"Retry-After": "10"},
            )
        return JSONResponse(job.public() | {"status_url": f"/api/jobs/{job.id}"}, status_code=202)

    def _seed(seed: int) -> int:
        if not 0 <= seed < 2**31:
            raise InputError(422, "seed", f"seed: expected 0 to 2147483647, got {seed}")
        return seed

    def _steps(steps: int | None) -> int | None:
        if steps is not None and not 1 <= steps <= 100:
            raise InputError(422, "steps", f"steps: expected 1 to 100, got {steps}")
        return steps if steps is not None else svc.steps

    @app.post("/api/generate", status_code=202)
    def generate(
        text: Annotated[str | None, Form(description="what to draw; with an image: the change to make")] = None,
        image: Annotated[UploadFile | None, File(description="optional reference garment")] = None,
        seed: Annotated[int, Form()] = 0,
        steps: Annotated[int | None, Form()] = None,
    ) -> JSONResponse:
        svc.need_head("text2image", "text")
        seed, steps = _seed(seed), _steps(steps)
        if text is not None and image is not None and not text.strip():
            text = None  # a reference image alone: image-only conditioning
        text = None if text is None else clean_text(text, "text", limits)
        pil = _read_upload(image, "image", limits, required=False)
        if text is None and pil is None:
            raise InputError(422, "text", "text: give a text, a reference image, or both")
        return _submit(
            "generate",
            lambda on_step: svc.model.generate(text=text, image=pil, seed=seed, steps=steps, on_step=on_step)[0],
        )

    @app.post("/api/tryon", status_code=202)
    def tryon(
        person: Annotated[UploadFile | None, File(description="the person photo")] = None,
        cloth: Annotated[UploadFile | None, File(description="the garment to put on")] = None,
        mask: Annotated[UploadFile | None, File(description="white where the garment goes")] = None,
        pose: Annotated[UploadFile | None, File(description="OpenPose keypoints JSON")] = None,
        pose_format: Annotated[str, Form()] = "openpose",
        seed: Annotated[int, Form()] = 0,
        steps: Annotated[int | None, Form()] = None,
    ) -> JSONResponse:
        svc.need_head("tryon", "person")
        seed, steps = _seed(seed), _steps(steps)
        if pose_format not in ("openpose", "dresscode"):
            raise InputError(422, "pose_format", f"pose_format: expected openpose or dresscode, got {pose_format!r}")
        person_im = _read_upload(person, "person", limits)
        cloth_im = _read_upload(cloth, "cloth", limits)
        mask_im = _read_upload(mask, "mask", limits)
        if pose is None:
            raise InputError(422, "pose", "pose: missing (upload the person's keypoints JSON)")
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
                    mask=mask_im.convert("L"),
                    pose=path,
                    pose_format=pose_format,
                    seed=seed,
                    steps=steps,
                    on_step=on_step,
                )[0]

        return _submit("tryon", work)

    @app.get("/api/jobs/{job_id}")
    def job_status(job_id: str) -> dict:
        job = svc.jobs.get(job_id)
        if job is None:
            raise InputError(404, "job_id", f"job_id: no job {job_id!r} (finished jobs are kept for a while)")
        return job.public()

    @app.get("/api/jobs/{job_id}/image")
    def job_image(job_id: str) -> Response:
        job = svc.jobs.get(job_id)
        if job is None:
            raise InputError(404, "job_id", f"job_id: no job {job_id!r}")
        if job.status != "done" or job.png is None:
            raise InputError(409, "job_id", f"job_id: job {job_id} is {job.status}, not done")
        return Response(job.png, media_type="image/png")


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
) -> None:
    import uvicorn

    model, catalog = load_service(model_path, catalog_path, device)
    app = create_app(model, catalog, limits, steps=steps)
    import logging
    import sys

    access = logging.getLogger("unifashion.serve.access")  # one JSON line per request, on stderr
    if not access.handlers:
        access.addHandler(logging.StreamHandler(sys.stderr))
    access.setLevel(logging.INFO)
    access.propagate = False
    print(
        f"UniFashion: {len(catalog)} products, heads {', '.join(model.heads)}, on {model.device}; "
        f"open http://{host}:{port}/"
    )
    uvicorn.run(app, host=host, port=port, log_level="warning")
