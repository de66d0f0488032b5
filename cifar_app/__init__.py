"""CIFAR-10 Studio engine: data, model, training loop, run store. No Streamlit in here."""
