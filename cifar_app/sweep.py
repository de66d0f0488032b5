"""`python -m cifar_app.sweep`: hyperparameter sweeps (cifar_app.sweeps.cli.main)."""

from cifar_app.sweeps.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
