#!/bin/bash
# `make test`: bring up what is missing of the test environment, type-check, run every tier
# (unit, integration, e2e), then stop what THIS run started, also when something fails or on Ctrl-C.
# Services that were already up (`make testenv-up`) are reused and left running.
# On failure the tail of each service's log is printed. Works under CI=true with no stdin.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
. "$HERE/lib.sh"
set +e   # from here on, every step's status is handled by hand
cd "$ROOT"
PY=${PY:-$ROOT/.venv/bin/python}

T_ALL=$(date +%s.%N)
timings=()
lap() { timings+=("$(printf '%-8s %6ss' "$1" "$(since "$2")")"); }

# Two test runs at once would stop each other's services: the second waits for the first.
exec 8> "$STATE/run-tests.lock"
if ! flock -n 8; then say "another test run holds $STATE/run-tests.lock; waiting for it"; flock 8; fi

started=$(mktemp)
export GAZELLE_TESTENV_STARTED=$started
rc=0
cleanup() {
  local t
  trap - EXIT INT TERM
  if [ "$rc" != 0 ]; then
    # the services this run started or found running; the builds' logs when bringing up failed
    local logs=() s
    for s in "${SERVICES[@]}"; do
      if grep -qx "$s" "$started" || is_running "$s"; then logs+=("$s"); fi
    done
    [ "${up_rc:-0}" = 0 ] || logs+=(build-k8s build-images postgres-initdb)
    tail_logs "${logs[@]}"
  fi
  t=$(date +%s.%N)
  mapfile -t ours < <(sort -u "$started")
  if [ ${#ours[@]} -gt 0 ]; then bash "$HERE/down.sh" "${ours[@]}"; fi
  rm -f "$started"
  lap down "$t"
  lap total "$T_ALL"
  printf '[run-tests] %s\n' "${timings[@]}" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'rc=130; exit 130' INT TERM

t=$(date +%s.%N)
bash "$HERE/up.sh" < /dev/null
up_rc=$?
lap up "$t"
if [ "$up_rc" != 0 ]; then rc=$up_rc; say "the test environment did not come up"; exit "$rc"; fi
export GAZELLE_TESTENV_ENV=$ENV_FILE

t=$(date +%s.%N)
"$PY" -m mypy
mypy_rc=$?
lap mypy "$t"

# Two processes (GAZELLE_TEST_PROCESSES): the e2e tests run serially in one, the unit and integration
# modules on both (tests/conftest.py, pytest_xdist_make_scheduler); much of the suite waits on engines
# and clusters rather than on the CPU. Schemathesis gives all the cases of one test one node id, which
# pytest-xdist would run once: those modules run on their own, after.
SERIAL=(tests/unit/test_runtime_schemathesis.py tests/unit/test_server_schemathesis.py)
t=$(date +%s.%N)
"$PY" -m pytest -p no:cacheprovider --durations=25 -n "${GAZELLE_TEST_PROCESSES:-2}" \
  "${SERIAL[@]/#/--ignore=}" tests/unit tests/integration tests/e2e < /dev/null
pytest_rc=$?
"$PY" -m pytest -p no:cacheprovider -q "${SERIAL[@]}" < /dev/null
serial_rc=$?
lap pytest "$t"
# 5 = no tests collected: not a failure while a tier is still empty
[ "$pytest_rc" = 5 ] && pytest_rc=0
[ "$pytest_rc" = 0 ] && pytest_rc=$serial_rc

if [ "$mypy_rc" != 0 ]; then rc=$mypy_rc; elif [ "$pytest_rc" != 0 ]; then rc=$pytest_rc; fi
exit "$rc"
