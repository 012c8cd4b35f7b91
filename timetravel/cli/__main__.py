"""``python -m timetravel.cli``: the ``timetravel`` command without its console script."""

from timetravel.cli import main

if __name__ == "__main__":
    main()
