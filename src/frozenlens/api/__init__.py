"""The server: REST API (FastAPI) with the Gradio search page, run by ``frozenlens serve``.

Needs the ``serve`` extra. ``create_app`` lives in :mod:`frozenlens.api.app`;
nothing is imported or started at package import time.
"""
