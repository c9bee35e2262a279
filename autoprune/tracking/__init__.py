"""MLflow tracking and the UIs: tracker, tag names, the front's link and shared view, UI server, dashboard."""
