"""The HTTP API and the dashboards (FastAPI): `api.app.create_app()`, served by `meter web`."""
