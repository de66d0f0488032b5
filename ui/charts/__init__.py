"""Altair chart builders for the pages: pure functions, a DataFrame in and a chart out (no Streamlit, no
state, no I/O), so every chart can be built and inspected in a test. One palette across pages: 'test
accuracy' is the same colour wherever it appears.

    training   per-epoch loss and accuracy, the running loss and learning rate, runs compared
    explore    class balance, per-class metrics, the confusion matrix, top-k bars, attention weights
    dynamics   the data map with its sampling, per-class accuracy over epochs, one image over epochs
    sweeps     best so far, parallel coordinates, importances, learning curves of a sweep
"""
