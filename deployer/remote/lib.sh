# shellcheck shell=sh
# Shared helpers, prepended to every remote script by deployer/scripts.py.
#
# Output protocol: machine-readable records are lines "@<key><TAB><field>..."; anything else
# is diagnostics for humans. Exit codes (mirrored in deployer/scripts.py):
#   0 ok | 10 usage | 20 refused (precondition) | 21 current is not a symlink
#   22 current changed since it was read | 30 I/O failure (disk full, permission)
#   31 artifact digest mismatch | 40 validation failed | 50 verification after switch failed
set -u
LC_ALL=C
export LC_ALL
umask 022

emit() {
    # emit KEY FIELD...: one tab-separated record line.
    key=$1
    shift
    printf '@%s' "$key"
    for field in "$@"; do
        printf '\t%s' "$field"
    done
    printf '\n'
}

fail() {
    # fail CODE MESSAGE: report an error record and stop with CODE.
    emit error "$1" "$2"
    printf '%s\n' "$2" >&2
    exit "$1"
}

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d ' ' -f 1
    elif command -v shasum >/dev/null 2>&1; then
        shasum -a 256 "$1" | cut -d ' ' -f 1
    else
        openssl dgst -sha256 -r "$1" | cut -d ' ' -f 1
    fi
}

write_file() {
    # write_file PATH CONTENT: replace PATH atomically (temp file + rename in the same folder).
    wf_tmp="$1.tmp.$$"
    if printf '%s\n' "$2" > "$wf_tmp" && mv -f "$wf_tmp" "$1"; then
        return 0
    fi
    rm -f "$wf_tmp"
    return 1
}

release_status() {
    # release_status ID: prints "<status> <digest>" from the release's meta file, "unmanaged -" without one.
    if [ -f ".deployer/meta/$1" ]; then
        head -n 1 ".deployer/meta/$1"
    else
        printf 'unmanaged -\n'
    fi
}
