"""`python -m cifar_app.train`: train from the command line (cifar_app.engine.cli.main)."""

from cifar_app.engine.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
