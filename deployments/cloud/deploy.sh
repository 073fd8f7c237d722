#!/usr/bin/env bash
# Deploy TendSocial's pipeline to Google Cloud, in order. Idempotent: re-run to update.
#
# Needs: gcloud (authenticated as a project owner or equivalent), the project's venv on PATH
# (`tendsocial`, `prefect`, python with the project installed), and:
#   GCP_PROJECT_ID GCP_LOCATION CLOUD_SQL_INSTANCE (project:region:instance) PREFECT_API_URL
# On the FIRST deploy also the secret values (stored in Secret Manager, never on a command line
# or in a manifest; later deploys reuse them, rotation is in docs/runbook.md):
#   DATABASE_URL TOKEN_ENCRYPTION_KEY  (required)
#   PREFECT_API_KEY LINKEDIN_CLIENT_SECRET X_CLIENT_SECRET INSTAGRAM_APP_SECRET
#   FACEBOOK_APP_SECRET THREADS_APP_SECRET  (optional)
# Optional plain values: LINKEDIN_CLIENT_ID X_CLIENT_ID INSTAGRAM_APP_ID FACEBOOK_APP_ID
#   THREADS_APP_ID, ACCOUNT_CONNECT_REDIRECT_URIS (the front end's connect callback URLs, comma-
#   separated), ALERT_NOTIFICATION_CHANNEL (projects/P/notificationChannels/ID), IMAGE_TAG.
# WEBHOOK_URL is derived (the job service's deterministic run.app URL); if set it must match.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${GCP_PROJECT_ID:?}" "${GCP_LOCATION:?}" "${CLOUD_SQL_INSTANCE:?}" "${PREFECT_API_URL:?}"
PYTHON="${PYTHON:-python3}"
P="$GCP_PROJECT_ID"
R="$GCP_LOCATION"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

echo "1/12 enable APIs"
gcloud services enable run.googleapis.com cloudtasks.googleapis.com cloudscheduler.googleapis.com \
  sqladmin.googleapis.com secretmanager.googleapis.com artifactregistry.googleapis.com \
  cloudbuild.googleapis.com logging.googleapis.com monitoring.googleapis.com iam.googleapis.com \
  --project "$P"

echo "2/12 the job webhooks' URL (Cloud Run deterministic URL: SERVICE-PROJECT_NUMBER.REGION.run.app)"
PROJECT_NUMBER="$(gcloud projects describe "$P" --format='value(projectNumber)')"
JOBS_URL="https://tendsocial-jobs-${PROJECT_NUMBER}.${R}.run.app"
if [ -n "${WEBHOOK_URL:-}" ] && [ "$WEBHOOK_URL" != "$JOBS_URL" ]; then
  echo "WEBHOOK_URL=$WEBHOOK_URL but the job service is $JOBS_URL (ingress is internal:" \
    "Cloud Tasks and Cloud Scheduler reach it only on its run.app URL)" >&2
  exit 1
fi
export WEBHOOK_URL="$JOBS_URL"

echo "3/12 secrets (created once from the environment; docs/runbook.md rotates them)"
while read -r var secret_id need; do
  if gcloud secrets describe "$secret_id" --project "$P" >/dev/null 2>&1; then
    export "HAS_${var}=1"
    continue
  fi
  value="${!var:-}"
  if [ -z "$value" ]; then
    if [ "$need" = required ]; then
      echo "secret $secret_id does not exist yet: set $var for the first deploy" >&2
      exit 1
    fi
    continue
  fi
  gcloud secrets create "$secret_id" --project "$P" --replication-policy automatic
  printf '%s' "$value" | gcloud secrets versions add "$secret_id" --project "$P" --data-file=-
  export "HAS_${var}=1"
done < <("$PYTHON" -m deployments.cloud.render secrets)

echo "4/12 image (runtime lock with hashes, audited by pip-audit first; base image by digest)"
IMAGE_TAG="${IMAGE_TAG:-$(git rev-parse --short=12 HEAD)}"
export IMAGE="${R}-docker.pkg.dev/${P}/tendsocial/backend:${IMAGE_TAG}"
gcloud artifacts repositories describe tendsocial --location "$R" --project "$P" >/dev/null 2>&1 \
  || gcloud artifacts repositories create tendsocial --repository-format docker \
    --location "$R" --project "$P"
gcloud builds submit --project "$P" --config deployments/cloud/cloudbuild.yaml \
  --substitutions "_IMAGE=$IMAGE" .

echo "5/12 manifests"
"$PYTHON" -m deployments.cloud.render manifests "$OUT"

echo "6/12 service accounts and least-privilege IAM"
bash deployments/cloud/iam.sh accounts "$OUT"

echo "7/12 database migrations (Cloud Run job, before any new code serves)"
gcloud run jobs replace "$OUT/job-tendsocial-migrate.yaml" --region "$R" --project "$P"
gcloud run jobs execute tendsocial-migrate --region "$R" --project "$P" --wait

echo "8/12 services: the private job webhooks, then the public company API"
gcloud run services replace "$OUT/service-tendsocial-jobs.yaml" --region "$R" --project "$P"
urls="$(gcloud run services describe tendsocial-jobs --region "$R" --project "$P" \
  --format='value(metadata.annotations."run.googleapis.com/urls")')"
if [[ "$urls" != *"\"$JOBS_URL\""* ]]; then
  echo "tendsocial-jobs does not answer at $JOBS_URL (its URLs: $urls)" >&2
  exit 1
fi
gcloud run services replace "$OUT/service-tendsocial-api.yaml" --region "$R" --project "$P"

echo "9/12 worker pools: the reporter and the Prefect worker (one instance each, CPU always on)"
gcloud beta run worker-pools replace "$OUT/worker-pool-tendsocial-reporter.yaml" \
  --region "$R" --project "$P"
gcloud beta run worker-pools replace "$OUT/worker-pool-tendsocial-prefect-worker.yaml" \
  --region "$R" --project "$P"

echo "10/12 who may invoke what"
bash deployments/cloud/iam.sh invokers "$OUT"

echo "11/12 Cloud Tasks queues, Cloud Scheduler, Prefect work pool and deployments"
# The publish queue's in-flight limit fits what the job service can take at once.
max_dispatches="$("$PYTHON" -c 'from deployments.cloud.render import JOBS_MAX_INSTANCES as i, CONTAINER_CONCURRENCY as c; print(min(1000, i * c))')"
TASKS_PUBLISH_MAX_CONCURRENT_DISPATCHES="$max_dispatches" tendsocial queues apply
bash deployments/cloud/scheduler-job.sh
prefect work-pool create tendsocial-cloud-run --type process --overwrite
prefect --no-prompt deploy --all --prefect-file deployments/prefect.yaml

echo "12/12 log-based metrics and alert policies"
bash deployments/cloud/monitoring.sh

echo "done: API $(gcloud run services describe tendsocial-api --region "$R" --project "$P" \
  --format='value(status.url)'), webhooks $JOBS_URL"
