"""Synthetic embeddings that behave like real ones: clustered, anisotropic, with a decaying spectrum.

Real image/text embeddings are not uniform on the sphere: most variance lies in a few directions and
items form topical clusters of very different sizes. Uniform random vectors make every ANN index look
bad (no structure to exploit) and make recall numbers meaningless, so the benchmarks and tests use a
Gaussian mixture shaped like that, at the dimension of the default model.
"""

from __future__ import annotations

import numpy as np


def default_model_dim() -> int:
    """The embedding width of mmsearch-lite as configured (bridge part + learned part if weighted)."""
    from mmsearch.encoders.lite import lite_config, shipped_weights

    return lite_config(shipped_weights()).embedding_dim


class Mixture:
    """A fixed mixture (centres, spreads, weights) from which any number of vectors can be drawn."""

    def __init__(self, dim: int, clusters: int = 256, seed: int = 0, decay: float = 0.6,
                 spread: tuple[float, float] = (0.35, 0.8)) -> None:
        rng = np.random.default_rng(seed)
        self.dim = dim
        self.scale = (np.arange(1, dim + 1, dtype=np.float32) ** -decay).astype(np.float32)  # decaying spectrum
        self.rotation = np.linalg.qr(rng.normal(size=(dim, dim)))[0].astype(np.float32)  # spectrum in no axis order
        self.centres = (rng.normal(size=(clusters, dim)) * self.scale).astype(np.float32)
        self.spread = rng.uniform(*spread, size=clusters).astype(np.float32)  # wider: fewer close neighbours
        weights = 1.0 / np.arange(1, clusters + 1) ** 0.8  # a few big topics, a long tail of small ones
        self.weights = weights / weights.sum()

    def sample(self, n: int, seed: int) -> np.ndarray:
        """``n`` L2-normalised float32 vectors; the same seed gives the same vectors."""
        rng = np.random.default_rng(seed)
        which = rng.choice(len(self.centres), size=n, p=self.weights)
        noise = rng.normal(size=(n, self.dim)).astype(np.float32) * self.scale * self.spread[which, None]
        x = (self.centres[which] + noise) @ self.rotation
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    def batches(self, n: int, seed: int = 0, batch: int = 50_000):
        """Yield (ids, vectors) batches covering ids 1..n (ids as the store assigns them)."""
        for start in range(0, n, batch):
            count = min(batch, n - start)
            ids = np.arange(start + 1, start + count + 1, dtype=np.int64)
            yield ids, self.sample(count, seed * 1_000_003 + start)
