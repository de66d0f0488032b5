"""What the pages share and are not pages themselves: the process-wide job and data (`ui.common`, also the
sidebar) and the model picker with its cached models and test-set predictions (`ui.model_picker`).

`app_pages/` holds the pages only; `dashboard.py` lists them with `st.navigation`.
"""
