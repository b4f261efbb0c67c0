#!/usr/bin/env bash
# Drives an ACE-Step REST API the way the acestep skill's acestep.sh does in its default
# `completion` mode (config.json api_mode=completion), with curl, jq and base64 only:
# health -> /v1/models (.data[0].id) -> POST /v1/chat/completions -> decode every
# choices[0].message.audio[i].audio_url.url (a base64 data URL) to OUT_DIR/<id>_<n>.<format>, and
# save the response without the audio to OUT_DIR/<id>.json.
#
# Usage: skill_completion_flow.sh API_URL OUT_DIR [API_KEY]
# Env: CAPTION, LYRICS, DURATION, BPM, SEED, BATCH, THINKING, USE_FORMAT, USE_COT_CAPTION,
#      USE_COT_LANGUAGE, VOCAL_LANGUAGE, AUDIO_FORMAT (the skill's options and config.json values).
# Prints "FILE <path>" per decoded file and "OK" at the end.
set -euo pipefail

API_URL="${1:?api url}"
OUT_DIR="${2:?output dir}"
API_KEY="${3:-}"
CAPTION="${CAPTION:-Pop music}"
LYRICS="${LYRICS:-}"
AUDIO_FORMAT="${AUDIO_FORMAT:-mp3}"

for tool in curl jq base64; do command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 3; }; done
mkdir -p "$OUT_DIR"
auth=()
[ -n "$API_KEY" ] && auth=(-H "Authorization: Bearer ${API_KEY}")
fail() { echo "FAIL: $*" >&2; exit 1; }

code=$(curl -s -o /dev/null -w "%{http_code}" --connect-timeout 5 "${API_URL}/health")
[ "$code" = "200" ] || fail "health returned HTTP $code"

# the model id: first entry of the OpenRouter list, else the skill's own fallback
model_id=$(curl -s "${auth[@]}" "${API_URL}/v1/models" | jq -r '.data[0].id // empty' 2>/dev/null || true)
model_id="${model_id:-acestep/acestep-v15-turbo}"
echo "model: $model_id"

content="<prompt>${CAPTION}</prompt>"
[ -n "$LYRICS" ] && content="${content}<lyrics>${LYRICS}</lyrics>"
payload=$(jq -n \
    --arg model "$model_id" \
    --arg content "$content" \
    --argjson thinking "${THINKING:-true}" \
    --argjson use_format "${USE_FORMAT:-false}" \
    --argjson sample_mode false \
    --argjson use_cot_caption "${USE_COT_CAPTION:-true}" \
    --argjson use_cot_language "${USE_COT_LANGUAGE:-false}" \
    --arg vocal_language "${VOCAL_LANGUAGE:-en}" \
    --arg format "$AUDIO_FORMAT" \
    '{model: $model, messages: [{"role": "user", "content": $content}], stream: false,
      thinking: $thinking, use_format: $use_format, sample_mode: $sample_mode,
      use_cot_caption: $use_cot_caption, use_cot_language: $use_cot_language,
      audio_config: {format: $format, vocal_language: $vocal_language}}')
[ -n "${SEED:-}" ] && payload=$(echo "$payload" | jq --argjson v "$SEED" '. + {seed: $v}')
[ -n "${BATCH:-}" ] && payload=$(echo "$payload" | jq --argjson v "$BATCH" '. + {batch_size: $v}')
[ -n "${DURATION:-}" ] && payload=$(echo "$payload" | jq --argjson v "$DURATION" '.audio_config.duration = $v')
[ -n "${BPM:-}" ] && payload=$(echo "$payload" | jq --argjson v "$BPM" '.audio_config.bpm = $v')

payload_file=$(mktemp)
resp_file=$(mktemp)
trap 'rm -f "$payload_file" "$resp_file"' EXIT
printf '%s' "$payload" > "$payload_file"
http=$(curl -s -w "%{http_code}" --connect-timeout 10 --max-time 660 -o "$resp_file" \
    -X POST "${API_URL}/v1/chat/completions" -H "Content-Type: application/json; charset=utf-8" \
    "${auth[@]}" -A "curl/8.7.1" --data-binary "@${payload_file}")
if [ "$http" != "200" ]; then
    fail "HTTP $http: $(jq -r '.detail // .error.message // empty' "$resp_file" 2>/dev/null)"
fi

job_id=$(jq -r '.id // empty' "$resp_file")
[ -n "$job_id" ] || fail "no id in the completion"
[ "$(jq -r '.choices[0].finish_reason // "stop"' "$resp_file")" != "error" ] || fail "finish_reason error"
jq -r '.choices[0].message.content // empty' "$resp_file"

count=$(jq -r '.choices[0].message.audio | length // 0' "$resp_file")
[ "$count" -gt 0 ] || fail "no audio in the completion"
for i in $(seq 0 $((count - 1))); do
    url=$(jq -r ".choices[0].message.audio[$i].audio_url.url // empty" "$resp_file")
    out="${OUT_DIR}/${job_id}_$((i + 1)).${AUDIO_FORMAT}"
    printf '%s' "${url#data:*;base64,}" | base64 -d > "$out" || fail "audio $((i + 1)) is not base64"
    [ -s "$out" ] || fail "audio $((i + 1)) is empty"
    echo "FILE $out"
done
jq 'del(.choices[].message.audio[].audio_url.url)' "$resp_file" > "${OUT_DIR}/${job_id}.json"
echo "OK"
