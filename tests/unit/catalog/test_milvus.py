"""A catalog whose indexes live in Milvus: the engine itself runs here (the Milvus standalone server
binary of the ``milvus`` package, started by the fixture on a free port), and the catalog talks to it
through the same client code as to a cluster, by URI."""

import socket

import numpy as np
import pytest

from unifashion.catalog import milvus as engine
from unifashion.catalog.store import Catalog

from .test_store import _brute, _products, _unit

pytestmark = pytest.mark.slow  # starts a Milvus server (~10 s)


@pytest.fixture(scope="module")
def milvus_uri(tmp_path_factory):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = engine.run_local_server(tmp_path_factory.mktemp("milvus"), port)
    yield f"http://127.0.0.1:{port}"
    server.stop()


def _collections(uri):
    return set(engine._client(uri).list_collections())


def test_a_milvus_catalog_searches_exactly_as_the_faiss_one(milvus_uri, tmp_path):
    entries, vectors = _products(120)
    args = dict(model={"fingerprint": "x"}, caption_weight=0.5)
    faiss_cat = Catalog.create(tmp_path / "f", entries, vectors, kind="flat", **args)
    cat = Catalog.create(tmp_path / "m", entries, vectors, engine_uri=milvus_uri, **args)
    assert cat.manifest["kinds"] == {"queries": "milvus", "means": "milvus", "captions": "milvus"}
    assert {n.split("_v000001_")[-1] for n in _collections(milvus_uri) if cat.manifest["engine"]["prefix"] in n} == {
        "queries",
        "means",
        "captions",
    }
    rng = np.random.default_rng(3)
    for q in _unit(rng.normal(size=(8, vectors.queries.shape[2]))):
        for w in (0.0, 0.5):
            for category in (None, "shirt"):
                got = cat.search(q, k=6, caption_weight=w, category=category)
                want = faiss_cat.search(q, k=6, caption_weight=w, category=category)
                assert [h.id for h in got] == [h.id for h in want]
                for h in got:
                    assert h.score == pytest.approx(float(_brute(vectors, q, w)[h.row]), abs=1e-5)
    assert cat.search(vectors.means[7], by="means", k=1)[0].id == "p7"
    # Another process (here: another Catalog) opens it from the pointer files alone.
    again = Catalog.open(tmp_path / "m")
    assert [h.id for h in again.search(vectors.means[9], by="means", k=3)] == [
        h.id for h in faiss_cat.search(vectors.means[9], by="means", k=3)
    ]
    again.close()


def test_versions_get_their_own_collections_and_old_ones_are_dropped(milvus_uri, tmp_path):
    entries, vectors = _products(30)
    v1 = Catalog.create(tmp_path / "c", entries[:20], vectors.take(np.arange(30) < 20), model={}, engine_uri=milvus_uri)
    prefix = v1.manifest["engine"]["prefix"]
    mine = lambda: sorted(n for n in _collections(milvus_uri) if n.startswith(prefix))
    assert len(mine()) == 3
    new_entries, new_vectors = _products(5, seed=1, prefix="n")
    v2 = v1.add(new_entries, new_vectors)
    assert len(v2) == 25 and len(mine()) == 6  # v1 is still held open: its collections stay
    assert v2.search(new_vectors.means[2], by="means", k=1)[0].id == "n2"
    assert v1.search(new_vectors.means[2], by="means", k=1)[0].id != "n2"  # the old version is unchanged
    v1.close()
    v3 = v2.remove(["p0", "p1"])
    assert len(v3) == 23 and all(h.id not in ("p0", "p1") for h in v3.search(vectors.means[0], by="means", k=23))
    # Two versions are kept (v2, v3); v1 was released, so its collections went with its folder.
    assert sorted({n.split("_")[2] for n in mine()}) == ["v000002", "v000003"]
    v2.close()
    v3.close()


def test_an_ivf_collection_finds_candidates_that_are_re_scored_exactly(milvus_uri, tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "EXACT_UP_TO", 50)  # IVF_FLAT from 50 vectors on
    entries, vectors = _products(200)
    cat = Catalog.create(tmp_path / "c", entries, vectors, model={}, engine_uri=milvus_uri, caption_weight=0.0)
    assert not cat.indexes["queries"].exact
    hits = cat.search(vectors.means[11], by="means", k=5)
    assert hits[0].id == "p11"
    for h in hits:  # candidates from the engine, scores from the stored vectors
        assert h.image_score == pytest.approx(float(vectors.means[h.row] @ vectors.means[11]), abs=1e-5)


def test_an_unreachable_engine_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "CONNECT_TIMEOUT", 2.0)
    entries, vectors = _products(5)
    with pytest.raises(engine.EngineError, match=r"Milvus at http://127\.0\.0\.1:1: cannot connect"):
        Catalog.create(tmp_path / "c", entries, vectors, model={}, engine_uri="http://127.0.0.1:1")
    assert not (tmp_path / "c" / "CURRENT").exists()  # nothing half-made went live


def test_a_catalog_built_into_milvus_serves_the_same_answers(shop, milvus_uri, tmp_path):
    """`catalog build --engine-uri` on the shop's model and data; the service over it answers as over the
    FAISS catalog of the same products."""
    from fastapi.testclient import TestClient

    from unifashion import cli
    from unifashion.serve.app import create_app, load_service

    out = tmp_path / "shop-milvus"
    args = ["catalog", "build", "--model", str(shop.model), "--data", str(shop.data), "--out", str(out)]
    assert cli.main([*args, "--captions", "data", "--engine-uri", milvus_uri, "--quiet"]) == 0
    model, faiss_cat = load_service(shop.model, shop.catalog)
    _, milvus_cat = load_service(shop.model, out)
    assert milvus_cat.manifest["kinds"]["queries"] == "milvus" and len(milvus_cat) == len(faiss_cat)
    with TestClient(create_app(model, faiss_cat)) as a, TestClient(create_app(model, milvus_cat)) as b:
        for body in ({"text": "a red dress with long sleeves", "k": 10}, {"text": "striped shirt", "k": 5}):
            want, got = a.post("/api/search/text", json=body).json(), b.post("/api/search/text", json=body).json()
            assert [x["id"] for x in got["results"]] == [x["id"] for x in want["results"]]
            assert [x["score"] for x in got["results"]] == pytest.approx(
                [x["score"] for x in want["results"]], abs=1e-5
            )
        pid = faiss_cat.ids[3]
        want = a.post("/api/search/similar", json={"product_id": pid}).json()["results"]
        got = b.post("/api/search/similar", json={"product_id": pid}).json()["results"]
        assert [x["id"] for x in got] == [x["id"] for x in want]
