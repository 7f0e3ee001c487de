"""MiniLM's tokenizer read straight from the package's ``tokenizer.json`` with the ``tokenizers`` library.

Why: the default model used open_clip's ``HFTokenizer``, which goes through transformers'
``AutoTokenizer``; importing open_clip and transformers for it costs ~1.5 s of every `mmsearch search`.
The fast tokenizer transformers builds is this same ``tokenizer.json`` run by ``tokenizers``, so the
token ids are the same (tests/test_compiled_encoder.py checks them against ``HFTokenizer`` on awkward
text), with open_clip's cleaning in front: ftfy, HTML unescaping, whitespace collapsed.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:  # annotations only: importing torch is what a one-shot query avoids
    import torch


_PLAIN = re.compile(r"[\x20-\x25\x27-\x7e\t\n]*")  # printable ASCII, tab and newline, no '&'


def clean_text(text: str) -> str:
    """Fix mojibake, unescape HTML (twice, as open_clip does), collapse whitespace.

    ftfy changes nothing in printable ASCII without '&' (its fixes act on non-ASCII characters, HTML
    entities, control characters and escapes), so such text skips it: importing ftfy builds its
    regular expressions, ~0.1-0.2 s of a one-shot query (tests/test_compiled_encoder.py checks that
    the ids are still open_clip's)."""
    if _PLAIN.fullmatch(text):
        return " ".join(text.split())
    import ftfy

    return " ".join(html.unescape(html.unescape(ftfy.fix_text(text))).split())


class MiniLmTokenizer:
    """texts -> int64 token ids [n, context_length]: [CLS] ... [SEP], truncated, padded with the pad id."""

    def __init__(self, model_dir: Path, context_length: int) -> None:
        from tokenizers import Tokenizer

        self.context_length = context_length
        self.pad_id = int(json.loads((model_dir / "config.json").read_text()).get("pad_token_id", 0))
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        pad_token = self._tokenizer.id_to_token(self.pad_id)
        self._tokenizer.enable_truncation(max_length=context_length)
        self._tokenizer.enable_padding(length=context_length, pad_id=self.pad_id, pad_token=pad_token)

    def ids(self, texts: str | Sequence[str]) -> np.ndarray:
        """texts -> int64 numpy ids [n, context_length], without torch (the compiled text tower takes these)."""
        if isinstance(texts, str):
            texts = [texts]
        # One text at a time, not ``encode_batch``: that hands a few short queries to a pool of threads
        # that then spin on the cores the text tower and the vector search need (~3 % of a serving
        # process's CPU at 600 queries/s); a single-threaded encode is as fast for such batches.
        encodings = [self._tokenizer.encode(clean_text(text)) for text in texts]
        return np.array([encoding.ids for encoding in encodings], dtype=np.int64).reshape(len(texts), self.context_length)

    def __call__(self, texts: str | Sequence[str]) -> "torch.Tensor":
        """texts -> int64 torch ids [n, context_length], as open_clip's tokenizers return them."""
        import torch

        return torch.from_numpy(self.ids(texts))
