"""`python -m cifar_app.bench`: the benchmark (cifar_app.engine.bench_cli.main)."""

from cifar_app.engine.bench_cli import main

if __name__ == "__main__":
    raise SystemExit(main())
