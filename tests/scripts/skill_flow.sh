#!/usr/bin/env bash
# Drives an ACE-Step REST API the way the acestep skill's acestep.sh (native mode) does, with curl
# and jq only: health -> models -> generate (release_task) -> poll query_result -> download every
# `file` of the result to OUT_DIR/<task_id>_<n>.<format>, plus create_random_sample.
#
# Usage: skill_flow.sh API_URL OUT_DIR [API_KEY]
#   API_URL  e.g. http://127.0.0.1:8001 (headless) or http://127.0.0.1:8188/acestep (ComfyUI)
# Env: CAPTION, LYRICS, DURATION, STEPS, BATCH, SEED, BPM, THINKING, USE_FORMAT, USE_COT_CAPTION,
#      USE_COT_LANGUAGE (the skill's config.json generation.* values), AUDIO_FORMAT,
#      POLL_SECONDS, MAX_POLLS. Prints the downloaded file paths on the last lines ("FILE <path>").
set -euo pipefail

API_URL="${1:?api url}"
OUT_DIR="${2:?output dir}"
API_KEY="${3:-}"
CAPTION="${CAPTION:-Pop music}"
LYRICS="${LYRICS:-}"
THINKING="${THINKING:-false}"
USE_FORMAT="${USE_FORMAT:-false}"
AUDIO_FORMAT="${AUDIO_FORMAT:-mp3}"
POLL_SECONDS="${POLL_SECONDS:-1}"
MAX_POLLS="${MAX_POLLS:-1800}"

command -v curl >/dev/null || { echo "curl is required" >&2; exit 3; }
command -v jq >/dev/null || { echo "jq is required" >&2; exit 3; }
mkdir -p "$OUT_DIR"

auth=()
[ -n "$API_KEY" ] && auth=(-H "Authorization: Bearer ${API_KEY}")

fail() { echo "FAIL: $*" >&2; exit 1; }

# health: the skill only looks at the HTTP status code
code=$(curl -s -o /dev/null -w "%{http_code}" --connect-timeout 5 "${API_URL}/health")
[ "$code" = "200" ] || fail "health returned HTTP $code"
curl -s "${API_URL}/health" | jq -e '.data.status == "ok"' >/dev/null || fail "health body"

# models
models=$(curl -s "${auth[@]}" "${API_URL}/v1/models")
default_model=$(echo "$models" | jq -r '.default_model // empty')
[ -n "$default_model" ] || fail "no default model in: $models"
echo "default model: $default_model"

# generate: the skill's payload (built with jq for escaping), then its optional additions
payload=$(jq -n \
    --arg prompt "$CAPTION" \
    --arg lyrics "$LYRICS" \
    --arg sample_query "" \
    --argjson thinking "$THINKING" \
    --argjson use_format "$USE_FORMAT" \
    --argjson use_cot_caption "${USE_COT_CAPTION:-true}" \
    --argjson use_cot_language "${USE_COT_LANGUAGE:-true}" \
    --arg vocal_language "en" \
    --arg audio_format "$AUDIO_FORMAT" \
    '{prompt: $prompt, lyrics: $lyrics, sample_query: $sample_query, thinking: $thinking,
      use_format: $use_format, use_cot_caption: $use_cot_caption, use_cot_language: $use_cot_language,
      vocal_language: $vocal_language, audio_format: $audio_format, use_random_seed: true}')
[ -n "${STEPS:-}" ] && payload=$(echo "$payload" | jq --argjson v "$STEPS" '. + {inference_steps: $v}')
[ -n "${SEED:-}" ] && payload=$(echo "$payload" | jq --argjson v "$SEED" '. + {seed: $v, use_random_seed: false}')
[ -n "${DURATION:-}" ] && payload=$(echo "$payload" | jq --argjson v "$DURATION" '. + {audio_duration: $v}')
[ -n "${BPM:-}" ] && payload=$(echo "$payload" | jq --argjson v "$BPM" '. + {bpm: $v}')
[ -n "${BATCH:-}" ] && payload=$(echo "$payload" | jq --argjson v "$BATCH" '. + {batch_size: $v}')

payload_file=$(mktemp)
printf '%s' "$payload" > "$payload_file"
response=$(curl -s -X POST "${API_URL}/release_task" "${auth[@]}" \
    -H "Content-Type: application/json; charset=utf-8" --data-binary "@${payload_file}")
rm -f "$payload_file"
job_id=$(echo "$response" | jq -r '.data.task_id // .task_id // empty')
[ -n "$job_id" ] || fail "no task id in: $response"
echo "job: $job_id"

# poll: status 0 = queued/running, 1 = succeeded, 2 = failed
query=$(jq -n --arg id "$job_id" '{"task_id_list": [$id]}')
status=0
for _ in $(seq "$MAX_POLLS"); do
    response=$(curl -s -X POST "${API_URL}/query_result" "${auth[@]}" \
        -H "Content-Type: application/json; charset=utf-8" -d "$query")
    status=$(printf '%s' "$response" | jq -r '.data[0].status // .[0].status // 0')
    [ "$status" = "0" ] || break
    sleep "$POLL_SECONDS"
done
printf '%s\n' "$response" > "${OUT_DIR}/${job_id}.json"
[ "$status" = "1" ] || fail "job ended with status $status: $response"

# the result is a JSON string holding one item per file
result=$(printf '%s' "$response" | jq -r '.data[0].result // .[0].result // "[]"')
bpm=$(printf '%s' "$result" | jq -r '.[0].metas.bpm // .[0].bpm // empty')
duration=$(printf '%s' "$result" | jq -r '.[0].metas.duration // .[0].duration // empty')
echo "metas: bpm=${bpm} duration=${duration}"

count=1
while IFS= read -r audio_path; do
    [ -n "$audio_path" ] || continue
    out="${OUT_DIR}/${job_id}_${count}.${AUDIO_FORMAT}"
    http=$(curl -s --connect-timeout 10 --max-time 300 -w "%{http_code}" -o "$out" "${auth[@]}" \
        "${API_URL}${audio_path}")
    [ "$http" = "200" ] && [ -s "$out" ] || fail "download of ${API_URL}${audio_path} returned HTTP $http"
    echo "FILE $out"
    count=$((count + 1))
done <<< "$(printf '%s' "$result" | jq -r '.[].file // empty')"
[ "$count" -gt 1 ] || fail "no audio files in result: $result"

# random sample (the form-filling endpoint)
sample=$(curl -s -X POST "${API_URL}/create_random_sample" "${auth[@]}" \
    -H "Content-Type: application/json" -d '{"sample_type": "custom_mode"}')
echo "$sample" | jq -e '.data.caption | length > 0' >/dev/null || fail "random sample: $sample"
echo "OK"
