#!/usr/bin/env bash
# Installs everything Outpost needs to build, test and demo, idempotently.
# Downloads are cached under .cache/ (git-ignored) and pinned by version and
# sha256; a second run downloads nothing.
#
#   deploy/scripts/deps.sh [apt] [ort] [kafka] [go] [py] [pybench] [ekuiper]   (default: all but pybench and ekuiper)
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cache=${OUTPOST_CACHE:-$root/.cache}
mkdir -p "$cache"

# --- pins -------------------------------------------------------------------
ORT_VERSION=1.24.3
ORT_TGZ_SHA256=aa1bb5fa261ea68de05dd53efbba210cd7adf2d2850f4c3a201054c74cc78040
# eKuiper, the peer of `make bench-peers`: this tag, checked against its commit.
EKUIPER_VERSION=v2.4.0
EKUIPER_COMMIT=36c985bfcb36dee4f089d391e38360de72e4ab3c
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$root/deploy/kafka/pom.xml")
APT_PACKAGES=(
  mosquitto
  gcc-aarch64-linux-gnu libc6-dev-arm64-cross
  gcc-arm-linux-gnueabihf libc6-dev-armhf-cross
  qemu-user-static
  e2fsprogs
  chromium
  kcat
)

log() { printf 'deps: %s\n' "$*" >&2; }

sha_ok() { # file sha256
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

deps_apt() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && { log "apt packages present"; return; }
  log "installing apt packages: ${missing[*]}"
  local sudo=()
  [ "$(id -u)" -ne 0 ] && sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

deps_ort() {
  local dir=$cache/onnxruntime/$ORT_VERSION
  if [ -f "$dir/linux-x64/libonnxruntime.so.1" ] && [ -f "$dir/linux-arm64/libonnxruntime.so.1" ]; then
    log "onnxruntime $ORT_VERSION present"; return
  fi
  local tgz=$cache/npm/onnxruntime-node-$ORT_VERSION.tgz
  if ! sha_ok "$tgz" "$ORT_TGZ_SHA256"; then
    log "fetching onnxruntime-node@$ORT_VERSION with npm pack"
    mkdir -p "$cache/npm"
    rm -f "$tgz"
    # npm pack only downloads the tarball: no install script runs.
    (cd "$cache/npm" && npm pack --silent --cache "$cache/npm/cache" "onnxruntime-node@$ORT_VERSION" >/dev/null)
    sha_ok "$tgz" "$ORT_TGZ_SHA256" || { log "checksum mismatch for $tgz"; rm -f "$tgz"; exit 1; }
  fi
  local tmp; tmp=$(mktemp -d)
  tar -xzf "$tgz" -C "$tmp" package/bin/napi-v6/linux/x64/libonnxruntime.so.1 package/bin/napi-v6/linux/arm64/libonnxruntime.so.1
  mkdir -p "$dir/linux-x64" "$dir/linux-arm64"
  mv "$tmp/package/bin/napi-v6/linux/x64/libonnxruntime.so.1" "$dir/linux-x64/"
  mv "$tmp/package/bin/napi-v6/linux/arm64/libonnxruntime.so.1" "$dir/linux-arm64/"
  rm -rf "$tmp"
  log "onnxruntime $ORT_VERSION in $dir"
}

deps_kafka() {
  local dir=$cache/kafka/$KAFKA_VERSION
  local sums=$root/deploy/kafka/libs.sha256
  if [ -f "$dir/.verified" ] && cmp -s "$dir/.verified" "$sums"; then
    log "kafka $KAFKA_VERSION present"; return
  fi
  log "resolving kafka $KAFKA_VERSION from Maven Central"
  rm -rf "$dir/libs"
  mkdir -p "$dir"
  mvn -q -B -Dstyle.color=never -f "$root/deploy/kafka/pom.xml" -Dmaven.repo.local="$cache/m2" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$dir/libs"
  (cd "$dir/libs" && sha256sum -c --quiet "$sums") || { log "kafka jar checksums differ from $sums"; exit 1; }
  # Every jar on the classpath must be pinned, not just the listed ones.
  local extra
  extra=$(cd "$dir/libs" && ls *.jar | grep -vxFf <(awk '{print $2}' "$sums") || true)
  [ -z "$extra" ] || { log "unpinned jars in kafka classpath: $extra"; exit 1; }
  cp "$sums" "$dir/.verified"
  log "kafka $KAFKA_VERSION in $dir"
}

# A pinned virtualenv: venv NAME REQUIREMENTS... installs every file's
# packages with --no-deps into .cache/NAME and runs `pip check`. The venv
# records the requirements it was built from; a changed pin rebuilds it,
# an unchanged one downloads nothing.
venv() {
  local venv=$cache/$1; shift
  local want
  want=$(cat "$@")
  if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.requirements" 2>/dev/null)" = "$want" ]; then
    log "python venv $venv present"; return
  fi
  command -v python3 >/dev/null || { log "python3 is needed for $venv"; exit 1; }
  log "creating $venv from $*"
  rm -rf "$venv"
  python3 -m venv "$venv"
  local r
  for r in "$@"; do "$venv/bin/pip" install -q --no-deps -r "$r"; done
  "$venv/bin/pip" check >/dev/null || { "$venv/bin/pip" check; log "pinned python packages are inconsistent"; exit 1; }
  printf '%s' "$want" >"$venv/.requirements"
  log "python venv in $venv"
}

# The conformance suite's exporters (scikit-learn, skl2onnx, onnx), every
# package pinned in test/conformance/requirements.txt.
deps_py() {
  venv venv-conformance "$root/test/conformance/requirements.txt"
}

# The same and onnxruntime.quantization, the peer of the side-by-side
# quantization benchmark (make bench only).
deps_pybench() {
  venv venv-bench "$root/test/conformance/requirements.txt" "$root/quant/testdata/requirements-peer.txt"
}

# eKuiper for the side-by-side benchmark (make bench-peers only): kuiperd
# built with -tags core into .cache/ekuiper/VERSION, with its etc/. The
# source is EKUIPER_SRC (a local checkout) when set, else a shallow clone of
# the pinned tag into .cache/ekuiper/VERSION/src. Nothing of it is committed
# or vendored. eKuiper's go.mod requires sqlflow.org/gohive for its SQL
# extension, which -tags core does not build, and proxy.golang.org refuses
# that module (403): the build replaces it with an empty module through a
# copy of go.mod (-modfile), leaving the checkout untouched.
deps_ekuiper() {
  local dir=$cache/ekuiper/$EKUIPER_VERSION
  local src=${EKUIPER_SRC:-$dir/src}
  if [ -z "${EKUIPER_SRC:-}" ] && [ ! -d "$src/.git" ]; then
    log "cloning lf-edge/ekuiper $EKUIPER_VERSION into $src"
    rm -rf "$src"
    git clone -q --depth 1 --branch "$EKUIPER_VERSION" https://github.com/lf-edge/ekuiper "$src"
  fi
  local commit
  commit=$(git -C "$src" rev-parse HEAD)
  if [ "$commit" != "$EKUIPER_COMMIT" ]; then
    [ -n "${EKUIPER_SRC:-}" ] || { log "$src is at $commit, not $EKUIPER_VERSION ($EKUIPER_COMMIT)"; exit 1; }
    log "warning: EKUIPER_SRC is at $commit, not the pinned $EKUIPER_VERSION ($EKUIPER_COMMIT)"
  fi
  if [ -x "$dir/kuiperd" ] && [ -d "$dir/etc" ] && [ "$(cat "$dir/.built" 2>/dev/null)" = "$commit" ]; then
    log "ekuiper $EKUIPER_VERSION present"; return
  fi
  log "building ekuiper $EKUIPER_VERSION ($commit) with -tags core"
  mkdir -p "$dir/mod/gohive"
  printf 'module sqlflow.org/gohive\n\ngo 1.21\n' >"$dir/mod/gohive/go.mod"
  cp "$src/go.mod" "$dir/mod/go.mod"
  cp "$src/go.sum" "$dir/mod/go.sum"
  go mod edit -modfile="$dir/mod/go.mod" -replace sqlflow.org/gohive="$dir/mod/gohive"
  (cd "$src" && GOWORK=off CGO_ENABLED=1 go build -modfile="$dir/mod/go.mod" -tags core -trimpath \
    -ldflags "-s -w -X github.com/lf-edge/ekuiper/v2/cmd.Version=${EKUIPER_VERSION#v} -X github.com/lf-edge/ekuiper/v2/cmd.LoadFileType=relative" \
    -o "$dir/kuiperd" ./cmd/kuiperd)
  rm -rf "$dir/etc"
  cp -r "$src/etc" "$dir/etc"
  printf '%s' "$commit" >"$dir/.built"
  log "ekuiper $EKUIPER_VERSION in $dir"
}

deps_go() {
  (cd "$root" && go mod download)
  log "go modules present"
}

steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(apt ort kafka go py)
for s in "${steps[@]}"; do "deps_$s"; done
