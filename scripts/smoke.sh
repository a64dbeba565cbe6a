#!/usr/bin/env bash
# Smoke checks of a running GourmetGram stack with curl only (the same checks as
# `gourmetgram smoke`): page served, /api/predict answers with a class, each model
# API ready and its metrics up, Nginx's stub_status up.
#
#   scripts/smoke.sh URL [PRODUCTION_API CANARY_API [STUB_STATUS_URL]]
#   scripts/smoke.sh http://127.0.0.1 http://127.0.0.1:8000 http://127.0.0.1:8001 \
#                    http://127.0.0.1:8088/stub_status
# IMAGE=photo.jpg classifies that photo instead of the built-in 64x48 JPEG.
# One line per check; exit 1 if any fails, 2 on bad arguments.
set -uo pipefail

if [ $# -lt 1 ] || [ $# -gt 4 ] || [ $# -eq 2 ]; then
  echo "usage: $0 URL [PRODUCTION_API CANARY_API [STUB_STATUS_URL]]" >&2
  exit 2
fi
URL=${1%/}
PRODUCTION=${2:-}
CANARY=${3:-}
STATUS=${4:-}
SMALL_JPEG=/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAUDBAQEAwUEBAQFBQUGBwwIBwcHBw8LCwkMEQ8SEhEPERETFhwXExQaFRERGCEYGh0dHx8fExciJCIeJBweHx7/2wBDAQUFBQcGBw4ICA4eFBEUHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh7/wAARCAAwAEADASIAAhEBAxEB/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAAAgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0NTY3ODk6Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKTlJWWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/8QAHwEAAwEBAQEBAQEBAQAAAAAAAAECAwQFBgcICQoL/8QAtREAAgECBAQDBAcFBAQAAQJ3AAECAxEEBSExBhJBUQdhcRMiMoEIFEKRobHBCSMzUvAVYnLRChYkNOEl8RcYGRomJygpKjU2Nzg5OkNERUZHSElKU1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6goOEhYaHiImKkpOUlZaXmJmaoqOkpaanqKmqsrO0tba3uLm6wsPExcbHyMnK0tPU1dbX2Nna4uPk5ebn6Onq8vP09fb3+Pn6/9oADAMBAAIRAxEAPwD5hgsunFX4LL2rWgsvatCCy6cV+lVcYebgMftqZEFl04q/BZe1a8Fl7VfgsunFedVxh9ngMftqZMFl7VfgsunFa0Fl04rQgsvavOq4w+0wGP21MmCy9qvwWXTitaCy6cVfgsvavOq4w+zwGP21POoLLpxV+Cy9q1oLL2rQgsunFdNXGH8YYDH7GRBZdOK0ILL2rWgsvar8Fl04rzquMPs8Bj9jJgsvar8Fl04rXgsunFX4LL2rzquMPs8Bj9jJgsvar8Fl04rWgsunFaEFl7V5tXGH2eAx+x5zBZdOKvwWXtWvBZe1X4LLpxXVVxh/GGAx+2pkwWXTir8Fl7VrQWXtWhBZdOK82rjD7PAY/bUyILL2q/BZdOK14LL2q/BZe1edVxh9ngMftqZMFl7VfgsunFa0Fl04rQgsvavOq4w+0wGP21P/2Q==
failed=0
CURL=(curl -sS --max-time 30)

ok() { echo "ok   $*"; }
fail() { echo "FAIL $*"; failed=1; }
# fetch URL PATTERN: the body matches (read whole first: grep -q closing a pipe early
# would make curl fail under pipefail).
fetch() { local out; out=$("${CURL[@]}" -f "$1" 2>/dev/null) && grep -q -- "$2" <<<"$out"; }

page=$("${CURL[@]}" -o /dev/null -w '%{http_code} %{content_type}' "$URL/" 2>/dev/null)
case "$page" in
  "200 text/html"*) ok "page: $URL/" ;;
  *) fail "page: $URL/ (${page:-no answer})" ;;
esac

if [ -n "${IMAGE:-}" ]; then
  b64=$(base64 -w0 "$IMAGE") || { echo "cannot read IMAGE=$IMAGE" >&2; exit 2; }
else
  b64=$SMALL_JPEG
fi
body=$(printf '{"image": "%s"}' "$b64" | "${CURL[@]}" -f -H 'content-type: application/json' \
       --data-binary @- -D - "$URL/api/predict" 2>/dev/null)
if grep -q '"prediction":"[^"]\+"' <<<"$body"; then
  variant=$(printf '%s' "$body" | tr -d '\r' | sed -n 's/^[Xx]-[Mm]odel-[Vv]ariant: //p')
  ok "predict: $URL/api/predict (from ${variant:-?})"
else
  fail "predict: $URL/api/predict"
fi

check_api() {
  local name=$1 api=${2%/}
  if fetch "$api/readyz" "\"variant\":\"$name\""; then
    ok "$name ready: $api/readyz"
  else
    fail "$name ready: $api/readyz"
  fi
  if fetch "$api/metrics" 'http_requests_total'; then
    ok "$name metrics: $api/metrics"
  else
    fail "$name metrics: $api/metrics"
  fi
}
[ -n "$PRODUCTION" ] && check_api production "$PRODUCTION"
[ -n "$CANARY" ] && check_api canary "$CANARY"

if [ -n "$STATUS" ]; then
  if fetch "$STATUS" 'Active connections'; then
    ok "nginx stub_status: $STATUS"
  else
    fail "nginx stub_status: $STATUS"
  fi
fi
exit $failed
