"""``python -m healthgym``: the ``healthgym`` command (what ``torchrun -m healthgym`` runs)."""

from .cli import main

if __name__ == "__main__":
    main()
