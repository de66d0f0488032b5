"""`python -m cifar_app.dynamics`: a run's per-image record in words (cifar_app.analysis.dynamics.main)."""

from cifar_app.analysis.dynamics import main

if __name__ == "__main__":
    raise SystemExit(main())
