"""`python -m rnnflow` is the `rnnflow` command."""

from rnnflow.cli import main

if __name__ == "__main__":
    main()
