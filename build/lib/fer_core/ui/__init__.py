"""The Streamlit glue of the pages: shared widgets and cached models, the evaluation page's sections, the plotly
charts, and the app's one navigation.

The top floor of fer_core: only pages/ and app.py import it.
"""
