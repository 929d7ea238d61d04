"""API keys (hashed in a file, made and revoked from the command line) and the rate limiter."""

import json

import pytest

from unifashion import cli
from unifashion.serve.auth import ApiKeyError, KeyStore, RateLimiter, hash_key, is_loopback, key_from_headers
from unifashion.utils.errors import UniFashionError


def test_keys_are_stored_hashed_and_found_by_the_key(tmp_path):
    path = tmp_path / "keys.json"
    store = KeyStore(path)
    a = store.add("frontend", per_minute=120)
    b = store.add("batch-jobs")
    assert a != b and a.startswith("uf_") and len(a) > 40
    text = path.read_text()
    assert a not in text and b not in text and hash_key(a) in text  # only hashes on disk
    again = KeyStore(path)  # read back from the file
    assert again.find(a).name == "frontend" and again.find(a).per_minute == 120
    assert again.find(b).name == "batch-jobs" and again.find(b).per_minute is None
    assert again.find("uf_" + "x" * 43) is None and again.find(a + "x") is None
    again.revoke("frontend")
    assert KeyStore(path).find(a) is None and KeyStore(path).find(b) is not None


def test_key_refusals_name_what_is_wrong(tmp_path):
    store = KeyStore(tmp_path / "keys.json")
    store.add("one")
    with pytest.raises(ApiKeyError, match="exists already"):
        store.add("one")
    with pytest.raises(ApiKeyError, match="name"):
        store.add("two words")
    with pytest.raises(ApiKeyError, match="per_minute"):
        store.add("three", per_minute=0)
    with pytest.raises(ApiKeyError, match="no key called"):
        store.revoke("nobody")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ApiKeyError, match=r"bad\.json: unreadable"):
        KeyStore(bad)
    bad.write_text(json.dumps({"format": "unifashion-api-keys", "keys": [{"name": "x", "sha256": "abc"}]}))
    with pytest.raises(ApiKeyError, match=r"keys\[0\]: sha256"):
        KeyStore(bad)


def test_the_key_comes_from_either_header():
    assert key_from_headers({"x-api-key": " k1 "}) == "k1"
    assert key_from_headers({"authorization": "Bearer k2"}) == "k2"
    assert key_from_headers({"authorization": "bearer  k3"}) == "k3"
    assert key_from_headers({"authorization": "Basic abc"}) is None
    assert key_from_headers({}) is None


def test_loopback_addresses():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("shop.example")


def test_token_bucket_allows_a_minute_in_a_burst_then_refills_at_the_rate():
    now = [0.0]
    limiter = RateLimiter(clock=lambda: now[0])
    assert [limiter.take("a", 3) for _ in range(3)] == [0, 0, 0]
    assert limiter.take("a", 3) == 20  # one request per 20 s at 3 a minute
    assert limiter.take("b", 3) == 0  # clients have their own buckets
    now[0] = 10.0
    assert limiter.take("a", 3) == 10  # half a token back: 10 s more
    now[0] = 20.0
    assert limiter.take("a", 3) == 0 and limiter.take("a", 3) == 20
    now[0] = 1000.0  # long idle: the bucket is full again, not more than full
    assert [limiter.take("a", 3) for _ in range(4)] == [0, 0, 0, 20]


def test_keys_command_and_serving_beyond_loopback_without_keys_is_refused(tmp_path, capsys):
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    (catalog / "CURRENT").write_text("v1\n")
    assert cli.main(["keys", "add", "shop", "--catalog", str(catalog), "--per-minute", "60"]) == 0
    key = capsys.readouterr().out.strip().splitlines()[-1]
    assert KeyStore(catalog / "api-keys.json").find(key).name == "shop"
    assert cli.main(["keys", "list", "--catalog", str(catalog)]) == 0
    assert "shop\t60/min" in capsys.readouterr().out
    assert cli.main(["keys", "revoke", "shop", "--catalog", str(catalog)]) == 0
    assert KeyStore(catalog / "api-keys.json").keys == []
    assert cli.main(["keys", "list", "--catalog", str(tmp_path)]) != 0  # not a catalog
    assert "not a catalog folder" in capsys.readouterr().err

    from unifashion.serve.app import serve

    # Refused before anything is loaded (the model path does not even exist).
    with pytest.raises(UniFashionError, match=r"--host 0\.0\.0\.0: serving beyond this machine without API keys"):
        serve(tmp_path / "no-model", catalog, host="0.0.0.0")
