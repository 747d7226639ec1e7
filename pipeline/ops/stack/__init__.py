"""The team stack on one machine: PostgreSQL, an S3-compatible object store, an MLflow tracking
server (runs and registry in PostgreSQL, artifacts in the bucket, served through the server), a
Prefect server on PostgreSQL with a process work pool and its workers.

    python -m pipeline.ops.stack up [SERVICE ...]     # start what is not running (all by default)
    python -m pipeline.ops.stack down [SERVICE ...]   # stop (the bucket is saved to disk first)
    python -m pipeline.ops.stack status               # one line per service; exit 1 if one is down
    python -m pipeline.ops.stack env                  # the client settings, as `export` lines
    python -m pipeline.ops.stack connect [--project]  # make the bucket this workspace's DVC remote

Services: postgres, s3, mlflow, prefect, workers: one record each in services.py (how it starts
and stops, its health, what it needs first); control.py's up/down/status are one loop over
them. Everything lives in one folder (P2P_STACK_DIR, default ./.stack): the PostgreSQL data
folder, the bucket's saved contents, logs, process ids and generated secrets; `up` after `down`
finds the data where it was.

A real deployment points the same code at its own servers instead: P2P_POSTGRES_URL (an
existing PostgreSQL; the stack creates its databases there) and P2P_S3_ENDPOINT + AWS_* (real
S3, MinIO, Ceph RGW) replace the local PostgreSQL and moto. Clients need only the URLs `env`
prints; credentials come from the environment and never enter git.

No one in who doesn't belong: the servers bind 127.0.0.1 unless P2P_STACK_HOST says otherwise,
and on any other address (or with P2P_STACK_AUTH=true) the tracking server requires a login
(MLflow's basic-auth app; admin = MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD) and the
Prefect server an auth string (PREFECT_API_AUTH_STRING, "user:password"). PostgreSQL and the
local object store (moto, which checks no credentials) always stay on 127.0.0.1.
"""
