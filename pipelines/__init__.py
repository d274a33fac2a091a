"""Flywheel's work: plain typed functions, one module per stage. Never imports Airflow."""
