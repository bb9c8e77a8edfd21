#!/usr/bin/env bash
# install.sh sets up a Debian or Ubuntu host for pushd: the packages it
# needs (redis-server), then builds pushd and pushctl into ./bin. Go 1.26
# or newer must be installed already (https://go.dev/dl/).
#
#   ./install.sh               install what is missing and build
#   ./install.sh --dev-tools   also gcc (cgo, for go test -race), the pinned staticcheck, Debian's chromium
#                              and the JavaScript SDK's npm packages (npm ci; needs Node.js 20+): for contributors and CI
#
# It is idempotent: run it again after pulling to rebuild.
set -euo pipefail
cd "$(dirname "$0")"

# staticcheck_version is the staticcheck release CI uses: the newest that
# supports Go 1.26. Raise it on purpose, not by @latest.
staticcheck_version=v0.8.2

dev_tools=0
for arg in "$@"; do
  case "$arg" in
    --dev-tools) dev_tools=1 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

fail() { echo "install.sh: $*" >&2; exit 1; }

# apt_install installs Debian packages, as root or through sudo; a host
# without apt-get is told what to install by hand.
apt_updated=0
apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    fail "$* is missing and this host has no apt-get: install.sh supports Debian and Ubuntu; install $* with this system's package manager, then run ./install.sh again"
  fi
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || fail "installing $* needs root: run ./install.sh as root, or install sudo"
    sudo=(sudo)
  fi
  echo "installing $* (Debian packages)"
  if [ "$apt_updated" -eq 0 ]; then
    "${sudo[@]}" apt-get update -qq
    apt_updated=1
  fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! command -v redis-server >/dev/null 2>&1; then
  apt_install redis-server
  # pushd starts its own redis-server in --dev mode and in tests; the
  # distribution's service is not needed on a developer machine.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet redis-server 2>/dev/null; then
    echo "note: the system redis-server service is running on :6379 (pushd --dev uses its own)"
  fi
fi
# go test -race needs cgo, and cgo a C compiler.
if [ "$dev_tools" -eq 1 ] && ! command -v gcc >/dev/null 2>&1; then
  apt_install gcc
fi
# The JavaScript SDK's tests (go test ./appliance/client/js) drive
# headless Chromium.
if [ "$dev_tools" -eq 1 ] && ! command -v chromium >/dev/null 2>&1; then
  apt_install chromium
fi

if ! command -v go >/dev/null 2>&1; then
  fail "Go 1.26 or newer is required (https://go.dev/dl/); Debian and Ubuntu packages are older"
fi
if [ "$dev_tools" -eq 1 ] && [ "$(go env CGO_ENABLED)" != 1 ]; then
  fail "go test -race needs cgo, but go env CGO_ENABLED is $(go env CGO_ENABLED) (unset CGO_ENABLED, or set it to 1)"
fi

echo "building pushd and pushctl into ./bin"
mkdir -p bin
go build -o bin/pushd ./appliance/cmd/pushd
go build -o bin/pushctl ./ctl/cmd/pushctl

if [ "$dev_tools" -eq 1 ]; then
  # go install puts it in GOBIN, or the first GOPATH entry's bin; .ci/run
  # runs it from there, whatever else is on PATH.
  gobin=$(go env GOBIN)
  if [ -z "$gobin" ]; then gobin="$(go env GOPATH | cut -d: -f1)/bin"; fi
  if ! go version -m "$gobin/staticcheck" 2>/dev/null | grep -Eq "^[[:space:]]+mod[[:space:]]+honnef.co/go/tools[[:space:]]+$staticcheck_version([[:space:]]|$)"; then
    echo "installing staticcheck $staticcheck_version into $gobin"
    GOFLAGS= go install "honnef.co/go/tools/cmd/staticcheck@$staticcheck_version"
  fi
fi
if [ "$dev_tools" -eq 1 ]; then
  # The JavaScript SDK's npm packages for its tests, pinned by its
  # package-lock.json: typescript, esbuild, ws and puppeteer-core (which
  # drives the Debian chromium above and downloads no browser).
  command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 ||
    fail "the JavaScript SDK's tests need Node.js 20 or newer with npm (https://nodejs.org); Debian 12's nodejs is too old"
  node_major=$(node -p 'process.versions.node.split(".")[0]')
  [ "$node_major" -ge 20 ] || fail "Node.js $(node --version) is too old: the JavaScript SDK's tests need Node.js 20 or newer"
  echo "installing the JavaScript SDK's npm packages (npm ci in appliance/client/js)"
  (cd appliance/client/js && npm ci --no-audit --no-fund --loglevel=error)
fi
echo "done: ./bin/pushd --dev starts a one-node dev region"
