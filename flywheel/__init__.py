"""Flywheel operations: the embedded runtime, the demo player and the CLI. Talks to Airflow over its API/CLI."""
