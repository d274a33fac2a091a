"""Online predictions from the champion (`flywheel serve`): one HTTP endpoint per model.

- `schema`: what a request row must hold (the model's entity keys and row features, typed by the dataset
  contract) and the errors that name the field;
- `encode`: the model's input matrix for request rows, built exactly as batch scoring builds it
  (`pipelines.model.to_matrix_frame`), without pandas on the request path;
- `features`: the FeatureService's views read from the online store (SQLite embedded, Redis scaled out)
  through Feast, with each value's freshness and the views' TTL applied as the training join does;
- `champion`: the champion held in memory, swapped atomically when the `champion` alias moves (polling);
- `log`: requests and predictions appended to the model's scoring log in batches, off the request path;
- `metrics`: request counts, errors and latency percentiles in Prometheus' text format;
- `app`: the ASGI app (auth, routes, errors) and `serve`, which runs it under uvicorn.

Nothing here imports Airflow; heavy libraries are imported inside functions.
"""
