"""`python -m cifar_app.data`: find, download and cache CIFAR-10 (cifar_app.data.dataset.main)."""

from cifar_app.data.dataset import main

raise SystemExit(main())
