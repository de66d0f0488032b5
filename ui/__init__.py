"""What the pages share and are not pages themselves: the process-wide job and data (`ui.common`, also the
sidebar), the model picker with its cached models and test-set predictions (`ui.model_picker`), and the one
view of an image that every gallery opens (`ui.image_view`).

`app_pages/` holds the pages only; `dashboard.py` lists them with `st.navigation`.
"""
