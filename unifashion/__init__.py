"""UniFashion: one model for fashion retrieval, captioning and generation."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # ``from unifashion import UniFashion`` without importing torch for ``unifashion --help``.
    if name == "UniFashion":
        from unifashion.pipelines.unifashion import UniFashion

        return UniFashion
    raise AttributeError(f"module 'unifashion' has no attribute {name!r}")
