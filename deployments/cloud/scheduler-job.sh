#!/usr/bin/env bash
# Cloud Scheduler: every 6 hours, POST the analytics trigger to the job webhooks with an OIDC
# token signed as tendsocial-scheduler (one of the identities the service accepts) for the fixed
# audience TASKS_OIDC_AUDIENCE (= WEBHOOK_URL, the job service's run.app URL). The webhook keys
# the sync on "scheduled" plus the 6-hour UTC window, so a retried or doubled trigger in the same
# window is a no-op.
set -euo pipefail
: "${GCP_PROJECT_ID:?}" "${GCP_LOCATION:?}" "${WEBHOOK_URL:?}"
INVOKER="tendsocial-scheduler@${GCP_PROJECT_ID}.iam.gserviceaccount.com"
args=(
  --project="$GCP_PROJECT_ID" --location="$GCP_LOCATION"
  --schedule="0 */6 * * *" --time-zone="Etc/UTC"
  --uri="${WEBHOOK_URL}/api/jobs/sync-analytics" --http-method=POST
  --message-body='{"companyId": null, "idempotencyKey": "scheduled"}'
  --oidc-service-account-email="$INVOKER" --oidc-token-audience="${WEBHOOK_URL}"
  --attempt-deadline=300s --max-retry-attempts=3 --min-backoff=60s
)
if gcloud scheduler jobs describe analytics-sync-job --project="$GCP_PROJECT_ID" \
     --location="$GCP_LOCATION" >/dev/null 2>&1; then
  gcloud scheduler jobs update http analytics-sync-job "${args[@]}" \
    --update-headers="Content-Type=application/json"
else
  gcloud scheduler jobs create http analytics-sync-job "${args[@]}" \
    --headers="Content-Type=application/json"
fi
