"""``python -m mmsearch`` is the same as the ``mmsearch`` command."""

from mmsearch.cli import run

if __name__ == "__main__":
    run()
