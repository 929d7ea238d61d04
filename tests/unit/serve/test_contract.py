"""The service against its own OpenAPI schema: schemathesis generates requests from ``/openapi.json``
(valid ones, which must be accepted, and invalid ones, which must be refused) and checks every answer:
status documented, body of the declared schema, no server error, 405 with ``Allow``.

JSON Schema cannot say that an upload must be a decodable picture: the schema says it with each
part's ``encoding.contentType``, and this test fills every file part with a file of that media type
(random small JPEG / PNG / WebP pictures, or a keypoints JSON for ``application/json``). Everything
else (texts, numbers, enums, either-or fields, missing fields) comes from the schema alone.
The app runs in-process (no network at all)."""

import io
import json
from collections import Counter

import pytest
from PIL import Image

pytestmark = pytest.mark.slow  # the shop fixture trains a tiny model (~1-2 min, shared)


def _detail(exc, response) -> str:
    return f"{str(exc).strip().splitlines()[0]}: {response.status_code} {response.text[:300]}"


EXAMPLES = 50  # per operation and mode: ~1,000 requests, about 30 s


@pytest.fixture(scope="module")
def app(shop):
    from unifashion.serve.app import create_app, load_service
    from unifashion.serve.inputs import Limits

    model, catalog = load_service(shop.model, shop.catalog)
    # Short generations: the contract is about requests and answers, not pictures.
    return create_app(model, catalog, Limits(max_upload_bytes=2 * 1024 * 1024, max_queued_jobs=2), steps=2)


def _pictures():
    from hypothesis import strategies as st

    def encode(args):
        fmt, w, h, rgb = args
        buf = io.BytesIO()
        Image.new("RGB", (w, h), rgb).save(buf, format=fmt)
        return buf.getvalue()

    colour = st.tuples(*[st.integers(0, 255)] * 3)
    return st.tuples(st.sampled_from(["PNG", "JPEG", "WEBP"]), st.integers(1, 48), st.integers(1, 48), colour).map(
        encode
    )


def _keypoints():
    from hypothesis import strategies as st

    point = st.tuples(st.floats(0, 64), st.floats(0, 64), st.floats(0, 1))
    return st.lists(point, min_size=18, max_size=18).map(
        lambda pts: json.dumps({"people": [{"pose_keypoints_2d": [v for p in pts for v in p]}]}).encode()
    )


def _with_files(case, draw):
    """The case with each file part replaced by a file of the media type its encoding names."""
    body = case.operation.definition.raw.get("requestBody", {}).get("content", {}).get("multipart/form-data")
    if body is None or not isinstance(case.body, dict):
        return case
    for name, enc in body.get("encoding", {}).items():
        if name in case.body:
            case.body[name] = draw(_keypoints() if enc["contentType"] == "application/json" else _pictures())
    return case


def _run(schema, mode, failures: Counter, seen: Counter, headers=None):
    for result in schema.get_all_operations():
        _run_operation(result.ok(), mode, failures, seen, headers)


def _run_operation(op, mode, failures: Counter, seen: Counter, headers):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from hypothesis.errors import Unsatisfiable

    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def check(data):
        case = data.draw(op.as_strategy(generation_mode=mode))
        if mode.is_positive:
            case = _with_files(case, data.draw)
        seen[op.label] += 1
        response = case.call(headers=headers)
        try:
            case.validate_response(response)
        except BaseException as exc:  # schemathesis raises groups of failures
            for sub in getattr(exc, "exceptions", [exc]):
                failures[(op.label, mode.name, type(sub).__name__, _detail(sub, response))] += 1
            raise

    try:
        check()
    except Unsatisfiable:
        # No invalid request exists where every input is a free string or there is none
        # (GET /api/health, GET /api/products/{product_id}).
        assert not mode.is_positive, op.label
    except BaseException as exc:  # counted above; hypothesis re-raises after shrinking
        if not failures:
            raise AssertionError(f"{op.label}: the run stopped without a counted failure") from exc


def _check_contract(app, headers=None, modes=("POSITIVE", "NEGATIVE")):
    import schemathesis
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures, seen = Counter(), Counter()
    for mode in modes:
        _run(schema, GenerationMode[mode], failures, seen, headers)
    labels = {op.ok().label for op in schema.get_all_operations()}
    assert {"POST /api/search/composed", "POST /api/search/similar", "POST /api/tryon", "GET /api/attributes"} <= labels
    assert all(seen[label] >= 1 for label in labels), seen  # every operation was called
    assert not failures, "\n".join(f"{n} x {k}" for k, n in failures.most_common())
    return schema


def test_every_answer_keeps_the_openapi_contract(app):
    _check_contract(app)


def test_with_api_keys_and_rate_limits_the_contract_holds(shop, tmp_path):
    """Keys on: the schema names the key schemes and 401 on protected routes; requests with a key keep the
    contract, and a request without one is answered 401 as documented."""
    from fastapi.testclient import TestClient

    from unifashion.serve.app import create_app, load_service
    from unifashion.serve.auth import KeyStore
    from unifashion.serve.inputs import Limits

    keys = KeyStore(tmp_path / "keys.json")
    key = keys.add("contract", per_minute=100_000)
    model, catalog = load_service(shop.model, shop.catalog)
    app = create_app(model, catalog, Limits(max_queued_jobs=2), steps=2, keys=keys)
    schema = _check_contract(app, headers={"X-API-Key": key}, modes=("POSITIVE",))
    raw = schema.raw_schema
    assert set(raw["components"]["securitySchemes"]) == {"ApiKey", "Bearer"}
    composed = raw["paths"]["/api/search/composed"]["post"]
    assert "401" in composed["responses"] and "429" in composed["responses"] and composed["security"]
    assert "401" not in raw["paths"]["/api/health"]["get"]["responses"]
    op = schema["/api/search/similar"]["POST"]
    with TestClient(app):
        case = op.Case(body={"product_id": catalog.ids[0]}, media_type="application/json")
        response = case.call()
        assert response.status_code == 401
        case.validate_response(response)  # documented, with the error body


def test_wrong_methods_answer_405_naming_the_allowed_ones(app):
    from fastapi.testclient import TestClient

    with TestClient(app) as client:
        paths = client.get("/openapi.json").json()["paths"]
        for path, item in paths.items():
            allowed = {m.upper() for m in item}
            url = path.replace("{product_id}", "fs000001").replace("{job_id}", "nojob")
            wrong = "DELETE" if "DELETE" not in allowed else "PATCH"
            r = client.request(wrong, url)
            assert r.status_code == 405, (path, r.status_code)
            assert set(r.headers["allow"].replace(" ", "").split(",")) - {"HEAD"} == allowed, path
            assert r.json()["error"]["status"] == 405
