"""The REST API on a small catalog: every endpoint with its results checked, and every refusal."""

import io
import json
import struct
import time
import zlib

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from unifashion.catalog.build import read_products
from unifashion.catalog.store import Catalog
from unifashion.pipelines.unifashion import UniFashion
from unifashion.serve.app import create_app, load_service
from unifashion.serve.inputs import Limits

pytestmark = pytest.mark.slow  # the shop fixture trains a tiny model with its heads (~1-2 min, once)


@pytest.fixture(scope="module")
def served(shop):
    model, catalog = load_service(shop.model, shop.catalog)
    app = create_app(
        model,
        catalog,
        Limits(max_upload_bytes=2 * 1024 * 1024, max_image_pixels=4_000_000, max_text_chars=300, max_queued_jobs=2),
    )
    with TestClient(app) as client:
        yield client, model, catalog


@pytest.fixture(scope="module")
def products(shop):
    return {p.id: p for p in read_products(shop.data)}


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _image_file(products, pid):
    return open(products[pid].images[0].path, "rb").read()


def _ok_after(client):
    """The server still answers a plain request."""
    r = client.get("/api/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"


def _error(r, status, field):
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert body["status"] == status and body["field"] == field and body["message"]
    return body["message"]


def test_health_categories_schema_and_page(served):
    client, _, catalog = served
    health = client.get("/api/health").json()
    assert health["products"] == len(catalog) == 48 and set(health["heads"]) >= {
        "retrieval",
        "captioning",
        "text2image",
    }
    assert client.get("/api/categories").json()["categories"] == catalog.categories()
    paths = client.get("/openapi.json").json()["paths"]
    for path in (
        "/api/search/text",
        "/api/search/image",
        "/api/search/composed",
        "/api/caption",
        "/api/generate",
        "/api/tryon",
        "/api/jobs/{job_id}",
        "/api/products/{product_id}",
        "/api/products/{product_id}/image",
    ):
        assert path in paths
    page = client.get("/")
    assert page.status_code == 200 and 'id="query"' in page.text and "/api/search/composed" in page.text


def test_an_exact_caption_finds_its_product_first_through_the_caption_term(served, products):
    """The query is a product's stored caption, so the caption term (score = image_score +
    w * caption_score) decides: the product is first with the best caption score. The image term
    is tested on its own by the next test (caption weight 0: the model's own ranking) and by image
    search; the fixture's tiny model ranks text against images at about chance, so no test here
    can ask the image term alone to find a product by its caption."""
    client, _, catalog = served
    w = float(catalog.manifest["caption_weight"])
    assert w > 0
    for pid in catalog.ids[:12]:
        r = client.post("/api/search/text", json={"text": products[pid].captions[0], "k": 5})
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert results[0]["id"] == pid and len(results) == 5
        assert results[0]["image_url"] == f"/api/products/{pid}/image"
        assert [x["score"] for x in results] == sorted((x["score"] for x in results), reverse=True)
        for x in results:
            assert x["score"] == pytest.approx(x["image_score"] + w * x["caption_score"], abs=1e-5)
        assert results[0]["caption_score"] == max(x["caption_score"] for x in results)


def test_search_ranks_exactly_as_the_model(served):
    """With caption_weight 0 the text ranking is the model's own (Eq. 3 over every product)."""
    client, model, catalog = served
    text = "a red dress with long sleeves"
    ids = catalog.ids
    images = torch.from_numpy(catalog.vectors.queries)
    scores = model.similarity(model.encode_texts([text]).float(), images)[0].numpy()
    got = client.post("/api/search/text", json={"text": text, "k": 10, "caption_weight": 0}).json()["results"]
    # The ten best scores, each the model's score of the product returned (ids may swap only within ties).
    np.testing.assert_allclose([x["score"] for x in got], np.sort(scores)[::-1][:10], atol=1e-5)
    for x in got:
        assert x["score"] == pytest.approx(float(scores[ids.index(x["id"])]), abs=1e-5)
    assert got[0]["id"] == ids[int(np.argmax(scores))]


def test_category_filter_and_k(served):
    client, _, catalog = served
    cat = catalog.categories()[0]
    got = client.post("/api/search/text", json={"text": "a garment", "k": 3, "category": cat}).json()["results"]
    assert len(got) == 3 and {x["category"] for x in got} == {cat}
    _error(client.post("/api/search/text", json={"text": "a garment", "category": "hats"}), 422, "category")
    _error(client.post("/api/search/text", json={"text": "a garment", "k": 0}), 422, "k")
    _error(client.post("/api/search/text", json={"text": "a garment", "k": "many"}), 422, "k")
    # JSON types are the schema's: a numeric string is not an integer (found by the contract test).
    _error(client.post("/api/search/text", json={"text": "a garment", "k": "5"}), 422, "k")
    _error(client.post("/api/search/text", json={"text": "a garment", "caption_weight": "0.5"}), 422, "caption_weight")


def test_image_search_finds_the_same_product(served, products):
    client, _, catalog = served
    pid = catalog.ids[5]
    r = client.post(
        "/api/search/image", files={"image": ("p.png", _image_file(products, pid), "image/png")}, data={"k": "4"}
    )
    assert r.status_code == 200, r.text
    top = r.json()["results"][0]
    assert top["id"] == pid and top["image_score"] == pytest.approx(1.0, abs=1e-3)


def test_composed_search_equals_the_models_composed_ranking(served, products):
    client, model, catalog = served
    pid, text = catalog.ids[3], "is blue and has short sleeves"
    r = client.post(
        "/api/search/composed",
        files={"image": ("r.png", _image_file(products, pid), "image/png")},
        data={"text": text, "k": "6", "caption_weight": "0.25"},
    )
    assert r.status_code == 200, r.text
    vec = model.encode_composed([Image.open(products[pid].images[0].path).convert("RGB")], [text]).float()
    img = model.similarity(vec, torch.from_numpy(catalog.vectors.queries))[0].numpy()
    fused = img + 0.25 * (catalog.vectors.captions @ vec[0].numpy())
    want = [catalog.ids[i] for i in np.argsort(-fused, kind="stable")[:6]]
    assert [x["id"] for x in r.json()["results"]] == want
    assert r.json()["query"]["text"] == text


def test_caption_endpoint_matches_the_model(served, products):
    client, model, catalog = served
    data = _image_file(products, catalog.ids[0])
    r = client.post("/api/caption", files={"image": ("x.png", data, "image/png")}, data={"style": "title"})
    assert r.status_code == 200, r.text
    assert r.json()["caption"] == model.caption([Image.open(io.BytesIO(data)).convert("RGB")], style="title")[0]
    _error(
        client.post("/api/caption", files={"image": ("x.png", data, "image/png")}, data={"style": "poem"}), 422, "style"
    )


def _wait(client, job, timeout=120):
    end = time.time() + timeout
    while time.time() < end:
        state = client.get(f"/api/jobs/{job['id']}").json()
        if state["status"] in ("done", "failed"):
            return state
        time.sleep(0.05)
    raise AssertionError(f"job {job['id']} still {state['status']}")


def test_generation_jobs_report_progress_and_are_seeded(served):
    client, _, _ = served
    jobs = []
    for _ in range(2):
        r = client.post("/api/generate", data={"text": "a red dress", "seed": "3", "steps": "4"})
        assert r.status_code == 202, r.text
        jobs.append(r.json())
    states = [_wait(client, j) for j in jobs]
    assert all(s["status"] == "done" and s["step"] == s["steps"] == 4 for s in states), states
    pngs = [client.get(s["image_url"]).content for s in states]
    assert pngs[0] == pngs[1]  # same seed, same image
    assert Image.open(io.BytesIO(pngs[0])).size[0] > 0
    other = _wait(client, client.post("/api/generate", data={"text": "a red dress", "seed": "4", "steps": "4"}).json())
    assert client.get(other["image_url"]).content != pngs[0]
    # Composed: a reference image and a change.
    ref = _png(Image.new("RGB", (64, 64), (200, 30, 30)))
    r = client.post(
        "/api/generate", data={"text": "but blue", "steps": "2"}, files={"image": ("r.png", ref, "image/png")}
    )
    assert _wait(client, r.json())["status"] == "done"
    _error(client.post("/api/generate", data={"text": " "}), 422, "text")
    # With a reference image, a text with nothing visible in it is no text (image-only conditioning).
    ref = _png(Image.new("RGB", (32, 32), (20, 120, 20)))
    r = client.post("/api/generate", data={"text": "\u200b ", "steps": "1"}, files={"image": ("r.png", ref)})
    assert r.status_code == 202, r.text
    _wait(client, r.json())
    _error(client.post("/api/generate", data={"text": "a dress", "steps": "1000"}), 422, "steps")
    _error(client.get("/api/jobs/nope"), 404, "job_id")


def test_try_on_runs_as_a_job_and_gives_the_models_image(served, shop):
    client, model, _ = served
    sample = json.loads((shop.data / "tryon.jsonl").read_text().splitlines()[0])
    paths = {
        "person": sample["person"],
        "cloth": sample["cloth"],
        "mask": sample["agnostic_mask"],
        "pose": sample["pose"],
    }
    files = {name: (name, (shop.data / rel).read_bytes()) for name, rel in paths.items()}
    r = client.post("/api/tryon", files=files, data={"steps": "2", "seed": "1"})
    assert r.status_code == 202, r.text
    state = _wait(client, r.json())
    assert state["status"] == "done" and state["steps"] == 2, state
    got = np.asarray(Image.open(io.BytesIO(client.get(state["image_url"]).content)))
    want = model.try_on(
        Image.open(shop.data / paths["person"]).convert("RGB"),
        Image.open(shop.data / paths["cloth"]).convert("RGB"),
        mask=Image.open(shop.data / paths["mask"]).convert("L"),
        pose=shop.data / paths["pose"],
        steps=2,
        seed=1,
    )[0]
    np.testing.assert_array_equal(got, np.asarray(want))
    # No mask: the service makes one from the pose, as the model does without one.
    no_mask = {k: v for k, v in files.items() if k != "mask"}
    r = client.post("/api/tryon", files=no_mask, data={"steps": "2", "seed": "1", "garment": "dress"})
    assert r.status_code == 202, r.text
    state = _wait(client, r.json())
    auto = np.asarray(Image.open(io.BytesIO(client.get(state["image_url"]).content)))
    want = model.try_on(
        Image.open(shop.data / paths["person"]).convert("RGB"),
        Image.open(shop.data / paths["cloth"]).convert("RGB"),
        garment="dress",
        pose=shop.data / paths["pose"],
        steps=2,
        seed=1,
    )[0]
    np.testing.assert_array_equal(auto, np.asarray(want))
    assert not np.array_equal(auto, got)  # another region painted
    _error(client.post("/api/tryon", files=no_mask, data={"garment": "hat"}), 422, "garment")
    bad = dict(files, pose=("pose.json", b"{not json"))
    _error(client.post("/api/tryon", files=bad), 422, "pose")
    _error(client.post("/api/tryon", files={k: v for k, v in files.items() if k != "cloth"}), 422, "cloth")


def test_the_generation_queue_is_capped_and_search_still_answers(served):
    client, _, _ = served
    svc = client.app.state.service
    import threading

    release = threading.Event()
    held = [
        svc.jobs.submit("hold", lambda on_step: (release.wait(30), Image.new("RGB", (4, 4)))[1])
        for _ in range(svc.jobs.capacity)
    ]
    try:
        r = client.post("/api/generate", data={"text": "a red dress"})
        assert r.status_code == 429 and r.headers["Retry-After"] and r.json()["error"]["status"] == 429
        assert client.post("/api/search/text", json={"text": "a red dress"}).status_code == 200
    finally:
        release.set()
    for job in held:
        _wait(client, job.public())


def test_products_and_their_images(served, products):
    client, _, catalog = served
    pid = catalog.ids[2]
    meta = client.get(f"/api/products/{pid}").json()
    assert meta["id"] == pid and meta["category"] == products[pid].category
    r = client.get(meta["image_url"])
    assert r.status_code == 200 and r.content == _image_file(products, pid) and r.headers["content-type"] == "image/png"
    _error(client.get("/api/products/no-such-thing"), 404, "product_id")
    _error(client.get("/api/products/no-such-thing/image"), 404, "product_id")


# -- bad inputs: each gets its 4xx naming the field, and the server keeps serving -----------------


def _bomb_png(width=30000, height=30000) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def _truncated_jpeg() -> bytes:
    """A JPEG cut in the middle of its pixel data (the header reads fine)."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()[: len(buf.getvalue()) // 2]


@pytest.mark.parametrize(
    ("payload", "status", "words"),
    [
        (b"this is a text file, not a picture", 415, "not an image"),
        (_truncated_jpeg(), 422, "truncated"),
        (_bomb_png(), 413, "pixels"),
        (b"", 422, "empty file"),
        (b"GIF89a" + b"\0" * 50, 415, "not"),
    ],
    ids=["not-an-image", "truncated-jpeg", "decompression-bomb", "empty", "bad-gif"],
)
def test_bad_images_are_refused(served, payload, status, words):
    client, _, _ = served
    for url, data in (("/api/search/image", {}), ("/api/search/composed", {"text": "in red"})):
        r = client.post(url, files={"image": ("upload", payload, "application/octet-stream")}, data=data)
        assert words in _error(r, status, "image")
        _ok_after(client)


def test_formats_sizes_and_modes(served):
    client, _, _ = served
    gif = io.BytesIO()
    Image.new("RGB", (32, 32)).save(gif, format="GIF")
    _error(client.post("/api/search/image", files={"image": ("g.gif", gif.getvalue())}), 415, "image")
    wide = _png(Image.new("RGB", (2100, 2100), (5, 5, 5)))  # 4.4 M pixels in a few KB: over the pixel limit
    assert "pixels" in _error(client.post("/api/search/image", files={"image": ("w.png", wide)}), 413, "image")
    # Odd modes are converted: RGBA, greyscale, palette, 16-bit.
    for im in (
        Image.new("RGBA", (40, 30), (255, 0, 0, 128)),
        Image.new("L", (20, 50), 90),
        Image.new("P", (33, 33)),
        Image.new("I;16", (16, 16)),
    ):
        r = client.post("/api/search/image", files={"image": ("m.png", _png(im))})
        assert r.status_code == 200, (im.mode, r.text)
    _error(client.post("/api/search/image", data={"k": "3"}), 422, "image")


@pytest.mark.parametrize(
    ("text", "status"),
    [("", 422), ("   \n\t ", 422), ("x" * 100_000, 422), ("\u200b\u200d\u202e\ufeff", 422)],
    ids=["empty", "blank", "100k-chars", "only-invisible"],
)
def test_bad_texts_are_refused(served, text, status):
    client, _, _ = served
    _error(client.post("/api/search/text", json={"text": text}), status, "text")
    _ok_after(client)
    png = _png(Image.new("RGB", (32, 32), (0, 200, 0)))
    _error(client.post("/api/search/composed", files={"image": ("a.png", png)}, data={"text": text}), status, "text")
    _ok_after(client)


def test_lone_surrogates_and_invalid_utf8(served):
    client, _, _ = served
    r = client.post("/api/search/text", content=b'{"text": "\\ud800"}', headers={"content-type": "application/json"})
    _error(r, 422, "text")
    # A lone surrogate is not a Unicode character: refused wherever it is (the schema's strings are Unicode).
    r = client.post(
        "/api/search/text", content=b'{"text": "red \\ud800dress"}', headers={"content-type": "application/json"}
    )
    _error(r, 422, "text")
    png = _png(Image.new("RGB", (32, 32), (0, 200, 0)))
    r = client.post("/api/search/composed", files={"image": ("a.png", png)}, data={"text": b"in \xed\xa0\x80red"})
    assert r.status_code in (200, 422), r.text  # undecodable form bytes: replaced or refused, never a 500
    _ok_after(client)


def test_odd_unicode_is_cleaned_and_searched(served):
    client, _, _ = served
    text = "Ａ red\u200b dress \u202ewith 👗 sleeves — très chic\x00"
    r = client.post("/api/search/text", json={"text": text, "k": 2})
    assert r.status_code == 200, r.text
    cleaned = r.json()["query"]["text"]
    assert "\u200b" not in cleaned and "\u202e" not in cleaned and "\x00" not in cleaned and "👗" in cleaned
    assert client.post("/api/search/text", json={"text": "白いシャツ", "k": 2}).status_code == 200


def test_missing_fields_and_malformed_bodies(served):
    client, _, _ = served
    _error(client.post("/api/search/text", json={}), 422, "text")
    _error(
        client.post("/api/search/text", content=b"{not json", headers={"content-type": "application/json"}), 422, None
    )
    png = _png(Image.new("RGB", (32, 32)))
    _error(client.post("/api/search/composed", files={"image": ("a.png", png)}), 422, "text")


def test_every_refusal_of_the_generation_and_job_routes(served, shop, monkeypatch):
    """501 for a missing head, a failed job with its error, 409 for the image of an unfinished job,
    seed/steps out of range, a bad pose_format, an over-size pose file."""
    import threading

    client, model, _ = served
    svc = client.app.state.service
    # A job whose model call fails: the job says failed, with the error, and has no image.
    monkeypatch.setattr(model, "generate", lambda **kw: (_ for _ in ()).throw(RuntimeError("out of paint")))
    state = _wait(client, client.post("/api/generate", data={"text": "a red dress"}).json())
    assert state["status"] == "failed" and "out of paint" in state["error"], state
    assert "is failed, not done" in _error(client.get(f"/api/jobs/{state['id']}/image"), 409, "job_id")
    # An unfinished job: its image is 409 until it is done, then 200.
    release = threading.Event()
    job = svc.jobs.submit("hold", lambda on_step: (release.wait(30), Image.new("RGB", (4, 4)))[1])
    try:
        assert "not done" in _error(client.get(f"/api/jobs/{job.id}/image"), 409, "job_id")
    finally:
        release.set()
    assert _wait(client, job.public())["status"] == "done"
    assert client.get(f"/api/jobs/{job.id}/image").status_code == 200
    _error(client.get("/api/jobs/no-such-job"), 404, "job_id")
    _error(client.get("/api/jobs/no-such-job/image"), 404, "job_id")
    # Seeds and steps out of range.
    for seed in ("-1", str(2**31)):
        _error(client.post("/api/generate", data={"text": "a red dress", "seed": seed}), 422, "seed")
    for steps in ("0", "101"):
        _error(client.post("/api/generate", data={"text": "a red dress", "steps": steps}), 422, "steps")
    # Try-on: a bad pose_format, and a pose file over the limit.
    sample = json.loads((shop.data / "tryon.jsonl").read_text().splitlines()[0])
    files = {
        name: (name, (shop.data / sample[key]).read_bytes())
        for name, key in (("person", "person"), ("cloth", "cloth"), ("mask", "agnostic_mask"), ("pose", "pose"))
    }
    _error(client.post("/api/tryon", files=files, data={"pose_format": "coco"}), 422, "pose_format")
    huge_pose = dict(files, pose=("pose.json", b" " * (svc.limits.max_pose_bytes + 1)))
    assert "bytes" in _error(client.post("/api/tryon", files=huge_pose), 413, "pose")
    # A model without the head: 501, naming the head.
    monkeypatch.setattr(type(model), "heads", property(lambda self: ("retrieval",)))
    assert "text2image" in _error(client.post("/api/generate", data={"text": "a red dress"}), 501, "text")
    _ok_after(client)


@pytest.mark.parametrize("weight", [-0.5, "NaN", "Infinity"])
def test_a_negative_or_non_finite_caption_weight_is_refused(served, weight):
    client, _, _ = served
    body = f'{{"text": "a red dress", "caption_weight": {weight}}}'
    r = client.post("/api/search/text", content=body.encode(), headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert "caption_weight" in r.json()["error"]["message"]


def test_unknown_routes_and_methods_answer_json(served):
    client, _, _ = served
    assert _error(client.get("/api/nothing-here"), 404, None)
    r = client.get("/api/search/text")
    assert r.status_code == 405 and r.json()["error"]["status"] == 405


def test_upload_size_limit(shop):
    model, catalog = load_service(shop.model, shop.catalog)
    with TestClient(create_app(model, catalog, Limits(max_upload_bytes=1000))) as client:
        big = _png(Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)))
        assert len(big) > 1000
        assert "bytes" in _error(client.post("/api/search/image", files={"image": ("b.png", big)}), 413, "image")
        huge = b"x" * 5000
        r = client.post("/api/search/image", files={"image": ("h.bin", huge)})
        assert r.status_code == 413
        # Past 4 uploads + 64 KB the middleware refuses the body from its Content-Length alone,
        # before any handler reads it.
        over = b"x" * (4 * 1000 + 65536 + 1)
        r = client.post("/api/search/image", files={"image": ("o.bin", over)})
        assert "request body of" in _error(r, 413, None)
        _ok_after(client)


def test_a_catalog_of_another_model_is_refused(shop, tmp_path):
    import shutil

    from unifashion.catalog.store import CatalogError

    other = tmp_path / "other"
    shutil.copytree(shop.model, other)
    model = UniFashion.from_pretrained(other)
    model.retrieval.qformer.query_tokens.data += 0.01
    model.save_pretrained(other)
    with pytest.raises(CatalogError, match="another model"):
        load_service(other, shop.catalog)
    assert len(Catalog.open(shop.catalog)) == 48


def test_concurrent_searches_are_batched_and_answer_as_one_at_a_time(served, products):
    """16 composed and text searches at once: fewer model passes than requests, and every answer equals
    the one the same request gets alone."""
    import threading

    client, _, catalog = served
    svc = client.app.state.service
    pids = catalog.ids[:8]
    texts = ["is red", "has long sleeves", "is shorter and blue", "is black"]

    def composed(i):
        pid = pids[i % len(pids)]
        return client.post(
            "/api/search/composed",
            files={"image": ("r.png", _image_file(products, pid), "image/png")},
            data={"text": texts[i % len(texts)], "k": "5"},
        )

    def text(i):
        return client.post("/api/search/text", json={"text": f"a {texts[i % len(texts)][3:]} dress", "k": 5})

    calls = [composed] * 10 + [text] * 6
    alone = [[x["id"] for x in call(i).json()["results"]] for i, call in enumerate(calls)]
    before = (svc.batcher.stats.passes, svc.batcher.stats.requests)
    answers = [None] * len(calls)
    go = threading.Barrier(len(calls))

    def run(i):
        go.wait()
        answers[i] = calls[i](i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers if r.status_code != 200]
    assert [[x["id"] for x in r.json()["results"]] for r in answers] == alone
    passes = svc.batcher.stats.passes - before[0]
    assert svc.batcher.stats.requests - before[1] == len(calls) and passes < len(calls)


def test_docs_are_served_from_local_files(served):
    """/docs needs no internet: its Swagger UI scripts and styles come from the server itself."""
    client, _, _ = served
    page = client.get("/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    html = page.text
    assert "/docs/assets/swagger-ui-bundle.js" in html and "/docs/assets/swagger-ui.css" in html
    assert "cdn" not in html.lower() and "https://" not in html
    script = client.get("/docs/assets/swagger-ui-bundle.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert len(script.content) > 100_000 and b"SwaggerUIBundle" in script.content
    assert client.get("/docs/assets/swagger-ui.css").status_code == 200
    assert client.get("/redoc").status_code == 404  # ReDoc would load from a CDN: not offered


def test_metrics_count_time_and_label_every_request_and_log_it_as_json(served, caplog):
    """/metrics (Prometheus text): requests by route template and status, latency histograms, batch sizes,
    the search queue depth and job states; each request is one JSON line in the access log."""
    import logging

    from prometheus_client.parser import text_string_to_metric_families

    client, _, catalog = served

    def scrape():
        families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
        return families

    def count(families, route, status):
        return sum(
            s.value
            for s in families["unifashion_requests"].samples
            if s.name == "unifashion_requests_total"
            and s.labels["route"] == route
            and s.labels["status"] == str(status)
        )

    before = scrape()
    with caplog.at_level(logging.INFO, logger="unifashion.serve.access"):
        assert client.post("/api/search/text", json={"text": "a red dress", "k": 3}).status_code == 200
        assert client.get("/api/products/no-such-id").status_code == 404
        assert client.get(f"/api/products/{catalog.ids[0]}").status_code == 200
        assert client.post("/api/search/text", json={"text": "", "k": 3}).status_code == 422
    after = scrape()
    assert count(after, "/api/search/text", 200) == count(before, "/api/search/text", 200) + 1
    assert count(after, "/api/search/text", 422) == count(before, "/api/search/text", 422) + 1
    # One series per route template, not per product id.
    products = "/api/products/{product_id}"
    assert count(after, products, 404) == count(before, products, 404) + 1
    assert count(after, products, 200) == count(before, products, 200) + 1
    latency = {s.name for s in after["unifashion_request_seconds"].samples}
    assert {"unifashion_request_seconds_bucket", "unifashion_request_seconds_count"} <= latency
    batches = [
        s
        for s in after["unifashion_search_batch_size"].samples
        if s.name.endswith("_count") and s.labels["kind"] == "text"
    ]
    assert batches and batches[0].value >= 1
    assert after["unifashion_search_queue_depth"].samples[0].value == 0
    assert {s.labels["state"] for s in after["unifashion_jobs"].samples} >= {"queued", "running", "done", "failed"}
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "unifashion.serve.access"]
    assert [(x["method"], x["route"], x["status"]) for x in lines] == [
        ("POST", "/api/search/text", 200),
        ("GET", products, 404),
        ("GET", products, 200),
        ("POST", "/api/search/text", 422),
    ]
    assert all(x["ms"] >= 0 and x["path"].startswith("/api/") for x in lines)


def test_attribute_filters_keep_only_matching_products(served):
    client, _, catalog = served
    values = client.get("/api/attributes").json()["attributes"]
    assert values == catalog.attribute_values() and len(values["colour"]) >= 2
    colour = values["colour"][0]
    r = client.post("/api/search/text", json={"text": "a garment", "k": 48, "attributes": {"colour": colour}})
    assert r.status_code == 200, r.text
    got = r.json()["results"]
    want = {p for p in catalog.ids if catalog.product(p)["attributes"].get("colour") == colour}
    assert {x["id"] for x in got} == want and all(x["attributes"]["colour"] == colour for x in got)
    # Form filters: several values of one name match any of them; names must all match.
    two = values["colour"][:2]
    png = _png(Image.new("RGB", (32, 32), (200, 30, 30)))
    r = client.post(
        "/api/search/image",
        files={"image": ("a.png", png)},
        data={"k": "48", "attribute": [f"colour:{two[0]}", f"colour:{two[1]}", "pattern:solid"]},
    )
    assert r.status_code == 200, r.text
    want = {
        p
        for p in catalog.ids
        if catalog.product(p)["attributes"].get("colour") in two
        and catalog.product(p)["attributes"].get("pattern") == "solid"
    }
    assert {x["id"] for x in r.json()["results"]} == want and want
    assert "no product has colour='puce'" in _error(
        client.post("/api/search/text", json={"text": "a top", "attributes": {"colour": "puce"}}), 422, "attributes"
    )
    assert "names:" in _error(
        client.post("/api/search/image", files={"image": ("a.png", png)}, data={"attribute": "fabric:silk"}),
        422,
        "attribute",
    )
    _error(
        client.post("/api/search/image", files={"image": ("a.png", png)}, data={"attribute": "red"}), 422, "attribute"
    )


def test_more_like_this_is_the_image_ranking_without_the_product(served):
    client, _, catalog = served
    pid = catalog.ids[4]
    r = client.post("/api/search/similar", json={"product_id": pid, "k": 5})
    assert r.status_code == 200, r.text
    got = [x["id"] for x in r.json()["results"]]
    means = catalog.vectors.means
    scores = means @ means[catalog.ids.index(pid)]
    order = [catalog.ids[i] for i in np.argsort(-scores, kind="stable") if catalog.ids[i] != pid]
    assert got == order[:5] and r.json()["kind"] == "similar"
    _error(client.post("/api/search/similar", json={"product_id": "nope"}), 404, "product_id")


def test_refine_a_result_composed_search_from_a_catalog_product(served, products):
    """Composed search with product_id is composed search with that product's image, minus the product."""
    client, _, catalog = served
    pid, text = catalog.ids[6], "is blue with long sleeves"
    by_id = client.post("/api/search/composed", data={"product_id": pid, "text": text, "k": "8"})
    upload = client.post(
        "/api/search/composed",
        files={"image": ("r.png", catalog.image(pid)[0], "image/png")},
        data={"text": text, "k": "9"},
    )
    assert by_id.status_code == 200 and upload.status_code == 200, (by_id.text, upload.text)
    assert [x["id"] for x in by_id.json()["results"]] == [x["id"] for x in upload.json()["results"] if x["id"] != pid][
        :8
    ]
    assert by_id.json()["query"]["image"] == f"product {pid}"
    png = _png(Image.new("RGB", (32, 32), (0, 0, 200)))
    both = client.post("/api/search/composed", files={"image": ("a.png", png)}, data={"product_id": pid, "text": text})
    assert "one of the two" in _error(both, 422, "image")
    assert "one of the two" in _error(client.post("/api/search/composed", data={"text": text}), 422, "image")
    _error(client.post("/api/search/composed", data={"product_id": "nope", "text": text}), 404, "product_id")


@pytest.fixture(scope="module")
def guarded(shop, tmp_path_factory):
    from unifashion.serve.auth import KeyStore

    keys = KeyStore(tmp_path_factory.mktemp("keys") / "keys.json")
    slow, fast = keys.add("slow", per_minute=3), keys.add("fast")
    model, catalog = load_service(shop.model, shop.catalog)
    app = create_app(model, catalog, Limits(rate_per_minute=600), keys=keys, cors_origins=("https://shop.example",))
    with TestClient(app) as client:
        yield client, catalog, slow, fast


def test_api_keys_guard_every_api_route_but_health_and_images(guarded):
    client, catalog, _, fast = guarded
    r = client.get("/api/categories")
    assert "API key missing" in _error(r, 401, "X-API-Key") and r.headers["www-authenticate"] == "Bearer"
    assert "not a key" in _error(client.get("/api/categories", headers={"X-API-Key": "uf_wrong"}), 401, "X-API-Key")
    assert client.get("/api/categories", headers={"X-API-Key": fast}).status_code == 200
    assert client.get("/api/categories", headers={"Authorization": f"Bearer {fast}"}).status_code == 200
    r = client.post("/api/search/text", json={"text": "a red dress"}, headers={"Authorization": f"Bearer {fast}"})
    assert r.status_code == 200 and len(r.json()["results"]) == 12
    _error(client.post("/api/search/text", json={"text": "a red dress"}), 401, "X-API-Key")
    _error(client.get("/metrics"), 401, "X-API-Key")
    assert client.get("/metrics", headers={"X-API-Key": fast}).status_code == 200
    # Open: the page, its docs, health probes and images (an <img> cannot send a header).
    health = client.get("/api/health")
    assert health.status_code == 200 and health.json()["auth"] is True
    assert client.get("/").status_code == 200 and client.get("/openapi.json").status_code == 200
    assert client.get(f"/api/products/{catalog.ids[0]}/image").status_code == 200


def test_rate_limits_answer_429_with_retry_after_per_key(guarded):
    client, _, slow, fast = guarded
    codes = [client.get("/api/categories", headers={"X-API-Key": slow}).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    r = client.get("/api/categories", headers={"X-API-Key": slow})
    assert "3 requests a minute for this key" in _error(r, 429, None)
    assert 1 <= int(r.headers["retry-after"]) <= 20
    # Another key has its own bucket (the service default, 600 a minute).
    assert all(client.get("/api/categories", headers={"X-API-Key": fast}).status_code == 200 for _ in range(10))


def test_cors_answers_only_the_allowed_origin(guarded):
    client, *_ = guarded
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key,content-type"}
    ok = client.options("/api/search/text", headers={"Origin": "https://shop.example", **preflight})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://shop.example"
    assert "x-api-key" in ok.headers["access-control-allow-headers"].lower()
    other = client.options("/api/search/text", headers={"Origin": "https://evil.example", **preflight})
    assert "access-control-allow-origin" not in other.headers
    plain = client.get("/api/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in plain.headers
