#!/usr/bin/env bash
# Cloud Scheduler: every 6 hours, POST the analytics trigger with an OIDC token.
# The webhook keys the sync on this key plus the 6-hour UTC window (the Prefect deployment
# uses the same key), so a retried or doubled trigger
# in the same window is a no-op.
set -euo pipefail
: "${GCP_PROJECT_ID:?}" "${GCP_LOCATION:?}" "${WEBHOOK_URL:?}"
INVOKER="tendsocial-scheduler@${GCP_PROJECT_ID}.iam.gserviceaccount.com"
args=(
  --project="$GCP_PROJECT_ID" --location="$GCP_LOCATION"
  --schedule="0 */6 * * *" --time-zone="Etc/UTC"
  --uri="${WEBHOOK_URL}/api/jobs/sync-analytics" --http-method=POST
  --headers="Content-Type=application/json"
  --message-body='{"companyId": null, "idempotencyKey": "scheduled"}'
  --oidc-service-account-email="$INVOKER" --oidc-token-audience="${WEBHOOK_URL}/api/jobs/sync-analytics"
  --attempt-deadline=60s
)
gcloud scheduler jobs create http analytics-sync-job "${args[@]}" 2>/dev/null \
  || gcloud scheduler jobs update http analytics-sync-job "${args[@]}"
