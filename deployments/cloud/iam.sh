#!/usr/bin/env bash
# Service accounts and the least IAM each piece needs (called by deploy.sh).
#   iam.sh accounts OUT_DIR   create the accounts, grant project roles, secret access, actAs
#   iam.sh invokers OUT_DIR   who may invoke each Cloud Run service (after they exist)
# OUT_DIR holds render.py's service-accounts.txt and secret-access.txt.
#
#   tendsocial-api             public company API: schedules (creates tasks), cancels (deletes
#                              tasks), /readyz (gets the queue); reads the database
#   tendsocial-jobs            job webhooks: publishes, fans analytics out (creates tasks),
#                              /readyz; reads the database and the platform secrets
#   tendsocial-reporter        ships run records to Prefect: the database only
#   tendsocial-prefect-worker  runs the sweeper (creates, gets, deletes tasks) and the token
#                              refresh (platform secrets)
#   tendsocial-migrate         runs the migrations: the database only
#   tendsocial-tasks           the identity Cloud Tasks signs OIDC tokens as; invokes the jobs
#   tendsocial-scheduler       the identity Cloud Scheduler signs as; invokes the jobs
set -euo pipefail
: "${GCP_PROJECT_ID:?}" "${GCP_LOCATION:?}"
P="$GCP_PROJECT_ID"
MODE="${1:?accounts|invokers}"
OUT="${2:?OUT_DIR from render.py}"
sa() { printf 'serviceAccount:%s@%s.iam.gserviceaccount.com' "$1" "$P"; }

project_role() {
  gcloud projects add-iam-policy-binding "$P" --member "$(sa "$1")" --role "$2" \
    --condition=None --quiet >/dev/null
}

if [ "$MODE" = accounts ]; then
  while read -r account; do
    gcloud iam service-accounts describe "$account@$P.iam.gserviceaccount.com" --project "$P" \
      >/dev/null 2>&1 \
      || gcloud iam service-accounts create "$account" --project "$P" --display-name "$account"
  done < "$OUT/service-accounts.txt"

  for account in tendsocial-api tendsocial-jobs tendsocial-reporter tendsocial-prefect-worker \
                 tendsocial-migrate; do
    project_role "$account" roles/cloudsql.client
  done
  for account in tendsocial-api tendsocial-jobs tendsocial-prefect-worker; do
    project_role "$account" roles/cloudtasks.enqueuer   # cloudtasks.tasks.create
    project_role "$account" roles/cloudtasks.viewer     # queues.get (/readyz), tasks.get (sweeper)
    # Creating a task that carries an OIDC token needs actAs on the token's account.
    gcloud iam service-accounts add-iam-policy-binding \
      "tendsocial-tasks@$P.iam.gserviceaccount.com" --project "$P" \
      --member "$(sa "$account")" --role roles/iam.serviceAccountUser >/dev/null
  done
  for account in tendsocial-api tendsocial-prefect-worker; do
    project_role "$account" roles/cloudtasks.taskDeleter  # cancel / reschedule / sweeper
  done

  # Each account reads exactly the secrets its own manifests reference.
  while read -r account secret_id; do
    gcloud secrets add-iam-policy-binding "$secret_id" --project "$P" \
      --member "$(sa "$account")" --role roles/secretmanager.secretAccessor >/dev/null
  done < "$OUT/secret-access.txt"
elif [ "$MODE" = invokers ]; then
  # The job webhooks: private (ingress internal), Cloud Tasks and Cloud Scheduler only.
  for account in tendsocial-tasks tendsocial-scheduler; do
    gcloud run services add-iam-policy-binding tendsocial-jobs --project "$P" \
      --region "$GCP_LOCATION" --member "$(sa "$account")" --role roles/run.invoker >/dev/null
  done
  # The company API: public. Every call carries a company API key, checked by the app; the
  # Authorization header cannot carry both that key and a Google ID token.
  gcloud run services add-iam-policy-binding tendsocial-api --project "$P" \
    --region "$GCP_LOCATION" --member allUsers --role roles/run.invoker >/dev/null
else
  echo "usage: iam.sh accounts|invokers OUT_DIR" >&2
  exit 2
fi
