"""The store room: what is on disk about runs, and who may say a run is alive.

    runs         one folder per run (config, meta, metrics, checkpoints), written atomically
    liveness     THE rule for "is this run's process alive" (the Runs page and the sweeps both ask it)
    lineage      resume and fork: what each may change, where a checkpoint stands
    records      the per-image record's files (names, format version); the engine writes, analysis reads
    checkpoints  models in and out: a run's model, the exported file, an uploaded one (torch)
    report       the runs as a table, `python -m cifar_app.report`
runs, liveness, lineage, records and report import no torch. May import the ground, data and model.
"""
