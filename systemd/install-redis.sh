#!/usr/bin/env bash
# install-redis.sh sets up this host's redis-server for a pushd region, as
# root, once Debian's redis-server package is installed:
#
#   sudo systemd/install-redis.sh 10.0.0.5
#
# It includes redis-pushd.conf from redis.conf, binds Redis to the given
# private address and loopback only, and makes pushd's ACL user: a new
# password in /etc/pushd/redis-password (mode 0600, owned by pushd when that
# user exists; copy it to every pushd host) and its SHA-256 in
# /etc/redis/pushd.acl, with Redis's default user off. Then it restarts
# redis-server. Run again, it keeps the password and changes nothing else.
#
# REDIS_ETC and PUSHD_ETC (default /etc/redis and /etc/pushd) say where the
# files go, for another layout.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
redis_etc=${REDIS_ETC:-/etc/redis}
pushd_etc=${PUSHD_ETC:-/etc/pushd}

fail() { echo "install-redis.sh: $*" >&2; exit 1; }
[ $# -eq 1 ] || fail "usage: install-redis.sh PRIVATE-ADDRESS (the address the pushd hosts reach Redis at)"
addr=$1
case "$addr" in
  0.0.0.0|::|'*') fail "$addr is every interface: give the region's private address" ;;
esac
[ -f "$redis_etc/redis.conf" ] || fail "$redis_etc/redis.conf is missing: install Debian's redis-server first"

# The password: made once, never printed, never on a command line.
umask 077
mkdir -p "$pushd_etc"
pwfile="$pushd_etc/redis-password"
if [ ! -s "$pwfile" ]; then
  head -c 32 /dev/urandom | base64 | tr -d '/+=\n' >"$pwfile"
  echo >>"$pwfile"
fi
chmod 600 "$pwfile"
if id pushd >/dev/null 2>&1; then chown pushd: "$pwfile"; fi
hash=$(tr -d '\n' <"$pwfile" | sha256sum | cut -d' ' -f1)

# The ACL file holds the hash only; redis-server must be able to read it.
sed "s/PUSHD_PASSWORD_SHA256/$hash/" "$here/redis-pushd.acl" >"$redis_etc/pushd.acl"
sed "s#/etc/redis/#$redis_etc/#g" "$here/redis-pushd.conf" >"$redis_etc/redis-pushd.conf"
echo "aclfile $redis_etc/pushd.acl" >>"$redis_etc/redis-pushd.conf"
chmod 640 "$redis_etc/pushd.acl" "$redis_etc/redis-pushd.conf"
if getent group redis >/dev/null 2>&1; then chgrp redis "$redis_etc/pushd.acl" "$redis_etc/redis-pushd.conf"; fi

# Listen on the private address and loopback only, and take pushd's
# settings.
if grep -q '^bind ' "$redis_etc/redis.conf"; then
  sed -i "s/^bind .*/bind 127.0.0.1 -::1 $addr/" "$redis_etc/redis.conf"
else
  echo "bind 127.0.0.1 -::1 $addr" >>"$redis_etc/redis.conf"
fi
include="include $redis_etc/redis-pushd.conf"
grep -qxF "$include" "$redis_etc/redis.conf" || echo "$include" >>"$redis_etc/redis.conf"

if command -v systemctl >/dev/null 2>&1; then
  systemctl restart redis-server
fi
echo "redis-server: bound to $addr and loopback, user pushd (password in $pwfile: copy it to every pushd host, mode 0600)"
