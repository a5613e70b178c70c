#!/usr/bin/env bash
# Every fuzz target of the repository for FUZZTIME each (native Go fuzzing):
#   deploy/scripts/fuzz.sh [FUZZTIME]     (default 30s; GO picks the go command)
#
# Go 1.26's fuzz coordinator can fail a target with a bare "context deadline
# exceeded" at the end of a duration -fuzztime when its workers are starved,
# e.g. while one minimises a new input on a loaded machine (golang/go#75804,
# fixed in Go 1.27). No input is at fault and none is written. Such a result
# passes only if the target's corpus, replayed, passes; every other failure
# fails the run.
set -uo pipefail
go=${GO:-go}
fuzztime=${1:-30s}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for f in $(git grep -l '^func Fuzz' -- '*_test.go'); do
  dir=./$(dirname "$f")
  for t in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$f" | sed 's/func //'); do
    echo "fuzz: $t in $dir for $fuzztime"
    corpus=$dir/testdata/fuzz/$t
    before=$(git status --porcelain --untracked-files=all -- "$corpus")
    $go test -run '^$' -fuzz "^$t\$" -fuzztime "$fuzztime" "$dir" 2>&1 | tee "$log"
    [ "${PIPESTATUS[0]}" -eq 0 ] && continue
    if grep -qx '    context deadline exceeded' "$log" && ! grep -q 'Failing input written' "$log" &&
      [ "$(git status --porcelain --untracked-files=all -- "$corpus")" = "$before" ]; then
      echo "fuzz: $t: the coordinator stopped on its own deadline with no failing input (golang/go#75804); replaying the corpus"
      $go test -count=1 -run "^$t\$" "$dir" || exit 1
      continue
    fi
    exit 1
  done
done
