#!/bin/sh
# build_stamp.sh SOURCE_DIR OUTPUT_FILE: writes the Swift file that tells `bonetriage --version` the git
# commit it was built from (run by Plugins/BuildStamp before every build of the executable).
# SOURCE_DIR must itself be the top of a git checkout: a tarball unpacked inside some other
# repository, or without git at all, gets `nil` and the build goes on. The file is rewritten only when
# its text changes, so an unchanged commit recompiles nothing. "-dirty": uncommitted changes to tracked files.
set -u
src=$1
out=$2
commit=""
top=$(git -C "$src" rev-parse --show-toplevel 2>/dev/null) || top=""
if [ -n "$top" ] && [ "$(cd "$top" && pwd -P)" = "$(cd "$src" && pwd -P)" ]; then
    commit=$(git -C "$src" rev-parse --short=12 HEAD 2>/dev/null) || commit=""
    if [ -n "$commit" ] && ! git -C "$src" diff --quiet HEAD -- 2>/dev/null; then commit="$commit-dirty"; fi
fi
if [ -n "$commit" ]; then value="\"$commit\""; else value="nil"; fi
text="// Generated at build time by tools/build_stamp.sh; not in the repository.
enum BuildStamp {
    static let commit: String? = $value
}"
if [ ! -f "$out" ] || [ "$(cat "$out")" != "$text" ]; then
    mkdir -p "$(dirname "$out")" && printf '%s\n' "$text" > "$out.tmp" && mv "$out.tmp" "$out"
fi
