#!/usr/bin/env bash
# Optional peer comparison: the drain workload on Dramatiq, arq, RQ, Celery and BullMQ.
#
#   bash benchmarks/peers/run.sh [--events N] [--events NAME=N] [--only NAME[,NAME]] [--max-seconds S]
#
# Installs the peers into benchmarks/peers/.venv (requirements.txt) and BullMQ into
# benchmarks/peers/node/node_modules (when node and npm are present), then runs
# `python -m benchmarks.peers` with the MAIN venv's python (it starts each private
# server with eventstream.embedded.EmbeddedRedis); the peers' enqueue scripts and
# workers run with the peers venv's python, or node. A failed install is not fatal:
# the runner reports the affected peers as failed, with the reason, and runs the rest.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
MAIN_PY="${EVENTSTREAM_PYTHON:-$ROOT/.venv/bin/python}"
VENV="$HERE/.venv"
LOGS="$VENV/peers-install"

if [[ ! -x "$MAIN_PY" ]]; then
  echo "main venv python not found at $MAIN_PY (create it: python3 -m venv .venv && .venv/bin/pip install -e '.[dev]'," \
       "or set EVENTSTREAM_PYTHON)" >&2
  exit 2
fi

# Which peers were asked for decides what gets installed.
ONLY=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --only) ONLY="${ONLY},${args[i + 1]:-}" ;;
    --only=*) ONLY="${ONLY},${args[i]#--only=}" ;;
  esac
done
wants() {  # wants NAME...: true when no --only, or --only names one of them
  [[ -z "$ONLY" ]] && return 0
  local name
  for name in "$@"; do [[ ",$ONLY," == *",$name,"* ]] && return 0; done
  return 1
}

install_python() {
  local python="${PEERS_BASE_PYTHON:-python3}"
  if [[ ! -x "$VENV/bin/python" ]]; then
    "$python" -m venv "$VENV" || { echo "could not create $VENV with $python" >&2; return 1; }
  fi
  mkdir -p "$LOGS"
  local stamp="$LOGS/requirements.sha256"
  local want
  want="$(sha256sum "$HERE/requirements.txt" | cut -d' ' -f1)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    return 0
  fi
  rm -f "$stamp" "$LOGS/failed.tsv"  # the stamp is written back only when everything installed
  echo "installing peers into $VENV (log: $LOGS/pip.log)"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q --upgrade pip >"$LOGS/pip.log" 2>&1
  if "$VENV/bin/python" -m pip install --disable-pip-version-check -r "$HERE/requirements.txt" \
      >>"$LOGS/pip.log" 2>&1; then
    echo "$want" >"$stamp"
    return 0
  fi
  # The set did not install together: install one requirement at a time, so one
  # broken peer does not take the others down, and record what failed and why.
  echo "installing the peers together failed; trying one at a time" >&2
  local line name
  while IFS= read -r line; do
    line="${line%%#*}"
    line="$(echo "$line" | xargs)"
    [[ -z "$line" ]] && continue
    name="${line%%[\[=<>!~ ]*}"
    if ! "$VENV/bin/python" -m pip install --disable-pip-version-check "$line" >"$LOGS/$name.log" 2>&1; then
      printf '%s\t%s\n' "$name" "$(grep -E 'ERROR|error' "$LOGS/$name.log" | tail -1)" >>"$LOGS/failed.tsv"
    fi
  done <"$HERE/requirements.txt"
}

install_node() {
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    return 0  # the runner reports BullMQ as skipped
  fi
  mkdir -p "$LOGS"
  if [[ -f "$HERE/node/node_modules/bullmq/package.json" \
        && "$HERE/node/node_modules/.package-lock.json" -nt "$HERE/node/package-lock.json" ]]; then
    return 0
  fi
  echo "installing bullmq into $HERE/node (log: $LOGS/npm.log)"
  (cd "$HERE/node" && npm ci --no-audit --no-fund) >"$LOGS/npm.log" 2>&1 \
    || (cd "$HERE/node" && npm install --no-audit --no-fund) >>"$LOGS/npm.log" 2>&1 \
    || echo "npm install failed; see $LOGS/npm.log" >&2
}

if wants dramatiq arq arq-poll10ms rq rq-simple celery; then install_python; fi
if wants bullmq; then install_node; fi

cd "$ROOT" && exec "$MAIN_PY" -m benchmarks.peers "$@"
