"""The sweeps room: hyperparameter searches on Optuna, each trial an ordinary run.

    space     which hyperparameters vary and over what (no Optuna, no torch)
    spec      the sweep's specification, sampler and pruner; creating, finding and stopping a sweep
    storage   where studies live: a journal file in the runs folder, or PostgreSQL across machines (its URL in the
              environment, masked wherever it is shown)
    claims    the budget: claiming the next trial, judging whose worker is dead (Optuna's heartbeat on a database,
              the store's pid rule on the journal), re-running an interrupted trial
    worker    the worker process: claim a trial, train it, tell Optuna; starting workers on this machine
    views     the trials table, the sweep's state, importances and curves, for the page and the CLI
    cli       `python -m cifar_app.sweep`
May import every other room of the engine; nothing imports it but the pages and the entry modules.
"""
