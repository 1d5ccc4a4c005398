#!/bin/sh
# Checks a systemd unit with `systemd-analyze verify` and fails on any warning.
#
#   tools/check_systemd_unit.sh [UNIT]     (default: systemd/bonetriage.service in this checkout)
#
# Exit status: 0 the unit is clean; 1 verify failed or printed anything; 77 systemd-analyze is not
# installed (nothing was checked).
#
# Why not just `systemd-analyze verify UNIT`:
# - verify exits 0 even when it warns (unknown keys, values it cannot parse and ignores, bad
#   sections): those warnings are the mistakes worth catching, so any output at all is a failure
#   here (a clean unit prints nothing).
# - verify fails when ExecStart's program does not exist ("Command /usr/local/bin/bonetriage is not
#   executable"), and this check must run before `make install`. So it verifies a copy, in a
#   temporary folder, in which only /usr/local/bin/bonetriage is replaced by a stub executable; every
#   other line is checked as written. (`--root=DIR` is no way out: it needs a whole unit tree,
#   sysinit.target and the rest, under DIR.)
# - --man=no: no man pages are required for Documentation= links; --generators=no: nothing from
#   this machine's generators is involved.
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
unit=${1:-$here/systemd/bonetriage.service}
installed_binary=/usr/local/bin/bonetriage

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "skipped: systemd-analyze is not installed (Debian package systemd)" >&2
    exit 77
fi
if [ ! -f "$unit" ]; then
    echo "FAIL: $unit does not exist" >&2
    exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/check-systemd-unit.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 1' INT TERM

name=$(basename "$unit")
stub="$work/bin/bonetriage"
mkdir -p "$work/bin" "$work/unit"
printf '#!/bin/sh\nexit 0\n' > "$stub"
chmod 0755 "$stub"
if ! grep -q "^ExecStart=$installed_binary " "$unit"; then
    echo "FAIL: $unit: ExecStart= does not run $installed_binary (where make install puts it)" >&2
    exit 1
fi
sed "s|$installed_binary|$stub|g" "$unit" > "$work/unit/$name"

status=0
output=$(systemd-analyze verify --man=no --generators=no "$work/unit/$name" 2>&1) || status=$?
# Show paths as the real unit's, not the temporary copy's.
output=$(printf '%s' "$output" | sed "s|$work/unit/$name|$unit|g; s|$stub|$installed_binary|g")

if [ "$status" -ne 0 ] || [ -n "$output" ]; then
    echo "FAIL: systemd-analyze verify $unit (exit status $status):" >&2
    printf '%s\n' "$output" >&2
    exit 1
fi
echo "ok: systemd-analyze verify $unit: no warnings ($(systemd-analyze --version | head -n 1))"
