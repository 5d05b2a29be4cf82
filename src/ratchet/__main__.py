"""``python -m ratchet``: the same as the ``ratchet`` command (servers started by ``ratchet up`` use it)."""

from ratchet.cli import main

if __name__ == "__main__":
    main()
