#!/usr/bin/env bash
# install.sh sets up a host for pushd: the Debian/Ubuntu packages it needs
# (redis-server), then builds pushd and pushctl into ./bin.
#
#   ./install.sh            install what is missing and build
#   ./install.sh --dev-tools   also install staticcheck (for contributors and CI)
#
# It is idempotent: run it again after pulling to rebuild.
set -euo pipefail
cd "$(dirname "$0")"

dev_tools=0
for arg in "$@"; do
  case "$arg" in
    --dev-tools) dev_tools=1 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

need_sudo() { if [ "$(id -u)" -ne 0 ]; then echo sudo; fi; }

if ! command -v redis-server >/dev/null 2>&1; then
  echo "installing redis-server (Debian package)"
  $(need_sudo) apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $(need_sudo) apt-get install -y -qq redis-server >/dev/null
  # pushd starts its own redis-server in --dev mode and in tests; the
  # distribution's service is not needed on a developer machine.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet redis-server 2>/dev/null; then
    echo "note: the system redis-server service is running on :6379 (pushd --dev uses its own)"
  fi
fi

if ! command -v go >/dev/null 2>&1; then
  echo "install.sh: Go 1.26 or newer is required (https://go.dev/dl/)" >&2
  exit 1
fi

echo "building pushd and pushctl into ./bin"
mkdir -p bin
go build -o bin/pushd ./appliance/cmd/pushd
go build -o bin/pushctl ./ctl/cmd/pushctl

if [ "$dev_tools" -eq 1 ] && ! command -v staticcheck >/dev/null 2>&1 && [ ! -x "$(go env GOPATH)/bin/staticcheck" ]; then
  echo "installing staticcheck"
  GOFLAGS= go install honnef.co/go/tools/cmd/staticcheck@latest
fi
echo "done: ./bin/pushd --dev starts a one-node dev region"
