"""``python -m msuite`` is the ``msuite`` command."""

from msuite.runtime.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
