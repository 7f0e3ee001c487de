"""Training and evaluation of mmsearch's dual encoders.

* ``mmsearch-lite``: the towers stay frozen, their features are cached on disk once (several augmented
  views per image), and only the small heads are trained contrastively - fast enough for a CPU.
* any open_clip model: fine-tuned end to end (optionally with locked towers) on pixels, saved as an
  open_clip checkpoint usable as ``--model ARCH:/path/ckpt.pt``.
* evaluation measures Recall@k through the same index and search path users use.
"""
