"""The analysis room: what a finished (or training) run's files say.

    dynamics   per-image learning dynamics from the record: data map, forgetting, likely mislabelled, the test
               set over epochs (numpy and pandas: no torch)
    metrics    predictions over a split and their confusion, per-class metrics and mistakes (no torch)
    predict    a model's predictions over a split, and for uploaded images (torch)
    compare    runs side by side: the runs table, curves, config differences
May import every room above it: the ground, data, model, store and engine.
"""
