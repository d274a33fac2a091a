"""Airflow UI links to the rest of the loop (an external link in the nav menu; no endpoint served)."""

from __future__ import annotations

import os

from airflow.plugins_manager import AirflowPlugin


class FlywheelLinks(AirflowPlugin):
    name = "flywheel_links"
    external_views = [
        {
            "name": "MLflow (models, runs, gate decisions)",
            "href": os.environ.get("FLYWHEEL_MLFLOW_UI", "http://127.0.0.1:5000") + "/#/models",
            "destination": "nav",   # a top-level entry of the nav menu
        },
    ]
