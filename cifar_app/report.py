"""`python -m cifar_app.report`: the runs as a Markdown table (cifar_app.store.report.main)."""

from cifar_app.store.report import main

if __name__ == "__main__":
    raise SystemExit(main())
