"""The engine room: training, start to end, and what watches or measures it.

    loop        `train(config)`: the one training loop of the CLI, the app and the sweeps
    schedule    learning rate per step, attention temperature per epoch, work per epoch (no torch)
    reporter    the loop's live side: pace, ETA, heartbeat, when to checkpoint
    evaluation  the loop's test and validation passes
    recorder    the per-image record the loop writes as it trains
    jobs        the dashboard's background training job
    speed       the app's speed probe (time estimates before a run starts)
    bench       the benchmark, `python -m cifar_app.bench` (bench_cli prints it)
    cli         `python -m cifar_app.train`
May import the ground, data, model and store.
"""
