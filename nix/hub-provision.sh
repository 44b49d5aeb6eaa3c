#!/usr/bin/env bash
# Provisions the Lifeboat hub in MinIO with `mc`: versioned buckets, the lifecycle rule, one user and
# policy per writer, and the `lifeboat` webhook target with its bucket events. nix/hub.nix runs it as
# lifeboat-hub-provision.service; test/hubProvision.fakeMc.test.ts runs it against a stand-in mc.
#
# Safe to re-run: a second run changes nothing and adds nothing. Buckets, versioning and the lifecycle
# rule are idempotent puts; policies, users, the policy attachment, the webhook target and the bucket
# events are only written when missing or changed. The webhook comes last, so when MinIO refuses it
# (`lifeboat serve` unreachable) everything else is already in place and the unit fails for systemd's
# Restart= to retry.
#
# Inputs (environment; secrets only as files):
#   MINIO_ROOT_USER, MINIO_ROOT_PASSWORD   root credentials (the unit's EnvironmentFile)
#   HUB_ALIAS                    mc alias to use (default: hub)
#   HUB_ENDPOINT                 MinIO's S3 URL (default: http://127.0.0.1:9000)
#   HUB_REGION                   MinIO's region, MINIO_REGION (default: us-east-1); it is part of the ARN
#   HUB_BUCKETS                  space-separated bucket names; all get versioning
#   HUB_NONCURRENT_EXPIRY_DAYS   expire noncurrent versions after this many days; empty: no lifecycle rule
#   HUB_WRITERS                  space-separated `name:/path/to/policy.json`; the policy is named
#                                lifeboat-writer-<name>, the user's access key is <name>
#   HUB_SECRETS_DIR              holds writer-<name> (each writer's secret key) (default: $CREDENTIALS_DIRECTORY)
#   HUB_WEBHOOK_ENDPOINT         `lifeboat serve`'s webhook URL; empty: no webhook
#   HUB_WEBHOOK_TOKEN_FILE       the bearer token (default: $HUB_SECRETS_DIR/webhook-token)
#   HUB_WEBHOOK_QUEUE_DIR, HUB_WEBHOOK_QUEUE_LIMIT   MinIO's persistent event queue (queue_dir empty: none)
#   HUB_WEBHOOK_BUCKETS          space-separated `bucket` or `bucket/prefix` entries that send put events
#   HUB_STATE_DIR                remembers hashes of what was last written (default: $STATE_DIRECTORY)
#   HUB_WAIT_SECONDS             how long to wait for MinIO to answer (default: 60)
set -euo pipefail

alias="${HUB_ALIAS:-hub}"
endpoint="${HUB_ENDPOINT:-http://127.0.0.1:9000}"
region="${HUB_REGION:-us-east-1}"
secrets_dir="${HUB_SECRETS_DIR:-${CREDENTIALS_DIRECTORY:-}}"
state_dir="${HUB_STATE_DIR:-${STATE_DIRECTORY:-}}"
webhook_id="lifeboat"
# MinIO reports target ARNs with its region filled in; `mc event ls` compares them as exact strings.
webhook_arn="arn:minio:sqs:${region}:${webhook_id}:webhook"

step="start"
trap 'echo "lifeboat-hub-provision: failed while ${step}" >&2' ERR

log() { echo "lifeboat-hub-provision: $*"; }
die() { echo "lifeboat-hub-provision: $*" >&2; exit "${2:-1}"; }

[[ -n "${MINIO_ROOT_USER:-}" && -n "${MINIO_ROOT_PASSWORD:-}" ]] || die "MINIO_ROOT_USER and MINIO_ROOT_PASSWORD must be set (rootCredentialsFile)"
[[ -n "$state_dir" ]] || die "HUB_STATE_DIR (or systemd's STATE_DIRECTORY) must be set"
mkdir -p "$state_dir"
export MC_CONFIG_DIR="${MC_CONFIG_DIR:-${RUNTIME_DIRECTORY:-$state_dir}/mc}"

# Percent-encodes for a URL's userinfo, byte by byte.
urlencode() {
  local LC_ALL=C s="$1" out="" c i
  for ((i = 0; i < ${#s}; i++)); do
    c="${s:i:1}"
    case "$c" in
      [a-zA-Z0-9._~-]) out+="$c" ;;
      *) printf -v c '%%%02X' "'$c"; out+="$c" ;;
    esac
  done
  printf '%s' "$out"
}

# The root credentials go to mc through its environment, not its command line (which `ps` shows).
scheme="${endpoint%%://*}"
export "MC_HOST_${alias}=${scheme}://$(urlencode "$MINIO_ROOT_USER"):$(urlencode "$MINIO_ROOT_PASSWORD")@${endpoint#*://}"

sha256() { sha256sum | cut -d' ' -f1; }
# What was last written, by key: lets a re-run skip writes that would repeat (and restart MinIO).
stamp_matches() { [[ -f "$state_dir/$1.sha256" && "$(cat "$state_dir/$1.sha256")" == "$2" ]]; }
stamp_write() { printf '%s' "$2" > "$state_dir/$1.sha256"; }

wait_for_minio() {
  local waited=0
  until mc admin info "$alias" >/dev/null 2>&1; do
    ((waited < ${HUB_WAIT_SECONDS:-60})) || die "MinIO at ${endpoint} did not answer within ${HUB_WAIT_SECONDS:-60} s" 75
    sleep 1
    waited=$((waited + 1))
  done
}

step="waiting for MinIO"
wait_for_minio

for bucket in ${HUB_BUCKETS:-}; do
  step="creating bucket ${bucket}"
  mc mb --ignore-existing "${alias}/${bucket}" >/dev/null
  step="enabling versioning on ${bucket}"
  mc version enable "${alias}/${bucket}" >/dev/null
done

if [[ -n "${HUB_NONCURRENT_EXPIRY_DAYS:-}" ]]; then
  # Noncurrent versions only: an age-based expiry of current objects could delete the last good backups.
  rules="$(jq -cn --argjson days "$HUB_NONCURRENT_EXPIRY_DAYS" '{Rules: [{
    ID: "lifeboat-noncurrent-expiry", Status: "Enabled", Filter: {Prefix: ""},
    NoncurrentVersionExpiration: {NoncurrentDays: $days},
    Expiration: {ExpiredObjectDeleteMarker: true}}]}')"
  for bucket in ${HUB_BUCKETS:-}; do
    step="applying the lifecycle rule to ${bucket}"
    # import replaces the bucket's whole lifecycle configuration: the same rule, never a second copy.
    mc ilm rule import "${alias}/${bucket}" <<<"$rules" >/dev/null
  done
fi

for entry in ${HUB_WRITERS:-}; do
  name="${entry%%:*}"
  policy_file="${entry#*:}"
  policy="lifeboat-writer-${name}"

  step="writing policy ${policy}"
  current="$(mc admin policy info "$alias" "$policy" --json 2>/dev/null | jq -S '.policyInfo.Policy // empty' || true)"
  if [[ "$current" != "$(jq -S . "$policy_file")" ]]; then
    mc admin policy create "$alias" "$policy" "$policy_file" >/dev/null
    log "policy ${policy} written"
  fi

  step="adding user ${name}"
  secret_file="${secrets_dir}/writer-${name}"
  [[ -r "$secret_file" ]] || die "the secret key of writer ${name} is missing (${secret_file})"
  secret_hash="$(printf '%s\n%s' "$name" "$(cat "$secret_file")" | sha256)"
  if ! mc admin user info "$alias" "$name" >/dev/null 2>&1 || ! stamp_matches "writer-${name}" "$secret_hash"; then
    # The secret key is on mc's command line for a moment (mc has no other way); mount /proc with
    # hidepid=2 to hide it from other users.
    mc admin user add "$alias" "$name" "$(cat "$secret_file")" >/dev/null
    stamp_write "writer-${name}" "$secret_hash"
    log "user ${name} added"
  fi

  step="attaching policy ${policy} to ${name}"
  if ! mc admin user info "$alias" "$name" --json |
    jq -e --arg p "$policy" '(.policyName // "") | split(",") | index($p) != null' >/dev/null; then
    mc admin policy attach "$alias" "$policy" --user "$name" >/dev/null
    log "policy ${policy} attached to ${name}"
  fi
done

if [[ -n "${HUB_WEBHOOK_ENDPOINT:-}" ]]; then
  step="configuring the webhook target notify_webhook:${webhook_id}"
  token_file="${HUB_WEBHOOK_TOKEN_FILE:-${secrets_dir}/webhook-token}"
  [[ -r "$token_file" ]] || die "the webhook token is missing (${token_file})"
  settings=("endpoint=${HUB_WEBHOOK_ENDPOINT}")
  if [[ -n "${HUB_WEBHOOK_QUEUE_DIR:-}" ]]; then
    settings+=("queue_dir=${HUB_WEBHOOK_QUEUE_DIR}" "queue_limit=${HUB_WEBHOOK_QUEUE_LIMIT:-100000}")
  fi
  webhook_hash="$( (printf '%s\n' "${settings[@]}"; cat "$token_file") | sha256)"
  configured="$(mc admin config get "$alias" "notify_webhook:${webhook_id}" 2>/dev/null || true)"
  if ! grep -qF -e "endpoint=${HUB_WEBHOOK_ENDPOINT}" -e "endpoint=\"${HUB_WEBHOOK_ENDPOINT}\"" <<<"$configured" ||
    ! stamp_matches webhook "$webhook_hash"; then
    # MinIO dials the endpoint before it accepts the target; while `lifeboat serve` is down this fails,
    # and the unit's Restart=on-failure tries again. The token goes through mc's command line for a moment.
    if ! output="$(mc admin config set "$alias" "notify_webhook:${webhook_id}" "${settings[@]}" "auth_token=$(cat "$token_file")" 2>&1)"; then
      echo "$output" >&2
      die "MinIO refused the webhook target notify_webhook:${webhook_id} (endpoint ${HUB_WEBHOOK_ENDPOINT}); is lifeboat serve up and reachable from the hub? Everything else is provisioned; systemd retries this unit (Restart=on-failure)." 75
    fi
    # A changed notification target takes effect after a restart.
    mc admin service restart "$alias" >/dev/null
    wait_for_minio
    stamp_write webhook "$webhook_hash"
    log "webhook target notify_webhook:${webhook_id} set to ${HUB_WEBHOOK_ENDPOINT}"
  fi

  for entry in ${HUB_WEBHOOK_BUCKETS:-}; do
    bucket="${entry%%/*}"
    prefix=""
    [[ "$entry" == */* ]] && prefix="${entry#*/}"
    step="adding the put event on ${entry} for ${webhook_arn}"
    # Any region: an ARN added by an older version of this script carries none.
    if ! mc event ls "${alias}/${bucket}" --json 2>/dev/null |
      jq -en --arg arn_end ":${webhook_id}:webhook" --arg prefix "$prefix" '[inputs
        | select((.arn // "") | endswith($arn_end)) | select((.prefix // "") == $prefix)
        | select((.event // []) | index("s3:ObjectCreated:*") != null)] | length > 0' >/dev/null; then
      args=("${alias}/${bucket}" "$webhook_arn" --event put --ignore-existing)
      [[ -n "$prefix" ]] && args+=(--prefix "$prefix")
      mc event add "${args[@]}" >/dev/null
      log "put events of ${entry} go to ${webhook_arn}"
    fi
  done
fi

step="done"
log "the hub is provisioned"
