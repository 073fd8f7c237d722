#!/usr/bin/env bash
# Log-based metrics and alert policies (deployments/cloud/monitoring/), created or updated.
# Metric tendsocial/NAME comes from monitoring/metrics/NAME.yaml; a policy is matched by its
# displayName. ALERT_NOTIFICATION_CHANNEL (projects/P/notificationChannels/ID), when set, is
# where alerts go.
set -euo pipefail
: "${GCP_PROJECT_ID:?}"
P="$GCP_PROJECT_ID"
DIR="$(dirname "$0")/monitoring"

for file in "$DIR"/metrics/*.yaml; do
  name="tendsocial/$(basename "$file" .yaml)"
  if gcloud logging metrics describe "$name" --project "$P" >/dev/null 2>&1; then
    gcloud logging metrics update "$name" --project "$P" --config-from-file "$file"
  else
    gcloud logging metrics create "$name" --project "$P" --config-from-file "$file"
  fi
done

channels=()
if [ -n "${ALERT_NOTIFICATION_CHANNEL:-}" ]; then
  channels=(--notification-channels "$ALERT_NOTIFICATION_CHANNEL")
fi
for file in "$DIR"/policies/*.yaml; do
  display="$(sed -n 's/^displayName: "\(.*\)"$/\1/p' "$file")"
  existing="$(gcloud alpha monitoring policies list --project "$P" \
    --filter "displayName=\"$display\"" --format 'value(name)')"
  if [ -n "$existing" ]; then
    gcloud alpha monitoring policies update "$existing" --project "$P" \
      --policy-from-file "$file" "${channels[@]}"
  else
    gcloud alpha monitoring policies create --project "$P" \
      --policy-from-file "$file" "${channels[@]}"
  fi
done
