"""CIFAR-10 Studio's engine: importable and testable without Streamlit or Altair.

Rooms, each importing only those before it: the ground (config, events, device, atomic, shape), data, model,
store, engine, analysis, sweeps. docs/architecture.md is the map; `python -m cifar_app.train`, `.bench`,
`.data`, `.dynamics`, `.sweep` and `.report` are the commands.
"""
