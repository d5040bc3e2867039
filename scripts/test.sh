#!/usr/bin/env bash
# Run every test: start a Kafka broker of our own (PostgreSQL is started by the tests
# from the embedded wheel), run lint and pytest, and stop the broker whatever happens.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

export STLDATA_HOME="${STLDATA_HOME:-$root/var}"
export STLDATA_HOME="$STLDATA_HOME/test"
mkdir -p "$STLDATA_HOME"

started_kafka=0
if [ -z "${STLDATA_TEST_KAFKA_BOOTSTRAP:-}" ]; then
  bootstrap=$(bash scripts/kafka.sh start)
  started_kafka=1
  export STLDATA_TEST_KAFKA_BOOTSTRAP="$bootstrap"
fi
stop_kafka() {
  if [ "$started_kafka" = 1 ]; then bash scripts/kafka.sh stop || true; fi
}
trap stop_kafka EXIT

echo "kafka: $STLDATA_TEST_KAFKA_BOOTSTRAP"
.venv/bin/ruff check src tests bench
.venv/bin/mypy
.venv/bin/pytest "$@"
