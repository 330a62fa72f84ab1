# shellcheck shell=bash
# Source this file (`. tools/setup.sh`): it checks and installs everything a build and the tests
# need, idempotently, into a per-user cache keyed by version, then exports:
#   WASM_BINDGEN  the wasm-bindgen CLI matching the wasm-bindgen version in Cargo.lock
#   WASM_OPT      binaryen's wasm-opt (from the npm lock)
#   PF_CACHE      the cache folder (override with PROXY_FETCH_CACHE)
#   PF_WASM_*     only when rustup cannot provide the wasm32 std (or PF_FORCE_RUSTC_WEB=1):
#                 the Debian rustc-web toolchain that builds the wasm instead
# and links ./node_modules to the cached npm install of package-lock.json.
# Nothing is fetched from outside the package registries (crates.io, npm).

pf_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PF_CACHE=${PROXY_FETCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/proxy-fetch}
export PF_CACHE

pf_die() { echo "setup: error: $*" >&2; return 1; }
pf_say() { echo "setup: $*"; }

# Runs "$@" and prints how long it took.
pf_phase() {
  local name=$1 start=$SECONDS rc=0
  shift
  "$@" || rc=$?
  echo "phase: $name took $((SECONDS - start)) s$([ $rc -ne 0 ] && echo " (FAILED, exit $rc)")"
  return $rc
}

# Takes the lock on installing into folder $1 (`$1.lock`, an flock(2) lock: the same one
# proxy-fetch-build takes, so a build and a setup never install one tool twice), waiting for
# its holder with a line every 10 s that names it, for at most 45 minutes. The lock is held on
# file descriptor $pf_lock_fd until pf_unlock. $2 says what is installed.
pf_lock() {
  local dir=$1 what=$2 start=$SECONDS
  mkdir -p "$(dirname "$dir")" || return 1
  exec {pf_lock_fd}<>"$dir.lock" || pf_die "cannot open $dir.lock" || return 1
  until flock -n "$pf_lock_fd"; do
    [ $((SECONDS - start)) -lt 2700 ] ||
      { pf_unlock; pf_die "gave up after $((SECONDS - start)) s waiting for $(pf_lock_holder "$dir") to finish installing $what into $dir (delete $dir.lock if no such install runs)"; return 1; }
    pf_say "waiting for $(pf_lock_holder "$dir") to finish installing $what into $dir ($((SECONDS - start)) s so far)"
    flock -w 10 "$pf_lock_fd" && break
  done
  echo "pid $$ (tools/setup.sh in $pf_root)" >"$dir.lock"
}
pf_lock_holder() { local who; who=$(head -c 500 "$1.lock" 2>/dev/null); echo "${who:-another process}"; }
pf_unlock() { exec {pf_lock_fd}>&-; }

# Runs "$@", an install of $2 into folder $1, with its output kept aside and a line every 10 s
# (time so far; for cargo, the crates it compiled); on failure prints the output's last lines.
pf_install() {
  local dir=$1 what=$2 start=$SECONDS log rc
  shift 2
  log=$(mktemp) || return 1
  "$@" >"$log" 2>&1 &
  local pid=$! next=$((SECONDS + 10))
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1 # how often to look, not a synchronisation: `wait` below collects the result
    if [ "$SECONDS" -ge "$next" ]; then
      local crates last
      crates=$(grep -c '^ *Compiling ' "$log")
      last=$(grep '^ *Compiling ' "$log" | tail -1 | sed 's/^ *Compiling //')
      pf_say "installing $what into $dir: $((SECONDS - start)) s so far${last:+; $crates crate(s) started, now $last}"
      next=$((next + 10))
    fi
  done
  wait "$pid"
  rc=$?
  if [ "$rc" -ne 0 ]; then tail -30 "$log" >&2; fi
  rm -f "$log"
  [ "$rc" -eq 0 ] && pf_say "installed $what in $((SECONDS - start)) s"
  return "$rc"
}

pf_check_commands() {
  command -v cargo >/dev/null || pf_die "cargo not found: install Rust with rustup (https://rustup.rs)" || return 1
  command -v node >/dev/null || pf_die "node not found: install Node.js >= 20 (Debian: apt-get install nodejs npm)" || return 1
  command -v npm >/dev/null || pf_die "npm not found: install npm (Debian: apt-get install npm)" || return 1
  local major
  major=$(node -p 'process.versions.node.split(".")[0]')
  [ "$major" -ge 20 ] || pf_die "node $(node --version) is too old: Miniflare needs Node.js >= 20" || return 1
}

pf_wasm_target() {
  local libdir
  libdir=$(rustc --print target-libdir --target wasm32-unknown-unknown 2>/dev/null)
  if [ -z "${PF_FORCE_RUSTC_WEB:-}" ] && [ -n "$libdir" ] && ls "$libdir"/libstd-*.rlib >/dev/null 2>&1; then
    pf_say "wasm32-unknown-unknown std: present"
    return 0
  fi
  if [ -z "${PF_FORCE_RUSTC_WEB:-}" ] && command -v rustup >/dev/null; then
    pf_say "adding the wasm32-unknown-unknown target with rustup"
    timeout 300 rustup target add wasm32-unknown-unknown && return 0
    pf_say "rustup could not add wasm32-unknown-unknown; falling back to Debian's rustc-web"
  fi
  pf_rustc_web
}

# Fallback: Debian's rustc-web (a newer rustc with its std sources), extracted into the cache
# (not installed over /usr), building std for wasm32 itself (-Zbuild-std). Exports PF_WASM_*
# for tools/build-worker.mjs.
pf_rustc_web() {
  command -v apt-get >/dev/null || pf_die "no wasm32 target, no rustup to add it, and no apt-get for the rustc-web fallback" || return 1
  local version
  version=$(apt-cache policy rustc-web 2>/dev/null | awk '/Candidate:/ { print $2 }')
  if [ -z "$version" ] || [ "$version" = "(none)" ]; then
    apt-get update -qq >/dev/null 2>&1 || true
    version=$(apt-cache policy rustc-web 2>/dev/null | awk '/Candidate:/ { print $2 }')
  fi
  [ -n "$version" ] && [ "$version" != "(none)" ] || pf_die "Debian's rustc-web is not available from apt" || return 1
  local dir="$PF_CACHE/tools/rustc-web-${version//[^A-Za-z0-9.+-]/_}"
  if [ -x "$dir/root/usr/bin/rustc" ]; then
    pf_say "rustc-web $version: cached in $dir (reused, no reinstall)"
  else
    local minor llvm tmp="$dir.tmp.$$"
    minor=$(echo "$version" | cut -d. -f1-2)
    llvm=$(apt-cache depends "libstd-rust-web-$minor" 2>/dev/null | grep -oE 'libllvm[0-9]+' | head -1)
    [ -n "$llvm" ] || pf_die "cannot tell which libllvm libstd-rust-web-$minor needs" || return 1
    pf_say "downloading rustc-web $version with its std sources, $llvm and lld (Debian packages, extracted into the cache)"
    rm -rf "$tmp" && mkdir -p "$tmp" || return 1
    (cd "$tmp" && apt-get download -q "rustc-web=$version" "rust-web-src=$version" "libstd-rust-web-dev=$version" \
      "libstd-rust-web-$minor=$version" "$llvm" "lld-${llvm#libllvm}" >/dev/null 2>&1) ||
      { rm -rf "$tmp"; pf_die "apt-get download of rustc-web $version failed"; return 1; }
    for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$tmp/root" || return 1; done
    rm -f "$tmp"/*.deb
    mv "$tmp" "$dir"
  fi
  export PF_WASM_RUSTC="$dir/root/usr/bin/rustc"
  export PF_WASM_LD_LIBRARY_PATH="$dir/root/usr/lib/x86_64-linux-gnu"
  export PF_WASM_LINKER
  PF_WASM_LINKER=$(ls "$dir"/root/usr/lib/llvm-*/bin/wasm-ld | head -1)
  LD_LIBRARY_PATH="$PF_WASM_LD_LIBRARY_PATH" "$PF_WASM_RUSTC" --version >/dev/null ||
    pf_die "the extracted rustc-web does not run; delete $dir to fetch it again" || return 1
}

pf_lock_version() { # the version of crate $1 in Cargo.lock
  awk -v name="$1" '$0 == "name = \"" name "\"" { getline; gsub(/version = |"/, ""); print; exit }' "$pf_root/Cargo.lock"
}

pf_wasm_bindgen() {
  [ -f "$pf_root/Cargo.lock" ] || (cd "$pf_root" && cargo generate-lockfile) || return 1
  local version dir
  version=$(pf_lock_version wasm-bindgen)
  [ -n "$version" ] || pf_die "wasm-bindgen is not in Cargo.lock" || return 1
  dir="$PF_CACHE/tools/wasm-bindgen-cli-$version"
  if [ -x "$dir/bin/wasm-bindgen" ]; then
    if [ "$("$dir/bin/wasm-bindgen" --version 2>/dev/null)" = "wasm-bindgen $version" ]; then
      pf_say "wasm-bindgen-cli $version: cached in $dir (reused, no reinstall)"
      export WASM_BINDGEN="$dir/bin/wasm-bindgen"
      return 0
    fi
    pf_say "wasm-bindgen-cli in $dir does not report version $version: stale or broken, rebuilding"
    rm -rf "$dir"
  fi
  pf_lock "$dir" "wasm-bindgen-cli $version" || return 1
  # Whoever held the lock may have installed it meanwhile.
  if [ "$("$dir/bin/wasm-bindgen" --version 2>/dev/null)" != "wasm-bindgen $version" ]; then
    rm -rf "$dir"
    pf_say "installing wasm-bindgen-cli $version (it must equal the wasm-bindgen library; a few minutes of compiling, once)"
    local tmp="$dir.tmp.$$"
    rm -rf "$tmp"
    # Only the wasm-bindgen binary, without TLS (it serves only the test runner), in a target
    # folder of its own (not CARGO_TARGET_DIR): the same install as proxy-fetch-build's
    # (proxy-fetch-build/src/tools.rs).
    pf_install "$dir" "wasm-bindgen-cli $version" \
      cargo install wasm-bindgen-cli --version "=$version" --bin wasm-bindgen --no-default-features --root "$tmp" \
      --target-dir "$tmp-target" ||
      { rm -rf "$tmp" "$tmp-target"; pf_unlock; pf_die "cargo install wasm-bindgen-cli $version failed (crates.io unreachable?)"; return 1; }
    rm -rf "$tmp-target"
    mv "$tmp" "$dir"
  fi
  pf_unlock
  export WASM_BINDGEN="$dir/bin/wasm-bindgen"
}

pf_node_modules() {
  local key dir
  key=$( (cat "$pf_root/package-lock.json"; node --version) | sha256sum | cut -c1-16)
  dir="$PF_CACHE/node/$key"
  if [ -d "$dir/node_modules" ]; then
    pf_say "npm packages: cached in $dir (reused, no reinstall)"
  else
    pf_lock "$dir" "the npm packages of package-lock.json" || return 1
    if [ ! -d "$dir/node_modules" ]; then
      pf_say "installing npm packages from package-lock.json into $dir"
      local tmp="$dir.tmp.$$"
      rm -rf "$tmp" && mkdir -p "$tmp"
      cp "$pf_root/package.json" "$pf_root/package-lock.json" "$tmp/"
      pf_install "$dir" "npm packages" env -C "$tmp" npm ci --no-audit --no-fund --loglevel=error ||
        { rm -rf "$tmp"; pf_unlock; pf_die "npm ci failed: is the npm registry reachable (npm config get registry)?"; return 1; }
      mv "$tmp" "$dir"
    fi
    pf_unlock
  fi
  if [ "$(readlink "$pf_root/node_modules" 2>/dev/null)" != "$dir/node_modules" ]; then
    rm -rf "$pf_root/node_modules"
    ln -s "$dir/node_modules" "$pf_root/node_modules"
  fi
  "$pf_root/node_modules/.bin/workerd" --version >/dev/null 2>&1 ||
    pf_die "workerd from npm does not run here: $("$pf_root/node_modules/.bin/workerd" --version 2>&1 | tail -1)" || return 1
  if [ -x "$pf_root/node_modules/.bin/wasm-opt" ]; then
    export WASM_OPT="$pf_root/node_modules/.bin/wasm-opt"
  fi
}

# The newest wrangler 4.x the template is also tested with (scripts/test), and the Node.js it
# needs (>= 22.12), both from the npm registry (Node as the `node` package), pinned and cached.
# Not part of pf_setup: only scripts/test calls it. Exports PF_NODE22_BIN (a folder holding
# `node`, to put first on PATH) and PF_WRANGLER_NEWEST (its wrangler executable).
PF_NODE22_VERSION=22.23.3
PF_WRANGLER_NEWEST_VERSION=4.164.0
pf_npm_tool() { # $1 folder, $2 package@version, $3 the executable it must provide
  local dir=$1 spec=$2 bin=$3
  if [ -x "$dir/node_modules/.bin/$bin" ]; then
    pf_say "$spec: cached in $dir (reused, no reinstall)"
    return 0
  fi
  pf_lock "$dir" "$spec" || return 1
  if [ ! -x "$dir/node_modules/.bin/$bin" ]; then
    local tmp="$dir.tmp.$$"
    rm -rf "$tmp" "$dir" && mkdir -p "$tmp" || { pf_unlock; return 1; }
    pf_say "installing $spec into $dir"
    pf_install "$dir" "$spec" npm install --prefix "$tmp" --no-audit --no-fund --no-save --loglevel=error "$spec" ||
      { rm -rf "$tmp"; pf_unlock; pf_die "npm install $spec failed: is the npm registry reachable?"; return 1; }
    mv "$tmp" "$dir"
  fi
  pf_unlock
}
pf_newest_wrangler() {
  local node_dir="$PF_CACHE/node/node-$PF_NODE22_VERSION" wrangler_dir="$PF_CACHE/node/wrangler-$PF_WRANGLER_NEWEST_VERSION"
  pf_npm_tool "$node_dir" "node@$PF_NODE22_VERSION" node || return 1
  export PF_NODE22_BIN="$node_dir/node_modules/.bin"
  [ "$("$PF_NODE22_BIN/node" --version 2>/dev/null)" = "v$PF_NODE22_VERSION" ] ||
    pf_die "$PF_NODE22_BIN/node does not report v$PF_NODE22_VERSION: delete $node_dir to install it again" || return 1
  PATH="$PF_NODE22_BIN:$PATH" pf_npm_tool "$wrangler_dir" "wrangler@$PF_WRANGLER_NEWEST_VERSION" wrangler || return 1
  export PF_WRANGLER_NEWEST="$wrangler_dir/node_modules/.bin/wrangler"
}

pf_setup() {
  pf_check_commands &&
    pf_phase "setup: wasm32 target" pf_wasm_target &&
    pf_phase "setup: wasm-bindgen-cli" pf_wasm_bindgen &&
    pf_phase "setup: npm packages" pf_node_modules
}

pf_setup
