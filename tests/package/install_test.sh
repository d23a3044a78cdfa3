#!/usr/bin/env bash
# package.install: cairn installed into a temporary prefix (cmake --install)
# is usable out of tree. The examples under examples/ are configured with
# find_package(cairn) against that prefix, built and run: `embedded` ingests
# a Debezium fixture and prints the products, `client` talks to the
# installed cairnd. The embedded example is built once more with pkg-config
# alone. Nothing is written outside the temporary directory.
#
#   install_test.sh BUILD_DIR SOURCE_DIR FIXTURES_DIR
set -euo pipefail
build=$1 src=$2 fixtures=$3
tmp=$(mktemp -d /tmp/cairn-install-test.XXXXXX)
cairnd_pid=
cleanup() {
  [ -n "$cairnd_pid" ] && kill "$cairnd_pid" 2>/dev/null && wait "$cairnd_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

prefix=$tmp/prefix
cmake --install "$build" --prefix "$prefix" >"$tmp/install.log"
for f in bin/cairnd bin/cairn bin/cairn-backup include/cairn/store.h include/cairn/formats.h \
         include/cairn/client.h include/cairn/version.h; do
  [ -e "$prefix/$f" ] || fail "$f not installed"
done
config=$(find "$prefix" -name cairnConfig.cmake)
[ -n "$config" ] || fail "cairnConfig.cmake not installed"
# The service files are the package's alone.
if grep -q -e /etc/ -e /systemd/ "$tmp/install.log"; then fail "installed outside the prefix"; fi
version=$("$prefix/bin/cairnd" --version)
[ "$version" = "cairnd $(sed -n 's/^project(cairn VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")" ] \
  || fail "cairnd --version: $version"
echo "installed: $version, $(ls "$prefix"/lib*/ -d)"

gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
fixture=$fixtures/flink/debezium-postgres-data-schema-exclude.txt

# cairn::engine through find_package.
cmake -S "$src/examples/embedded" -B "$tmp/embedded" "${gen[@]}" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$tmp/embedded" >/dev/null
"$tmp/embedded/embedded" "$tmp/data" "$fixture" >"$tmp/embedded.out"
cat "$tmp/embedded.out"
head -1 "$tmp/embedded.out" | grep -qx "cairn ${version#cairnd }: 16 events, applied 16, duplicates 0" \
  || fail "embedded: the first line"
now=$(sed -n '/^now:$/,/^as of seq 1:$/p' "$tmp/embedded.out" | grep -c '^products ')
[ "$now" = 10 ] || fail "embedded: $now products now, not 10"
grep -qx 'products 106 {"id":106,"name":"hammer","description":"18oz carpenter hammer","weight":1.0}' \
  "$tmp/embedded.out" || fail "embedded: product 106"
[ "$(sed -n '/^as of seq 1:$/,$p' "$tmp/embedded.out" | grep -c '^products ')" = 1 ] \
  || fail "embedded: as of seq 1 is one product"
# The same data again: every event is a duplicate.
"$tmp/embedded/embedded" "$tmp/data" "$fixture" | head -1 | grep -q "applied 0, duplicates " \
  || fail "embedded: a second run is not all duplicates"

# cairn::engine through pkg-config alone.
pcdir=$(dirname "$(find "$prefix" -name cairn.pc)")
PKG_CONFIG_PATH=$pcdir c++ -std=c++20 -O1 -o "$tmp/embedded-pc" "$src/examples/embedded/main.cc" \
  $(PKG_CONFIG_PATH=$pcdir pkg-config --cflags --libs cairn)
"$tmp/embedded-pc" "$tmp/data-pc" "$fixture" | cmp - "$tmp/embedded.out" \
  || fail "embedded (pkg-config) printed something else"

# cairn::client through find_package, against the installed cairnd. The
# client must not link RocksDB.
cmake -S "$src/examples/client" -B "$tmp/client" "${gen[@]}" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$tmp/client" >/dev/null
if nm -C "$tmp/client/client" | grep -q 'rocksdb::'; then fail "client links RocksDB"; fi
"$prefix/bin/cairnd" --data-dir "$tmp/server-data" --listen 127.0.0.1:0 \
  --port-file "$tmp/port" >"$tmp/cairnd.log" 2>&1 &
cairnd_pid=$!
for _ in $(seq 100); do [ -s "$tmp/port" ] && break; sleep 0.1; done
[ -s "$tmp/port" ] || { cat "$tmp/cairnd.log"; fail "cairnd did not start"; }
"$tmp/client/client" "127.0.0.1:$(cat "$tmp/port")" >"$tmp/client.out"
cat "$tmp/client.out"
grep -qx 'applied 2, duplicates 0' "$tmp/client.out" || fail "client: ingest"
grep -qx 'account 1003 {"acct_no":1003,"plan":"platinum","balance":10}' "$tmp/client.out" \
  || fail "client: the patch is not folded over the load"
grep -qx "cairnd ${version#cairnd }, store format [0-9]*" "$tmp/client.out" || fail "client: version"
echo PASS
