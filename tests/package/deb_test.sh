#!/usr/bin/env bash
# package.deb: `cpack -G DEB` builds cairn_<v>_<arch>.deb and
# cairn-dev_<v>_<arch>.deb from the build directory; they install on this
# machine (root), cairnd runs from /usr/bin as the cairn user's service would
# (systemd-analyze verify checks the unit where systemd is installed; where it
# is not, the unit is checked for its required directives), and a purge
# removes every file they installed.
#
#   deb_test.sh BUILD_DIR
# Exits 77 (skipped) unless root with dpkg, or when a cairn package is
# already installed (it is not the test's to replace).
set -euo pipefail
build=$(cd "$1" && pwd)
[ "$(id -u)" = 0 ] && command -v dpkg >/dev/null || { echo "SKIP: needs root and dpkg"; exit 77; }
if dpkg-query -W -f='${Status}' cairn 2>/dev/null | grep -q installed ||
   dpkg-query -W -f='${Status}' cairn-dev 2>/dev/null | grep -q installed; then
  echo "SKIP: a cairn package is installed already"; exit 77
fi
tmp=$(mktemp -d /tmp/cairn-deb-test.XXXXXX)
cairnd_pid=
cleanup() {
  [ -n "$cairnd_pid" ] && kill "$cairnd_pid" 2>/dev/null && wait "$cairnd_pid" 2>/dev/null
  dpkg --purge cairn cairn-dev >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

(cd "$build" && cpack -G DEB -B "$tmp/out" >"$tmp/cpack.log") || { cat "$tmp/cpack.log"; fail cpack; }
server_deb=$(ls "$tmp"/out/cairn_*.deb) dev_deb=$(ls "$tmp"/out/cairn-dev_*.deb)
info=$(dpkg-deb --info "$server_deb") server_files=$(dpkg-deb --contents "$server_deb")
dev_files=$(dpkg-deb --contents "$dev_deb")
echo "$info"
grep -q 'Depends:.*libgrpc++' <<<"$info" || fail "no shared-library dependencies"
grep -q ' ./lib/systemd/system/cairnd.service$' <<<"$server_files" || fail "no unit"
grep -q 'cmake/cairn/cairnConfig.cmake$' <<<"$dev_files" || fail "no CMake package"

dpkg -i "$server_deb" "$dev_deb"
for f in /usr/bin/cairnd /usr/bin/cairn /usr/bin/cairn-backup /etc/default/cairnd \
         /lib/systemd/system/cairnd.service /usr/include/cairn/store.h; do
  [ -e "$f" ] || fail "$f not installed"
done
cairnd --help | grep -q -- '--data-dir' || fail "cairnd --help"
cairnd --version | grep -qx 'cairnd [0-9.]*' || fail "cairnd --version"
cairn --version | grep -qx 'cairn [0-9.]*' || fail "cairn --version"
getent passwd cairn >/dev/null || fail "no cairn user"
[ "$(stat -c %U /var/lib/cairn)" = cairn ] || fail "/var/lib/cairn is not cairn's"

unit=/lib/systemd/system/cairnd.service
if command -v systemd-analyze >/dev/null; then
  # It only warns about a directive it cannot parse: any output fails too.
  out=$(systemd-analyze verify "$unit" 2>&1) || fail "systemd-analyze verify: $out"
  [ -z "$out" ] || fail "systemd-analyze verify: $out"
  echo "systemd-analyze verify: ok"
else
  echo "no systemd-analyze: checking the unit's directives"
fi
for d in 'User=cairn' 'ExecStart=/usr/bin/cairnd --data-dir /var/lib/cairn $CAIRND_OPTS' \
         'EnvironmentFile=-/etc/default/cairnd' 'Restart=on-failure' 'ProtectSystem=strict' \
         'NoNewPrivileges=yes' 'StateDirectory=cairn' 'WantedBy=multi-user.target'; do
  grep -qxF "$d" "$unit" || fail "unit lacks $d"
done

# The service's command line, as the cairn user, without systemd: the
# installed binary serves its store with /etc/default/cairnd's flags (on a
# free port rather than the default one).
. /etc/default/cairnd
opts=${CAIRND_OPTS/--listen 127.0.0.1:50051/--listen 127.0.0.1:0}
[ "$opts" != "$CAIRND_OPTS" ] || fail "/etc/default/cairnd does not listen on 127.0.0.1:50051"
# shellcheck disable=SC2086
setpriv --reuid=cairn --regid=cairn --init-groups /usr/bin/cairnd --data-dir /var/lib/cairn $opts \
  --port-file /var/lib/cairn/port >"$tmp/cairnd.log" 2>&1 &
cairnd_pid=$!
for _ in $(seq 100); do [ -s /var/lib/cairn/port ] && break; sleep 0.1; done
[ -s /var/lib/cairn/port ] || { cat "$tmp/cairnd.log"; fail "cairnd did not start"; }
cairn --server "127.0.0.1:$(cat /var/lib/cairn/port)" health | grep -qx SERVING || fail health
kill "$cairnd_pid"; wait "$cairnd_pid" || fail "cairnd did not stop cleanly on SIGTERM"
cairnd_pid=

dpkg --purge cairn cairn-dev
for f in /usr/bin/cairnd /usr/bin/cairn /usr/bin/cairn-backup /etc/default/cairnd \
         /lib/systemd/system/cairnd.service /usr/include/cairn /var/lib/cairn; do
  [ ! -e "$f" ] || fail "$f left after purge"
done
dpkg-query -W cairn 2>/dev/null | grep -q . && dpkg -s cairn 2>/dev/null | grep -q 'Status: install' \
  && fail "cairn still installed"
echo PASS
