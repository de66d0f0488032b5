"""The sweeps room: hyperparameter searches on Optuna, each trial an ordinary run.

    space     which hyperparameters vary and over what (no Optuna, no torch)
    spec      the sweep's specification, sampler and pruner; creating, finding and stopping a sweep
    storage   where studies live: a journal file in the runs folder, or PostgreSQL across machines
    worker    the worker process: claim a trial, train it, tell Optuna
    views     the trials table, the sweep's state, importances and curves, for the page and the CLI
    cli       `python -m cifar_app.sweep`
May import every other room of the engine; nothing imports it but the pages and the entry modules.
"""
