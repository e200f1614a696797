#!/bin/sh
# Install the mounted workspace's package, migrate, then run the requested role.
set -eu
pip install --no-cache-dir --no-deps -e /workspace >/dev/null
cd /workspace
moonmind db upgrade
case "${1:-worker}" in
  api) exec moonmind orchestrator api --host 0.0.0.0 --port 8000 ;;
  worker) exec moonmind orchestrator worker ;;
  *) exec "$@" ;;
esac
