"""The processes around the library: Celery app and tasks, intake, web app, CLI."""
