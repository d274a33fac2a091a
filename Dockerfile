# Flywheel image for the scale-out mode (docker-compose.yaml): the official Airflow image,
# extended as https://airflow.apache.org/docs/docker-stack/build.html describes, with the exact
# pins of requirements.txt and the `pipelines` package. The same image runs the MLflow server.
FROM apache/airflow:3.3.2-python3.11

# Runtime state (FLYWHEEL_HOME): a named volume mounted here starts out owned by the airflow user.
USER root
RUN mkdir -p /opt/flywheel \
    && chown airflow:0 /opt/flywheel \
    && chmod 0775 /opt/flywheel
USER airflow

# Pinning apache-airflow to the image's own version keeps pip from up- or downgrading Airflow
# while it resolves the rest (requirements.txt pins apache-airflow==3.3.2 too, and every other
# package exactly, so it plays the role of the constraints file).
COPY --chown=airflow:0 requirements.txt /opt/flywheel-src/requirements.txt
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /opt/flywheel-src/requirements.txt

# The project's code, installed without dependencies (they all came from requirements.txt).
# docker-compose.yaml bind-mounts ./pipelines over /opt/airflow/pipelines and puts /opt/airflow
# first on PYTHONPATH, so the live code wins over this copy during development.
COPY --chown=airflow:0 pyproject.toml /opt/flywheel-src/
COPY --chown=airflow:0 pipelines/ /opt/flywheel-src/pipelines/
COPY --chown=airflow:0 flywheel/ /opt/flywheel-src/flywheel/
RUN pip install --no-cache-dir --no-deps /opt/flywheel-src

ENV FLYWHEEL_HOME=/opt/flywheel \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=1 \
    GX_ANALYTICS_ENABLED=false
