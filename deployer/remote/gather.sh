# gather DEPLOY_TO [lock=take lock_token=T lock_info=JSON] [history=N] [signing=1] [pull=1]
# Reports this host's deployment state as records. With lock=take it first takes the fleet lock
# (mkdir, atomic) or reports who holds it; nothing else is ever changed.
# shellcheck disable=SC2154  # opt_* are set by parse_options
deploy_to=$1
shift
opt_lock=none opt_lock_token='' opt_lock_info='' opt_history=0 opt_signing='' opt_pull=''
parse_options "$@"
if [ -r /proc/sys/kernel/hostname ]; then
    first_line /proc/sys/kernel/hostname
    emit hostname "$line"
else
    emit hostname "$(uname -n)"
fi
missing_tools
if [ "$opt_signing" = 1 ] && ! command -v ssh-keygen >/dev/null 2>&1; then
    emit missing "ssh-keygen (signed releases)"
fi
if [ "$opt_pull" = 1 ] && ! command -v curl >/dev/null 2>&1 && ! command -v wget >/dev/null 2>&1; then
    emit missing "curl or wget (pull deploys)"
fi
if [ "$opt_lock" = take ] && [ ! -d "$deploy_to/.deployer" ]; then
    mkdir -p "$deploy_to/.deployer" || fail 30 "cannot create $deploy_to/.deployer"
fi
if [ ! -d "$deploy_to" ]; then
    emit deploy_to missing
    # the first deploy creates it: can this user, in the nearest folder that exists?
    parent=$deploy_to
    while [ -n "$parent" ] && [ ! -d "$parent" ]; do
        parent=${parent%/*}
    done
    if [ -w "${parent:-/}" ]; then emit writable yes "${parent:-/}"; else emit writable no "${parent:-/}"; fi
    exit 0
fi
cd -P "$deploy_to" || fail 30 "cannot enter $deploy_to"
if [ "$opt_lock" = take ]; then
    lock_take "$opt_lock_token" "$opt_lock_info"
elif [ -d .deployer/lock ]; then
    emit_lock_held
fi
emit deploy_to present "$PWD"
if [ -w . ]; then emit writable yes "$deploy_to"; else emit writable no "$deploy_to"; fi
if [ -d .deployer/signers ]; then
    signers_state
    emit signers "$signers"
fi
if [ -d releases ]; then
    physical_dir releases
    emit releases_dir "$physical"
fi
if [ -L current ]; then
    link_text current
    emit current link "$link"
    if [ -d current/ ]; then
        physical_dir current/
        emit current_resolved "$physical"
        if [ -f current/previousVersion ]; then
            first_line current/previousVersion
            if [ "$line_ok" = 1 ]; then
                emit previous_version "$line"
            else
                emit damaged previous_version current
            fi
        else
            emit previous_version_missing
        fi
    else
        emit current_dangling
    fi
elif [ -e current ]; then
    emit current notlink
else
    emit current missing
fi
for dir in releases/*/; do
    [ -d "$dir" ] || continue
    id=${dir#releases/}
    id=${id%/}
    # A state file that is empty or torn (no complete line: a power cut) is reported as damaged
    # and never read as data.
    read_meta "$id"
    [ "$meta_ok" = 1 ] || emit damaged meta "$id"
    emit release "$id" "$meta"
    if [ -f "releases/$id/previousVersion" ]; then
        first_line "releases/$id/previousVersion"
        if [ "$line_ok" = 1 ]; then
            emit release_previous "$id" "$line"
        else
            emit damaged previous_version "$id"
        fi
    fi
    if [ -f ".deployer/bad/$id" ]; then
        first_line ".deployer/bad/$id"
        [ "$line_ok" = 1 ] || emit damaged bad "$id"
        emit bad "$id" "$line"  # a damaged mark still counts: the release was marked bad
    fi
done
if [ -f .deployer/pin ]; then
    first_line .deployer/pin
    if [ "$line_ok" = 1 ]; then
        emit pin "$line"
    else
        emit damaged pin pin
    fi
fi
if [ -f .deployer/schema ]; then
    first_line .deployer/schema
    if [ "$line_ok" = 1 ]; then
        emit schema "$line"
    else
        emit damaged schema schema
    fi
fi
if [ -f .deployer/history.jsonl ]; then
    # The history is bounded (rotated at 1 MiB, each rotation starting with a switch): its tail
    # holds the last switch; lines are cut at 16 KiB (bytes: LC_ALL=C) so no line can flood this
    # answer. The pattern accepts any JSON spacing; tests/unit/test_scripts.py ties it to
    # phases.history_line.
    last=$(tail -n 2000 .deployer/history.jsonl |
        awk '{ $0 = substr($0, 1, 16384) } /"op"[ ]*:[ ]*"(deploy|rollback|revert)"/ { last = $0 } END { print last }')
    if [ -n "$last" ]; then
        emit last_op "$last"
    fi
    if [ "$opt_history" -gt 0 ] 2>/dev/null; then
        tail -n "$opt_history" .deployer/history.jsonl | cut -b 1-16384 | while IFS= read -r line; do
            emit history "$line"
        done
    fi
fi
for cached in .deployer/artifacts/*.tar.gz; do
    [ -f "$cached" ] || continue
    name=${cached#.deployer/artifacts/}
    emit cached "${name%.tar.gz}"
done
if [ -d .deployer/scripts ]; then
    # the deployer's copies of its scripts, each with its sum (one process for all, read by this
    # shell: no subshell): the controller counts on a copy only when the sum is the script's own
    if [ -n "${deployer_sums+set}" ]; then
        kept_sums=$deployer_sums  # summed by this session's start, which checked this copy by them
    elif command -v cksum >/dev/null 2>&1; then
        kept_sums=$(cd ./.deployer/scripts && exec cksum ./*.sh 2>/dev/null)
    else
        kept_sums=$(cd ./.deployer/scripts && exec sha256sum ./*.sh 2>/dev/null)
    fi
    kept_rest=$kept_sums
    while [ -n "$kept_rest" ]; do
        kept_line=${kept_rest%%"$NL"*}
        case $kept_rest in
            *"$NL"*) kept_rest=${kept_rest#*"$NL"} ;;
            *) kept_rest= ;;
        esac
        set -f
        # shellcheck disable=SC2086  # split into the tool's fields (sum, size, file; or sum, file), never globbed
        set -- $kept_line
        set +f
        case $#:${3:-${2:-}} in
            3:./*.sh) emit kept "${3#./}" "$1 $2" ;;
            2:./*.sh) emit kept "${2#./}" "$1" ;;
        esac
    done
fi
# The free space is for the readouts (`deployer status`); an operation's gather (it takes the lock)
# skips it, a process fewer: stage reports the space left when an artifact cannot be stored there.
if [ "$opt_lock" != take ]; then
    free_kb
    emit free_kb "$free"
fi
