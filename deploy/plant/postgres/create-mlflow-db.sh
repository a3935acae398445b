#!/bin/sh
# Runs once, when the PostgreSQL volume is first initialised: a second database for MLflow, so the
# prediction log (POSTGRES_DB) and MLflow's tables stay apart.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  --set=db="$MLFLOW_DB" <<'SQL'
CREATE DATABASE :"db";
SQL
