"""``unifashion catalog build | add | remove | info`` and ``unifashion serve``."""

from __future__ import annotations

import argparse
import json

from unifashion.cli.args import add_device_argument
from unifashion.utils.errors import UniFashionError


def _splits(value: str | None) -> list[str] | None:
    return [s.strip() for s in value.split(",") if s.strip()] if value else None


def cmd_catalog_build(args: argparse.Namespace) -> int:
    from unifashion.catalog.build import build_catalog

    catalog = build_catalog(
        args.model,
        args.data,
        args.out,
        splits=_splits(args.split),
        captions=args.captions,
        style=args.style,
        kind=args.index,
        approximate_above=args.approximate_above,
        caption_weight=args.caption_weight,
        batch_size=args.batch_size,
        limit=args.limit,
        progress=not args.quiet,
        device=args.device,
        engine_uri=args.engine_uri,
    )
    print(
        f"{catalog.folder}: {len(catalog)} products ({catalog.version}; indexes "
        f"{json.dumps(catalog.manifest['kinds'])}; captions: {catalog.manifest['caption_source'] or 'none'})"
    )
    return 0


def cmd_catalog_add(args: argparse.Namespace) -> int:
    from unifashion.catalog.build import add_to_catalog

    catalog = add_to_catalog(
        args.catalog,
        args.data,
        model_path=args.model,
        splits=_splits(args.split),
        replace=args.replace,
        batch_size=args.batch_size,
        progress=not args.quiet,
        device=args.device,
    )
    print(f"{catalog.folder}: {len(catalog)} products ({catalog.version})")
    return 0


def cmd_catalog_remove(args: argparse.Namespace) -> int:
    from unifashion.catalog.store import Catalog

    catalog = Catalog.open(args.catalog).remove(args.ids)
    print(f"{catalog.folder}: {len(catalog)} products ({catalog.version})")
    return 0


def cmd_catalog_info(args: argparse.Namespace) -> int:
    from unifashion.catalog.store import Catalog

    catalog = Catalog.open(args.catalog)
    info = {
        **catalog.manifest,
        "version": catalog.version,
        "products": len(catalog),
        "categories": catalog.categories(),
    }
    print(json.dumps(info, indent=2))
    return 0


def cmd_catalog_engine(args: argparse.Namespace) -> int:
    import signal
    import threading

    from unifashion.catalog.milvus import run_local_server

    server = run_local_server(args.dir, args.port)
    print(f"Milvus on http://127.0.0.1:{args.port} (data in {args.dir}); Ctrl-C stops it", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            if server.server_proc.poll() is not None:
                raise UniFashionError(f"the Milvus server stopped (logs in {args.dir}/logs)")
    finally:
        server.stop()
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from unifashion.serve.app import Limits, serve

    limits = Limits(
        max_upload_bytes=args.max_upload_mb * 1024 * 1024,
        max_image_pixels=args.max_pixels,
        max_text_chars=args.max_text_chars,
        max_generation_jobs=args.generation_jobs,
        max_queued_jobs=args.queued_jobs,
        max_batch=args.batch_size,
        batch_wait_ms=args.batch_wait_ms,
        rate_per_minute=args.rate_limit,
    )
    serve(
        args.model,
        args.catalog,
        host=args.host,
        port=args.port,
        limits=limits,
        steps=args.steps,
        device=args.device,
        keys_path=args.keys,
        allow_anonymous=args.no_auth,
        cors_origins=tuple(args.cors_origin),
    )
    return 0


def _keys_file(args: argparse.Namespace):
    from pathlib import Path

    from unifashion.serve.auth import KEYS_FILE, KeyStore

    if (args.file is None) == (args.catalog is None):
        raise UniFashionError("keys: give --catalog CATALOG (its api-keys.json) or --file FILE, one of the two")
    if args.catalog is not None and not (Path(args.catalog) / "CURRENT").exists():
        raise UniFashionError(f"--catalog {args.catalog}: not a catalog folder (no CURRENT file)")
    return KeyStore(args.file if args.file is not None else Path(args.catalog) / KEYS_FILE)


def cmd_keys_add(args: argparse.Namespace) -> int:
    store = _keys_file(args)
    key = store.add(args.name, args.per_minute)
    print(f"API key {args.name!r} (shown once; {store.path} keeps only its SHA-256):\n{key}")
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    store = _keys_file(args)
    for k in store.keys:
        limit = f"{k.per_minute:g}/min" if k.per_minute else "default limit"
        print(f"{k.name}\t{limit}\tcreated {k.created}")
    if not store.keys:
        print(f"no API keys in {store.path}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    store = _keys_file(args)
    store.revoke(args.name)
    print(f"revoked {args.name!r} ({len(store.keys)} keys left in {store.path}); restart the server to apply")
    return 0


def register(sub) -> None:
    from unifashion.catalog.index import APPROXIMATE_ABOVE

    cat = sub.add_parser("catalog", help="a searchable product catalog: FAISS vectors + SQLite metadata")
    csub = cat.add_subparsers(dest="catalog_command", metavar="COMMAND", required=True)

    p = csub.add_parser("build", help="embed every product of a dataset into a new catalog (atomic)")
    p.add_argument("--model", required=True, help="trained model folder")
    p.add_argument("--data", required=True, help="dataset folder (any supported format)")
    p.add_argument("--out", required=True, help="catalog folder (an existing catalog is replaced atomically)")
    p.add_argument("--split", default=None, help="comma-separated splits (default: all)")
    p.add_argument(
        "--captions",
        default="auto",
        choices=("auto", "generate", "data", "none"),
        help="text of the caption index: generate (the model's caption head), data (the dataset's "
        "descriptions), auto (generate when the model has a caption head, else data), none",
    )
    p.add_argument("--style", default="description", help="caption style (title, description, attributes)")
    p.add_argument(
        "--index",
        default="auto",
        choices=("auto", "flat", "hnsw", "ivf"),
        help=f"FAISS index (auto: exact up to {APPROXIMATE_ABOVE:,} vectors, IVF above)",
    )
    p.add_argument("--approximate-above", type=int, default=APPROXIMATE_ABOVE)
    p.add_argument(
        "--engine-uri",
        default=None,
        metavar="URI",
        help="keep the indexes in Milvus at URI (a cluster, or `unifashion catalog engine`), e.g. "
        "http://127.0.0.1:19530; token from UNIFASHION_MILVUS_TOKEN",
    )
    p.add_argument(
        "--caption-weight",
        type=float,
        default=None,
        help="weight of the generated-caption score in search (default 0.25 with captions)",
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--limit", type=int, default=None, help="only the first N products")
    p.add_argument("--quiet", action="store_true")
    add_device_argument(p)
    p.set_defaults(func=cmd_catalog_build)

    p = csub.add_parser("add", help="embed and add the products of a dataset (a new version)")
    p.add_argument("--catalog", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default=None)
    p.add_argument("--model", default=None, help="default: the model the catalog was built with")
    p.add_argument("--replace", action="store_true", help="update products whose id is already there")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--quiet", action="store_true")
    add_device_argument(p)
    p.set_defaults(func=cmd_catalog_add)

    p = csub.add_parser("remove", help="remove products by id (a new version)")
    p.add_argument("--catalog", required=True)
    p.add_argument("--ids", nargs="+", required=True)
    p.set_defaults(func=cmd_catalog_remove)

    p = csub.add_parser("engine", help="run a local Milvus server for --engine-uri (until Ctrl-C)")
    p.add_argument("--dir", required=True, help="where the server keeps its data")
    p.add_argument("--port", type=int, default=19530)
    p.set_defaults(func=cmd_catalog_engine)

    p = csub.add_parser("info", help="print the catalog's manifest")
    p.add_argument("--catalog", required=True)
    p.set_defaults(func=cmd_catalog_info)

    p = sub.add_parser("serve", help="the REST API and web page over a model and a catalog")
    p.add_argument("--model", required=True)
    p.add_argument("--catalog", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-upload-mb", type=int, default=10)
    p.add_argument("--max-pixels", type=int, default=25_000_000, help="largest image accepted (width x height)")
    p.add_argument("--max-text-chars", type=int, default=500)
    p.add_argument("--generation-jobs", type=int, default=1, help="generation / try-on jobs run at once")
    p.add_argument("--queued-jobs", type=int, default=4, help="jobs waiting beyond those (more: 429)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps of generation (default: the head's)")
    p.add_argument(
        "--batch-size", type=int, default=16, help="search encodings per batched model pass (1: no batching)"
    )
    p.add_argument(
        "--batch-wait-ms", type=float, default=5.0, help="how long a batch waits for more requests after its first"
    )
    p.add_argument(
        "--keys", default=None, help="API key file (default: api-keys.json in the catalog; see `unifashion keys`)"
    )
    p.add_argument(
        "--no-auth", action="store_true", help="serve beyond this machine without API keys (refused otherwise)"
    )
    p.add_argument(
        "--rate-limit",
        type=float,
        default=None,
        help="requests a minute per key (per address without keys); a key's own limit replaces it (default: none)",
    )
    p.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a web origin allowed to call the API from a browser, e.g. https://shop.example (repeat for more)",
    )
    add_device_argument(p)
    p.set_defaults(func=cmd_serve)

    keys = sub.add_parser("keys", help="API keys of `unifashion serve` (stored hashed)")
    ksub = keys.add_subparsers(dest="keys_command", metavar="COMMAND", required=True)
    for name, func, helptext in (
        ("add", cmd_keys_add, "make a key (printed once)"),
        ("list", cmd_keys_list, "the keys' names and limits"),
        ("revoke", cmd_keys_revoke, "remove a key"),
    ):
        p = ksub.add_parser(name, help=helptext)
        if name != "list":
            p.add_argument("name", help="the key's name, e.g. shop-frontend")
        p.add_argument("--catalog", default=None, help="keep the keys in CATALOG/api-keys.json")
        p.add_argument("--file", default=None, help="keep the keys in this file instead")
        if name == "add":
            p.add_argument("--per-minute", type=float, default=None, help="this key's rate limit (requests a minute)")
        p.set_defaults(func=func)
