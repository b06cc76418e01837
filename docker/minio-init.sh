#!/bin/sh
# Run once by the `minio-init` service of docker-compose.yml (image minio/mc): creates the bucket
# S3_BUCKET_NAME in the local MinIO, then exits 0 so that services depending on it
# (condition: service_completed_successfully) can start. Safe to run again: an existing bucket is kept.
set -eu

endpoint="${MINIO_ENDPOINT:-http://minio:9000}"
bucket="${S3_BUCKET_NAME:?S3_BUCKET_NAME is empty: set it in .env}"
: "${MINIO_ROOT_USER:?MINIO_ROOT_USER is empty: set it in .env}"
: "${MINIO_ROOT_PASSWORD:?MINIO_ROOT_PASSWORD is empty: set it in .env}"

# MinIO is already healthy when this runs; the retries only cover a slow first start.
tries=0
until mc alias set local "$endpoint" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null; do
    tries=$((tries + 1))
    if [ "$tries" -ge 10 ]; then
        echo "minio-init: cannot reach MinIO at $endpoint" >&2
        exit 1
    fi
    sleep 2
done

mc mb --ignore-existing "local/$bucket"
echo "minio-init: bucket '$bucket' ready at $endpoint"
