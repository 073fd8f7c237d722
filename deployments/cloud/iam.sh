#!/usr/bin/env bash
# Service accounts and the least IAM each piece needs.
#   tendsocial-api        runs the Cloud Run service; enqueues tasks; acts as the tasks' OIDC identity
#   tendsocial-tasks      the identity Cloud Tasks signs OIDC tokens as; may invoke the service
#   tendsocial-scheduler  the identity Cloud Scheduler signs as; may invoke the service
set -euo pipefail
: "${GCP_PROJECT_ID:?}" "${GCP_LOCATION:?}"
P="$GCP_PROJECT_ID"
for sa in tendsocial-api tendsocial-tasks tendsocial-scheduler; do
  gcloud iam service-accounts describe "$sa@$P.iam.gserviceaccount.com" --project "$P" >/dev/null 2>&1 \
    || gcloud iam service-accounts create "$sa" --project "$P" --display-name "$sa"
done
API="serviceAccount:tendsocial-api@$P.iam.gserviceaccount.com"
TASKS="serviceAccount:tendsocial-tasks@$P.iam.gserviceaccount.com"
SCHED="serviceAccount:tendsocial-scheduler@$P.iam.gserviceaccount.com"
# The API creates and deletes tasks, and reads its secrets and the database.
gcloud projects add-iam-policy-binding "$P" --member "$API" --role roles/cloudtasks.enqueuer --condition=None
gcloud projects add-iam-policy-binding "$P" --member "$API" --role roles/cloudtasks.taskDeleter --condition=None
gcloud projects add-iam-policy-binding "$P" --member "$API" --role roles/cloudtasks.viewer --condition=None
gcloud projects add-iam-policy-binding "$P" --member "$API" --role roles/cloudsql.client --condition=None
gcloud projects add-iam-policy-binding "$P" --member "$API" --role roles/secretmanager.secretAccessor --condition=None
# Creating a task with an OIDC token requires actAs on the token's service account.
gcloud iam service-accounts add-iam-policy-binding "tendsocial-tasks@$P.iam.gserviceaccount.com" \
  --project "$P" --member "$API" --role roles/iam.serviceAccountUser
# Cloud Tasks and Cloud Scheduler may invoke the service.
for member in "$TASKS" "$SCHED"; do
  gcloud run services add-iam-policy-binding tendsocial-backend --project "$P" \
    --region "$GCP_LOCATION" --member "$member" --role roles/run.invoker
done
