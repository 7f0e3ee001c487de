"""``python -m mmsearch`` is the same as the ``mmsearch`` command."""

from mmsearch.cli import main

if __name__ == "__main__":
    main()
