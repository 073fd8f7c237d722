#!/usr/bin/env bash
# Deploy TendSocial's pipeline to Google Cloud, in order. Idempotent: re-run to update.
# Needs: gcloud (authenticated), envsubst, and the seed's environment variables:
#   GCP_PROJECT_ID GCP_LOCATION GCP_TASKS_QUEUE WEBHOOK_URL WEBHOOK_SECRET
# plus CLOUD_SQL_INSTANCE (project:region:instance), DATABASE_URL, TOKEN_ENCRYPTION_KEY and
# PREFECT_API_URL (a Prefect server on PostgreSQL, or Prefect Cloud).
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${GCP_PROJECT_ID:?}" "${GCP_LOCATION:?}" "${GCP_TASKS_QUEUE:=default}" "${WEBHOOK_URL:?}"
: "${WEBHOOK_SECRET:?}" "${CLOUD_SQL_INSTANCE:?}" "${DATABASE_URL:?}" "${TOKEN_ENCRYPTION_KEY:?}"
: "${PREFECT_API_URL:?}"
export GCP_PROJECT_ID GCP_LOCATION GCP_TASKS_QUEUE WEBHOOK_URL CLOUD_SQL_INSTANCE PREFECT_API_URL
IMAGE="${GCP_LOCATION}-docker.pkg.dev/${GCP_PROJECT_ID}/tendsocial/backend:$(git rev-parse --short HEAD)"
export IMAGE

echo "1/8 enable APIs"
gcloud services enable run.googleapis.com cloudtasks.googleapis.com cloudscheduler.googleapis.com \
  sqladmin.googleapis.com secretmanager.googleapis.com artifactregistry.googleapis.com \
  --project "$GCP_PROJECT_ID"

echo "2/8 secrets"
for pair in "tendsocial-webhook-secret:$WEBHOOK_SECRET" "tendsocial-database-url:$DATABASE_URL" \
            "tendsocial-token-key:$TOKEN_ENCRYPTION_KEY"; do
  name="${pair%%:*}"; value="${pair#*:}"
  gcloud secrets describe "$name" --project "$GCP_PROJECT_ID" >/dev/null 2>&1 \
    || gcloud secrets create "$name" --project "$GCP_PROJECT_ID" --replication-policy automatic
  printf '%s' "$value" | gcloud secrets versions add "$name" --project "$GCP_PROJECT_ID" --data-file=-
done

echo "3/8 image"
gcloud artifacts repositories describe tendsocial --location "$GCP_LOCATION" --project "$GCP_PROJECT_ID" \
  >/dev/null 2>&1 || gcloud artifacts repositories create tendsocial --repository-format docker \
  --location "$GCP_LOCATION" --project "$GCP_PROJECT_ID"
gcloud builds submit --project "$GCP_PROJECT_ID" --tag "$IMAGE" --file deployments/cloud/Dockerfile .

echo "4/8 database migrations (a one-off Cloud Run job)"
gcloud run jobs deploy tendsocial-migrate --project "$GCP_PROJECT_ID" --region "$GCP_LOCATION" \
  --image "$IMAGE" --command tendsocial --args db,upgrade \
  --set-cloudsql-instances "$CLOUD_SQL_INSTANCE" \
  --set-secrets DATABASE_URL=tendsocial-database-url:latest,TOKEN_ENCRYPTION_KEY=tendsocial-token-key:latest \
  --execute-now --wait

echo "5/8 Cloud Run service"
envsubst < deployments/cloud/service.yaml > /tmp/tendsocial-service.yaml
gcloud run services replace /tmp/tendsocial-service.yaml --project "$GCP_PROJECT_ID" --region "$GCP_LOCATION"

echo "6/8 service accounts and IAM"
bash deployments/cloud/iam.sh

echo "7/8 Cloud Tasks queues (the seed's policy + dead-letter queue)"
GCP_PROJECT_ID="$GCP_PROJECT_ID" GCP_LOCATION="$GCP_LOCATION" tendsocial queues apply

echo "8/8 Cloud Scheduler (analytics every 6 h, OIDC) and the Prefect deployments"
bash deployments/cloud/scheduler-job.sh
(cd deployments && prefect deploy --all)
echo "done: ${WEBHOOK_URL}"
