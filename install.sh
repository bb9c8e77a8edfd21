#!/usr/bin/env bash
# install.sh sets up a Debian or Ubuntu host for pushd. Go 1.26 or newer
# must be installed already (https://go.dev/dl/) wherever it builds.
#
#   ./install.sh               install what is missing (redis-server) and build pushd and pushctl into ./bin
#   ./install.sh --dev-tools   also gcc (cgo, for go test -race), the pinned staticcheck, Debian's chromium, zsh and
#                              systemd's tools, and the JavaScript SDK's npm packages (npm ci; needs Node.js 20+): for
#                              contributors and CI
#   sudo ./install.sh --host [--prefix DIR]
#                              make this host a region node: build as above (on a host without Go, ./bin as it is), then
#                              install the pushd user, /etc/pushd (config and secrets, 0600), /var/lib/pushd, the
#                              binaries, the systemd unit, the sysctl and Redis drop-ins, then daemon-reload and enable
#                              pushd (it does not start it); --prefix is where binaries and docs go (/usr/local)
#   sudo ./install.sh --uninstall [--purge] [--prefix DIR]
#                              remove what --host installed; keep /etc/pushd, /var/lib/pushd and the pushd user unless
#                              --purge
#   DESTDIR=DIR ./install.sh --host ...
#                              stage the files under DIR (for a package): no user, no owners, no systemctl; the package
#                              applies systemd/pushd.sysusers and pushd.tmpfiles
#
# It is idempotent: run it again after pulling to rebuild; a second --host changes nothing on the host and says so.
set -euo pipefail
cd "$(dirname "$0")"

# staticcheck_version is the staticcheck release CI uses: the newest that
# supports Go 1.26. Raise it on purpose, not by @latest.
staticcheck_version=v0.8.2

usage() { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; }
fail() { echo "install.sh: $*" >&2; exit 1; }
usage_error() { echo "install.sh: $*" >&2; echo "Run './install.sh --help' for usage." >&2; exit 2; }

dev_tools=0
mode=dev
purge=0
prefix=/usr/local
while [ $# -gt 0 ]; do
  case "$1" in
    --dev-tools) dev_tools=1 ;;
    --host | --uninstall)
      [ "$mode" = dev ] || usage_error "--host and --uninstall exclude each other"
      mode=${1#--} ;;
    --purge) purge=1 ;;
    --prefix)
      [ $# -ge 2 ] && [ -n "$2" ] || usage_error "--prefix needs a directory"
      prefix=$2; shift ;;
    --prefix=*) prefix=${1#--prefix=} ;;
    -h|--help) usage; exit 0 ;;
    *) usage_error "unknown argument $1" ;;
  esac
  shift
done
case "$prefix" in
  /*) prefix=${prefix%/}; [ -n "$prefix" ] || prefix=/ ;;
  *) usage_error "--prefix $prefix: want an absolute path" ;;
esac
[ "$purge" -eq 0 ] || [ "$mode" = uninstall ] || usage_error "--purge goes with --uninstall"
[ "$mode" = dev ] || [ "$dev_tools" -eq 0 ] || usage_error "--dev-tools does not go with --$mode"
[ "$prefix" = /usr/local ] || [ "$mode" != dev ] || usage_error "--prefix goes with --host or --uninstall"

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

# build builds pushd and pushctl into ./bin: the developer path, and the
# first step of --host. A host without Go installs the ./bin it was given.
build() {
  if ! command -v go >/dev/null 2>&1; then
    if [ "$mode" = host ] && [ -x bin/pushd ] && [ -x bin/pushctl ]; then
      echo "no Go on this host: installing ./bin/pushd and ./bin/pushctl as they are"
      return
    fi
    fail "Go 1.26 or newer is required (https://go.dev/dl/); Debian and Ubuntu packages are older"
  fi
  if [ "$dev_tools" -eq 1 ] && [ "$(go env CGO_ENABLED)" != 1 ]; then
    fail "go test -race needs cgo, but go env CGO_ENABLED is $(go env CGO_ENABLED) (unset CGO_ENABLED, or set it to 1)"
  fi
  echo "building pushd and pushctl into ./bin"
  mkdir -p bin
  go build -o bin/pushd ./appliance/cmd/pushd
  go build -o bin/pushctl ./ctl/cmd/pushctl
}

# --- a region host (--host, --uninstall) ---

# Where things go. Under DESTDIR everything is staged there. Binaries and
# docs follow --prefix; the systemd, sysctl, sysusers and tmpfiles files go
# to /etc (a local install), or to /usr/lib for --prefix /usr (a package);
# the config, the state and the Redis drop-in are always /etc/pushd,
# /var/lib/pushd and /etc/redis.
dest=${DESTDIR:-}
bindir=$prefix/bin
docdir=$prefix/share/doc/pushd
sysdir=/etc
if [ "$prefix" = /usr ]; then sysdir=/usr/lib; fi
unitdir=$sysdir/systemd/system
sysctldir=$sysdir/sysctl.d
sysusersdir=$sysdir/sysusers.d
tmpfilesdir=$sysdir/tmpfiles.d
bashcompdir=$prefix/share/bash-completion/completions
zshcompdir=$prefix/share/zsh/vendor-completions
confdir=/etc/pushd
statedir=/var/lib/pushd
redis_dropin=/etc/redis/redis-pushd.conf
redis_conf=/etc/redis/redis.conf
redis_include="include $redis_dropin"

changed=0
say() { echo "$*"; changed=$((changed + 1)); }

# put installs the content of file src at dest-relative path dst with
# mode, unless it is there already as it would be.
put() {
  local src=$1 dst=$dest$2 mode=$3
  if [ -f "$dst" ] && cmp -s "$src" "$dst" && [ "$(stat -c %a "$dst")" = "${mode#0}" ]; then
    return
  fi
  local verb=installed
  [ -e "$dst" ] && verb=updated
  mkdir -p "$(dirname "$dst")"
  install -m "$mode" "$src" "$dst"
  say "$verb $2"
}

# dir makes a directory with mode unless it is there.
dir() {
  local d=$dest$1 mode=$2
  if [ -d "$d" ]; then
    return
  fi
  mkdir -p "$d"
  chmod "$mode" "$d"
  say "created $1"
}

# unit renders the unit file for this prefix: where pushd and its docs
# are.
render_unit() {
  sed -e "s|^ExecStart=/usr/local/bin/pushd |ExecStart=$bindir/pushd |" \
      -e "s|^Documentation=file:///usr/local/share/doc/pushd/|Documentation=file://$docdir/|" systemd/pushd.service
}

host_install() {
  if [ -z "$dest" ] && [ "$(id -u)" -ne 0 ]; then
    fail "--host installs system files and the pushd user: run it as root (sudo ./install.sh --host), or stage the files with DESTDIR=DIR"
  fi
  if [ -z "$dest" ]; then
    for tool in systemctl systemd-sysusers systemd-tmpfiles; do
      command -v "$tool" >/dev/null 2>&1 || fail "$tool is missing: --host installs a systemd unit on a host that runs systemd"
    done
  fi
  build
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT

  put bin/pushd "$bindir/pushd" 0755
  put bin/pushctl "$bindir/pushctl" 0755
  render_unit >"$tmp/pushd.service"
  local before_unit=$changed
  put "$tmp/pushd.service" "$unitdir/pushd.service" 0644
  local unit_changed=$((changed - before_unit))
  put systemd/90-pushd.conf "$sysctldir/90-pushd.conf" 0644
  local sysctl_changed=$((changed - before_unit - unit_changed))
  put systemd/pushd.sysusers "$sysusersdir/pushd.conf" 0644
  put systemd/pushd.tmpfiles "$tmpfilesdir/pushd.conf" 0644
  put systemd/redis-pushd.conf "$redis_dropin" 0644
  for doc in docs/*.md; do
    put "$doc" "$docdir/$(basename "$doc")" 0644
  done
  bin/pushctl completion bash >"$tmp/pushctl.bash"
  bin/pushctl completion zsh >"$tmp/_pushctl"
  put "$tmp/pushctl.bash" "$bashcompdir/pushctl" 0644
  put "$tmp/_pushctl" "$zshcompdir/_pushctl" 0644
  dir "$confdir" 0700
  dir "$statedir" 0700
  local first=0
  if [ ! -e "$dest$confdir/pushd.json" ]; then
    # The shipped example, named after this host. Never overwritten: it
    # is the operator's from now on.
    sed "s|\"node-id\": \"bj-1\"|\"node-id\": \"$(hostname -s)\"|" systemd/pushd.json >"$tmp/pushd.json"
    put "$tmp/pushd.json" "$confdir/pushd.json" 0600
    first=1
  fi

  if [ -n "$dest" ]; then
    echo "staged under $dest: no user created, no owner set, systemctl not run; the package's postinst runs"
    echo "  systemd-sysusers $sysusersdir/pushd.conf && systemd-tmpfiles --create $tmpfilesdir/pushd.conf"
    echo "  systemctl daemon-reload && systemctl enable pushd"
  else
    if id pushd >/dev/null 2>&1; then :; else
      systemd-sysusers "$sysusersdir/pushd.conf"
      say "created the pushd user"
    fi
    local before after
    before=$(stat -c '%U:%G %a' "$confdir" "$confdir/pushd.json" "$statedir")
    systemd-tmpfiles --create "$tmpfilesdir/pushd.conf"
    after=$(stat -c '%U:%G %a' "$confdir" "$confdir/pushd.json" "$statedir")
    [ "$before" = "$after" ] || say "set owners and modes: $confdir and $statedir pushd:pushd 0700, $confdir/pushd.json 0600"
    if [ -f "$redis_conf" ] && ! grep -qxF "$redis_include" "$redis_conf"; then
      printf '\n# pushd (install.sh --host)\n%s\n' "$redis_include" >>"$redis_conf"
      say "added '$redis_include' to $redis_conf: restart redis-server to apply it"
    fi
    if [ "$sysctl_changed" -gt 0 ]; then
      sysctl -q -p "$sysctldir/90-pushd.conf" >/dev/null 2>&1 ||
        echo "note: sysctl could not apply $sysctldir/90-pushd.conf here (a container?); it applies at the next boot"
    fi
    if [ "$unit_changed" -gt 0 ]; then
      systemctl daemon-reload 2>/dev/null || echo "note: systemctl daemon-reload failed: systemd does not run here"
    fi
    if [ "$(systemctl is-enabled pushd.service 2>/dev/null || true)" != enabled ]; then
      if systemctl enable --quiet pushd.service; then
        say "enabled pushd.service (not started)"
      else
        echo "note: systemctl enable pushd.service failed; enable it by hand"
      fi
    fi
  fi
  if [ ! -f "$dest$redis_conf" ] && [ -z "$dest" ]; then
    echo "note: no $redis_conf here: on the region's Redis host, add '$redis_include' to its redis.conf"
  fi

  if [ "$changed" -eq 0 ]; then
    echo "nothing changed: this host already has what this checkout installs"
  fi
  echo
  if [ "$first" -eq 1 ]; then
    cat <<EOF
next:
  1. edit $confdir/pushd.json: node-id, raft-advertise and the advertise-* addresses of this host, redis
  2. on the region's first host only, set "bootstrap": true, then
       sudo systemctl start pushd && sudo cat $statedir/admin-token
     on every other host, set "join": "<first host>:8091" and "join-token": "<that admin token>", then
       sudo systemctl start pushd
  check a config with: $bindir/pushd --check-config --config $confdir/pushd.json
  more in $docdir/operations.md
EOF
  else
    cat <<EOF
next: restart pushd on this host to run what was installed: sudo systemctl restart pushd
  (a whole region one node at a time: pushctl nodes restart-plan)
EOF
  fi
}

# gone removes a dest-relative file if it is there.
gone() {
  if [ -e "$dest$1" ] || [ -L "$dest$1" ]; then
    rm -rf "$dest$1"
    say "removed $1"
  fi
}

host_uninstall() {
  if [ -z "$dest" ] && [ "$(id -u)" -ne 0 ]; then
    fail "--uninstall removes system files: run it as root, or with DESTDIR=DIR"
  fi
  if [ -z "$dest" ] && command -v systemctl >/dev/null 2>&1 && [ -e "$unitdir/pushd.service" ]; then
    systemctl disable --now pushd.service 2>/dev/null && say "stopped and disabled pushd.service"
  fi
  gone "$bindir/pushd"
  gone "$bindir/pushctl"
  gone "$unitdir/pushd.service"
  gone "$sysctldir/90-pushd.conf"
  gone "$sysusersdir/pushd.conf"
  gone "$tmpfilesdir/pushd.conf"
  gone "$redis_dropin"
  gone "$docdir"
  gone "$bashcompdir/pushctl"
  gone "$zshcompdir/_pushctl"
  if [ -f "$dest$redis_conf" ] && grep -qxF "$redis_include" "$dest$redis_conf"; then
    sed -i -e "\\|^# pushd (install.sh --host)\$|d" -e "\\|^$redis_include\$|d" "$dest$redis_conf"
    say "removed '$redis_include' from $redis_conf"
  fi
  if [ -z "$dest" ] && command -v systemctl >/dev/null 2>&1; then
    systemctl daemon-reload 2>/dev/null || true
  fi
  if [ "$purge" -eq 1 ]; then
    gone "$confdir"
    gone "$statedir"
    if [ -z "$dest" ] && id pushd >/dev/null 2>&1; then
      userdel pushd && say "removed the pushd user"
    fi
  elif [ -e "$dest$confdir" ] || [ -e "$dest$statedir" ]; then
    echo "kept $confdir, $statedir and the pushd user (--purge removes them: the node's Raft log and its config)"
  fi
  if [ "$changed" -eq 0 ]; then
    echo "nothing changed: pushd is not installed here"
  fi
}

case "$mode" in
  host) host_install; exit 0 ;;
  uninstall) host_uninstall; exit 0 ;;
esac

# --- the developer path ---

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
# pushctl's completion tests run its scripts in zsh (and bash); the
# install test verifies the unit with systemd-analyze, which needs no
# running systemd.
if [ "$dev_tools" -eq 1 ] && ! command -v zsh >/dev/null 2>&1; then
  apt_install zsh
fi
if [ "$dev_tools" -eq 1 ] && ! command -v systemd-analyze >/dev/null 2>&1; then
  apt_install systemd
fi

build

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
