"""Settings shared by the CLI, the HTTP server and the indexer (env prefix ``MMSEARCH_``)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL = "mmsearch-lite"


def _default_workers() -> int:
    # Leave one core to the encoder: on 2 cores that is one decode worker next to the model.
    return max(1, min(4, (os.cpu_count() or 2) - 1))


class Settings(BaseSettings):
    """Every knob has a default that works on a 2-core laptop; each can be set as MMSEARCH_<NAME>."""

    model_config = SettingsConfigDict(env_prefix="MMSEARCH_", extra="ignore")

    index_dir: Path = Path(".mmsearch")
    model: str = DEFAULT_MODEL
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_size: int = Field(32, ge=1, le=4096)
    workers: int = Field(default_factory=_default_workers, ge=0, le=64)
    # torch intra-op threads; 0 means "one per core". FAISS/OpenMP follow the same number.
    threads: int = Field(0, ge=0, le=256)
    # Model arithmetic: auto = bf16 autocast on CPUs with native bf16, fp16 autocast on CUDA, else fp32.
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    # What runs the image tower: auto = OpenVINO on CPU for mmsearch-lite (a dependency; torch if it is missing), else torch.
    image_backend: Literal["auto", "torch", "openvino"] = "auto"
    # mmsearch-lite's shipped int8 image graph under OpenVINO: auto = at bf16 when it passes its load-time
    # check, else the bf16 graph; on = always (an error if it cannot); off = never (mmsearch.encoders.openvino_int8).
    image_int8: Literal["auto", "on", "off"] = "auto"
    # What runs the text tower (queries, text items): the same choice, see mmsearch.encoders.openvino_text.
    text_backend: Literal["auto", "torch", "openvino"] = "auto"
    # mmsearch-lite's colour channel (colour words of a query matched to the pictures' colours, appended to
    # the embedding): auto = on when a colour config ships beside the weights; off = never. The model id
    # says which, so an index built one way is refused the other way (mmsearch.encoders.colour_channel).
    colour: Literal["auto", "off"] = "auto"
    # mmsearch-lite's hub channel (pictures that answer many unrelated text queries are pushed down text
    # searches): auto = on when a hub file ships beside the weights; off = never; the model id says which
    # (mmsearch.encoders.hub_channel).
    hubs: Literal["auto", "off"] = "auto"
    # Below this many vectors an index type of "auto" searches exactly (FAISS Flat); above, approximately.
    ann_threshold: int = Field(50_000, ge=0)
    # Serve the vector index memory-mapped (pages load on demand and are shared between processes).
    mmap_index: bool = False
    # Where FAISS answers unfiltered searches: auto = a GPU when a GPU build of FAISS sees one, else the CPU.
    faiss_device: Literal["auto", "cpu", "gpu"] = "auto"
    # Decoded pixels above this are refused (decompression bombs); large images are downscaled while decoding.
    max_image_pixels: int = Field(90_000_000, ge=1)
    # Read the text in images while indexing (OCR, `mmsearch index --ocr`); unset: as the index remembers
    # from its last run (off for a new index).
    ocr: bool | None = None
    # What OCR may spend on one image: seconds, and the most text lines it reads (the largest first).
    ocr_seconds: float = Field(20.0, gt=0, le=3600)
    ocr_max_lines: int = Field(300, ge=1, le=100_000)
    # Videos: a frame at every scene change and at least one every this many seconds (mmsearch.imaging.video).
    video_interval: float = Field(10.0, gt=0)
    # The share of pixels (0..1) that must change colour between two frames for a new scene to start.
    video_scene_threshold: float = Field(0.015, gt=0, lt=1)
    # Frames sampled per video at most (a longer video is indexed up to there, and reported).
    video_max_frames: int = Field(5000, ge=1)
    # Pages read per PDF at most (the rest is reported, not indexed).
    pdf_max_pages: int = Field(1000, ge=1)
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    max_k: int = Field(1000, ge=1)
    max_query_chars: int = Field(2000, ge=1)
    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1)
    thumbnail_size: int = Field(256, ge=16, le=2048)
    # How often a running server checks whether an index run has written a new version (seconds).
    reload_interval: float = Field(2.0, ge=0)
    # HTTP guards. A request that has not started answering within this many seconds gets a 503 (0: no budget).
    request_timeout: float = Field(30.0, ge=0)
    # A global admin key (X-API-Key header or Authorization: Bearer) next to those of `mmsearch keys` (unset: only those;
    # no key at all: no auth). Health checks (/healthz, /readyz) never need one.
    api_key: str | None = None
    # Serve /metrics without a key (for a Prometheus scraper on a private network); else it needs a global read key.
    metrics_public: bool = False
    # Recent text queries whose embeddings the server keeps (repeated queries skip the model); 0 turns the cache off.
    query_cache_size: int = Field(4096, ge=0)
    # Comma-separated origins allowed to call the API from a browser (empty: CORS off).
    cors_origins: str = ""
    # Keep the metadata in this database (SQLAlchemy URL, e.g. postgresql+psycopg://user:pw@host/db) instead
    # of <index-dir>/items.sqlite: several API replicas can then share one catalogue. Secret: never shown.
    database_url: SecretStr | None = None
    # Write API (PUT /v1/items/{key}, bulk): image URLs the server fetches. Non-public addresses (private,
    # loopback, link-local such as 169.254.169.254...) are refused unless inside one of these comma-separated
    # networks, e.g. "10.1.0.0/16" for an internal image host (see mmsearch.api.fetch).
    fetch_allow_networks: str = ""
    fetch_timeout: float = Field(10.0, gt=0, le=300)
    fetch_max_redirects: int = Field(3, ge=0, le=10)
    # Largest NDJSON body of POST /v1/items:bulk (other requests keep max_upload_bytes).
    max_bulk_bytes: int = Field(256 * 1024 * 1024, ge=1)

    def effective_threads(self) -> int:
        return self.threads or (os.cpu_count() or 1)

    def database(self) -> str | None:
        """The metadata database URL (password included: pass it on, never print it), or None for SQLite."""
        return self.database_url.get_secret_value() or None if self.database_url else None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def cache_dir() -> Path:
    """Where computed-once artefacts live (class embeddings, compiled graphs, the place-name table):
    ``$MMSEARCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/mmsearch``, else ``~/.cache/mmsearch``."""
    root = os.environ.get("MMSEARCH_CACHE_DIR") or os.path.join(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "mmsearch")
    return Path(root)
