"""The REST API under ``/api/v1``: :func:`~frozenlens.server.api.app.create_api`.

:mod:`.models` holds the JSON shapes (the OpenAPI schema), :mod:`.routes` the
thin handlers, :mod:`.app` the FastAPI app with the error mapping. The page
(:mod:`frozenlens.server.ui`) is mounted next to it by
:func:`frozenlens.server.app.create_app`; neither imports the other.
"""
