# shellcheck shell=sh disable=SC2317,SC2329  # helpers are called by the script appended below
# Shared helpers, prepended to every remote script by deployer/scripts.py.
#
# Calling convention: SCRIPT DEPLOY_TO NAME=VALUE...; each NAME=VALUE sets $opt_NAME (values are
# never evaluated). Output protocol: machine-readable records are lines "@<key><TAB><field>...";
# anything else is diagnostics for humans. Exit codes (mirrored in deployer/scripts.py):
#   0 ok | 10 usage | 20 refused (precondition) | 21 current is not a symlink
#   22 current changed since it was read | 30 I/O failure (disk full, permission)
#   31 artifact digest mismatch | 32 signature refused by this host | 33 artifact could not be
#   fetched (pull deploys) | 35 fenced: this run no longer holds the lock here (or a later session
#   took over); nothing more was changed | 40 validation failed | 50 verification after switch failed
#   60 before_switch hook failed (not switched) | 61 after_switch hook failed (switched)
#   62 health check failed (switched) | 63 after_rollback hook failed (switched)
#   64 migration command failed
set -u
LC_ALL=C
export LC_ALL
# Variables of the deploy user's environment (a shell's start-up file, sshd's SetEnv) that change
# what the tools these scripts call do: CDPATH makes `cd` print the folder it entered, into whatever
# captures the output (`$(cd releases && pwd -P)` would hold it twice); GNU tar takes options from
# TAR_OPTIONS (--to-stdout unpacked every release as an empty folder) and gzip from GZIP.
unset CDPATH TAR_OPTIONS GZIP
umask 022

# The session's own stderr, kept on fd 9 for the watchdog's heartbeat (run_bounded): a write there
# fails once the session is gone (the controller closed its channel, died or lost the host), even
# while the step's own output goes to a log. Nothing the script starts inherits it.
exec 9>&2 2>/dev/null || exec 9>/dev/null

# A newline and a tab, for the field escaping in emit (literal, so no process is started for them).
NL='
'
TAB='	'

emit() {
    # emit NAME FIELD...: one record line on stdout (the protocol of deployer/protocol.py). Each
    # field is escaped (\ -> \\, tab -> \t, newline -> \n) so no text from this host can end a
    # field or a record; the common case (nothing to escape) starts no process.
    printf '@%s' "$1"
    shift
    for field in "$@"; do
        case $field in
            *\\* | *"$TAB"* | *"$NL"*)
                field=$(printf '%s.' "$field" | sed -e ':a' -e '$!N' -e '$!ba' \
                    -e 's/\\/\\\\/g' -e "s/$TAB/\\\\t/g" -e 's/\n/\\n/g')
                field=${field%.} ;;
        esac
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

parse_options() {
    # parse_options NAME=VALUE...: set opt_NAME for each; NAME is checked, VALUE is only assigned.
    for option in "$@"; do
        name=${option%%=*}
        case $name in
            '' | *[!a-z_]*) fail 10 "bad option name: $name" ;;
        esac
        [ "$name" != "$option" ] || fail 10 "option $name has no value"
        # shellcheck disable=SC2034  # value is read through the eval'd name
        value=${option#*=}
        eval "opt_$name=\$value"
    done
}

read_env() {
    # With env=1, stdin starts with "DEPLOYER-ENV <bytes>" and that many bytes of "NAME ESCAPED" lines:
    # variables for validate, hooks, health checks and migrations, kept off the command line
    # (which any user of the host can read in ps).
    [ "${opt_env:-0}" = 1 ] || return 0
    IFS=' ' read -r env_magic env_size || fail 10 "no environment block on stdin"
    [ "$env_magic" = DEPLOYER-ENV ] || fail 10 "bad environment block on stdin"
    env_block=$(dd bs=1 count="$env_size" 2>/dev/null)
    env_ifs=$IFS
    IFS='
'
    set -f
    env_pairs=
    for env_line in $env_block; do
        env_name=${env_line%% *}
        case $env_name in
            '' | *[!A-Za-z0-9_]*) fail 10 "bad variable name in the environment block" ;;
        esac
        # The value is octal-escaped (see octal_escaped in deployer/scripts.py): printf %b, a builtin,
        # restores it byte for byte; the "." keeps trailing newlines from $(...).
        env_value=$(printf '%b.' "${env_line#* }")
        env_value=${env_value%.}
        if [ "$env_name" = DEPLOYER_SUDO_PASSWORD ]; then
            sudo_password=$env_value  # for sudo -S only: never exported, never in a file
            continue
        fi
        if [ "$env_name" = DEPLOYER_ARTIFACT_URL ]; then
            artifact_url=$env_value  # for fetch_artifact only: never exported, never on a command line
            continue
        fi
        export "$env_name=$env_value"
        env_pairs="$env_pairs$env_line
"
    done
    set +f
    IFS=$env_ifs
    unset env_block env_line env_value
}


link_text() {
    # link_text PATH: the text of symbolic link PATH in $link (readlink where the host has one, else
    # ls -l); status 1 and "" when it cannot be read. A variable, not output: `$(link_text ...)`
    # would start a subshell beside readlink.
    link=
    if command -v readlink >/dev/null 2>&1; then
        link=$(readlink "$1")
        return
    fi
    lt_long=$(ls -ld "$1") || return 1
    case $lt_long in
        l*" -> "*) link=${lt_long#* -> } ;;
        *) return 1 ;;
    esac
}

# shellcheck disable=SC2034  # physical is read by the scripts (gather, switch)
physical_dir() {
    # physical_dir DIR: DIR's path with every link resolved in $physical ("" when DIR cannot be
    # entered), by the shell's own cd, which then returns: no process (`$(cd DIR && pwd -P)` is a
    # subshell). The scripts enter DEPLOY_TO with `cd -P`, so $PWD is physical (as `pwd -P` prints it)
    # and so is the way back.
    pd_back=$PWD
    physical=
    if cd -P "$1" 2>/dev/null; then
        physical=$PWD
        cd -P "$pd_back" || fail 30 "cannot return to $pd_back"
    fi
}

pause() {
    # pause SECONDS: sleep, rounding a fraction up to whole seconds where sleep takes only those (POSIX).
    sleep "$1" 2>/dev/null || sleep "$((${1%%.*} + 1))"
}

# What every host must have (README, "Host requirements"); gather reports the missing ones.
REQUIRED_TOOLS='awk cat chmod cp cut dd df find grep gzip head ln ls mkdir mv od ps rm sed sleep sync tail tar tee tr wc'

missing_tools() {
    # missing_tools: emit @missing TOOL for each required tool the host lacks (command -v: no process).
    for tool in $REQUIRED_TOOLS; do
        command -v "$tool" >/dev/null 2>&1 || emit missing "$tool"
    done
    for tool in sha256sum shasum sha256 openssl ''; do
        [ -n "$tool" ] || emit missing "sha256sum (or shasum, sha256, openssl)"
        [ -z "$tool" ] || ! command -v "$tool" >/dev/null 2>&1 || break
    done
}

sha256_of() {
    # sha256_of FILE: the hex digest of FILE in $sha256 (GNU/BusyBox sha256sum, macOS and Perl
    # shasum, BSD sha256, OpenSSL: the first one the host has); "" when it cannot be read. One
    # process: the tool's output cut to its first field by the shell.
    if command -v sha256sum >/dev/null 2>&1; then
        sha256=$(sha256sum < "$1")
    elif command -v shasum >/dev/null 2>&1; then
        sha256=$(shasum -a 256 < "$1")
    elif command -v sha256 >/dev/null 2>&1; then
        sha256=$(sha256 < "$1")
    else
        sha256=$(openssl dgst -sha256 -r < "$1")
    fi
    sha256=${sha256%%[ *]*}
}

# shellcheck disable=SC2034  # line_ok is read by the scripts that judge damage (gather)
first_line() {
    # first_line FILE: its first line in $line, with the shell's own read (no process per file).
    # line_ok=1 when that line is complete (ends with a newline, as write_file always writes);
    # line_ok=0 for an empty or torn file: damaged data (a power cut before it reached the disk).
    line=
    line_ok=0
    if IFS= read -r line < "$1"; then
        line_ok=1
    fi
}

# The last rename or removal of a session (a state file, the pin's removal, the lock's release) is
# flushed before the session ends, so whatever it confirmed survives a power cut: settle_writes, at exit.
unflushed=
trap 'settle_writes' EXIT

settle_writes() {
    [ -n "$unflushed" ] || return 0
    sw_path=$unflushed
    unflushed=
    [ -e "$sw_path" ] || sw_path=.
    flush "$sw_path" 2>/dev/null || emit warning "the last change could not be flushed to disk"
}

flush() {
    # flush PATH: what was written on PATH's file system reaches stable storage before going on
    # (sync -f, the file system only, where the host's sync has it; else a whole sync).
    if [ -z "${flush_with:-}" ]; then
        command -v sync >/dev/null 2>&1 || fail 30 "this host has no sync command: nothing can be made durable"
        flush_with=sync
        if sync -f "$1" 2>/dev/null; then  # the probe is the first flush itself
            flush_with=syncfs
            return 0
        fi
    fi
    if [ "$flush_with" = syncfs ]; then
        sync -f "$1"
    else
        sync
    fi
}

write_file() {
    # write_file PATH CONTENT: replace PATH durably and atomically with CONTENT and a newline: a temp
    # file in the same folder, flushed, then renamed (a crash leaves the old or the new content,
    # never an empty file).
    replace_file '%s\n' "$1" "$2"
}

write_bytes() {
    # write_bytes PATH ESCAPED: as write_file, with the exact bytes of ESCAPED (octal-escaped, as
    # deployer/scripts.py writes it; the builtin printf %b restores it, NUL bytes included).
    replace_file '%b' "$1" "$2"
}

exclusive_write() {
    # exclusive_write PATH FORMAT TEXT: printf FORMAT TEXT into PATH, created anew (set -C: the
    # shell's O_EXCL, so a link planted at PATH cannot redirect the write); fails if PATH exists.
    # noclobber is set around the builtin printf in this shell (a subshell costs a process) and
    # cleared whatever printf did; printf is not a special built-in, so a failed redirection only
    # fails it.
    set -C
    # shellcheck disable=SC2059  # FORMAT is one of the callers' fixed formats
    printf "$2" "$3" > "$1"
    ew_status=$?
    set +C
    return "$ew_status"
}

replace_file() {
    # replace_file FORMAT PATH TEXT: printf FORMAT TEXT into a temp file, flushed, renamed over PATH.
    wf_tmp="$2.tmp.$$"
    # Never through a link: whatever is at the temp name goes, and the file is created anew
    # (set -C: the shell's O_EXCL), so a link planted there cannot redirect the write. Tested
    # first: nothing is there in the usual case, and rm is a process (one planted after the test
    # makes the O_EXCL write fail).
    if [ -e "$wf_tmp" ] || [ -h "$wf_tmp" ]; then rm -f "$wf_tmp"; fi
    # shellcheck disable=SC2059  # FORMAT is one of the two fixed formats above
    if [ -n "$records_batched" ]; then
        if exclusive_write "$wf_tmp" "$1" "$3"; then
            records_queue="$records_queue$2$NL"  # flushed and renamed by records_commit
            return 0
        fi
    elif exclusive_write "$wf_tmp" "$1" "$3" && flush "$wf_tmp" && mv -f "$wf_tmp" "$2"; then
        unflushed=$2
        return 0
    fi
    rm -f "$wf_tmp"
    return 1
}

# --- a switch's records, made durable together ---
# Between records_begin and records_commit, write_file writes each record whole under its temporary
# name and the history's line is appended, neither flushed; records_commit then flushes once for all
# of them (they are all in .deployer: one file system) and renames each record into place. Each
# record's confirmation (recorded_as) waits for its rename: nothing is reported that a failed flush
# or rename undid. A rollback's history, pin and bad mark: one flush instead of three.
records_batched=
records_queue=
records_history=

records_begin() {
    records_batched=1
    records_queue=
    records_history=
}

recorded_as() {
    # recorded_as NAME FIELD...: the record just written is confirmed by this protocol record (at
    # once, or once records_commit renamed it into place).
    if [ -n "$records_batched" ]; then
        records_queue="${records_queue%"$NL"} $*$NL"
    else
        emit "$@"
    fi
}

records_commit() {
    records_batched=
    [ -n "$records_queue$records_history" ] || return 0
    rc_flushed=1
    flush .deployer || rc_flushed=
    if [ -n "$records_history" ]; then
        if [ -n "$rc_flushed" ]; then emit history_written; else emit warning "history not written (disk full?)"; fi
    fi
    while [ -n "$records_queue" ]; do
        rc_line=${records_queue%%"$NL"*}
        records_queue=${records_queue#*"$NL"}
        set -f
        # shellcheck disable=SC2086  # the path and its confirmation: words without blanks
        set -- $rc_line
        set +f
        rc_path=$1
        shift
        if [ -n "$rc_flushed" ] && mv -f "$rc_path.tmp.$$" "$rc_path"; then
            unflushed=$rc_path
            [ "$#" = 0 ] || emit "$@"
        else
            rm -f "$rc_path.tmp.$$"
            emit warning "$rc_path not recorded (disk full?)"
        fi
    done
}

# shellcheck disable=SC2034  # signers is read by gather and stage
signers_state() {
    # signers_state: "ALLOWED REVOKED POLICY" in $signers, the sha256 of each file of this host's
    # own copy of who may sign releases (.deployer/signers/), "-" for one that is not there.
    ss_state=
    for ss_file in allowed_signers revoked policy; do
        if [ -f ".deployer/signers/$ss_file" ]; then
            sha256_of ".deployer/signers/$ss_file"
            ss_state="$ss_state $sha256"
        else
            ss_state="$ss_state -"
        fi
    done
    signers=${ss_state# }
}

place_signers() {
    # place_signers ALLOWED REVOKED POLICY (each octal-escaped; REVOKED empty for none): this host's
    # own copy of who may sign, written file by file durably; the policy ("require=yes|no
    # namespace=NS") last, so a copy without one is one that was cut short.
    [ -d .deployer/signers ] || mkdir -p .deployer/signers || return 1
    write_bytes .deployer/signers/allowed_signers "$1" || return 1
    if [ -n "$2" ]; then
        write_bytes .deployer/signers/revoked "$2" || return 1
    else
        rm -f .deployer/signers/revoked || return 1
    fi
    write_bytes .deployer/signers/policy "$3" && flush .deployer/signers
}

# shellcheck disable=SC2034  # signer and signer_fingerprint are read by stage
verify_signature() {
    # verify_signature FILE SIGNATURE PRINCIPAL NAMESPACE: FILE's signature checked by this host's
    # own ssh-keygen against its own copy of the allowed signers (and revoked keys); who signed in
    # $signer and $signer_fingerprint, else $refusal says why and it returns 1.
    signer='' signer_fingerprint='' refusal=''
    if ! command -v ssh-keygen >/dev/null 2>&1; then
        refusal="this host has no ssh-keygen to check the signature with"
        return 1
    fi
    vs_principal=$3
    if [ -z "$vs_principal" ]; then
        vs_principal=$(ssh-keygen -Y find-principals -s "$2" -f .deployer/signers/allowed_signers 2>/dev/null |
            sed -n 1p)
    fi
    case $vs_principal in
        '' | *[!A-Za-z0-9@._+=-]*)
            refusal="no signer in this host's allowed signers made this signature"
            return 1 ;;
    esac
    set -- "$1" -Y verify -f .deployer/signers/allowed_signers -I "$vs_principal" -n "$4" -s "$2"
    [ ! -f .deployer/signers/revoked ] || set -- "$@" -r .deployer/signers/revoked
    vs_file=$1
    shift
    vs_said=$(ssh-keygen "$@" < "$vs_file" 2>&1)
    vs_status=$?
    vs_good=$(printf '%s\n' "$vs_said" |
        sed -n 's/^Good "[^"]*" signature for [^ ]* with [A-Z0-9-]* key \(SHA256:[A-Za-z0-9+/]*\)$/\1/p' | sed -n 1p)
    if [ "$vs_status" != 0 ] || [ -z "$vs_good" ]; then
        refusal="ssh-keygen here refused it: $(printf '%s\n' "$vs_said" | grep -v '^$' | tail -n 1)"
        return 1
    fi
    signer=$vs_principal
    signer_fingerprint=$vs_good
}

fetch_artifact() {
    # fetch_artifact FILE SECONDS LOG: the artifact at $artifact_url into FILE with curl or wget
    # (the first this host has), each attempt bounded by SECONDS, a broken transfer resumed (up to
    # 3 attempts; an HTTP error such as 404 is not retried). curl reads the URL from its config on
    # stdin, so it is on no command line for other users to read in ps (a presigned URL is a
    # credential); wget takes it as an argument (BusyBox wget reads it from nowhere else).
    if command -v curl >/dev/null 2>&1; then
        fa_tool=curl
    elif command -v wget >/dev/null 2>&1; then
        fa_tool=wget
    else
        fetch_reason="this host has neither curl nor wget to fetch the artifact with"
        return 1
    fi
    fa_url=$artifact_url
    case $fa_url in
        *\\* | *\"*) fa_url=$(printf '%s\n' "$fa_url" | sed -e 's/[\\"]/\\&/g') ;;
    esac
    : > "$3"
    fa_try=1
    while :; do
        if [ "$fa_tool" = curl ]; then
            printf 'url = "%s"\n' "$fa_url" |
                run_bounded "$2" curl -q -f -s -S -L --speed-limit 1024 --speed-time 30 -C - -o "$1" -K - >> "$3" 2>&1
        else
            run_bounded "$2" wget -q -c -O "$1" "$artifact_url" >> "$3" 2>&1 < /dev/null
        fi
        fa_code=$?
        [ "$fa_code" != 0 ] || return 0
        # BusyBox wget exits 1 for everything: its message tells an HTTP error apart
        ! grep -q 'server returned error' "$3" || fa_code=8
        case $fa_tool:$fa_code in
            curl:22 | wget:8) fetch_reason="the server answered with an error"; break ;;  # 404, 403: final
            curl:33) rm -f "$1" ;;  # the server cannot resume: start again
            *:124) fetch_reason="no complete answer within $2 s" ;;
            *) fetch_reason="the transfer broke ($fa_tool exit $fa_code)" ;;
        esac
        [ "$fa_try" -lt 3 ] || break
        fa_try=$((fa_try + 1))
        printf 'attempt %s\n' "$fa_try" >> "$3"
        sleep 1
    done
    fetch_reason="$fetch_reason after $fa_try attempt(s) with $fa_tool: $(grep -v '^attempt' "$3" | tail -n 2 | tr '\n' ' ')"
    return 1
}

# shellcheck disable=SC2034  # meta_ok is read by gather
read_meta() {
    # read_meta ID: "<status> <digest> <staged at> <schema> <min_schema>" of release ID in $meta
    # ("unmanaged -" without a meta file, "damaged -" for an empty or torn one); $meta_ok=0 when
    # damaged. One read by the shell, no process: gather calls it for every release.
    meta="unmanaged -"
    meta_ok=1
    [ -f ".deployer/meta/$1" ] || return 0
    first_line ".deployer/meta/$1"
    meta=$line
    if [ "$line_ok" != 1 ]; then
        meta="damaged -"
        meta_ok=0
    fi
}

# shellcheck disable=SC2034  # free is read by gather and stage
free_kb() {
    # free_kb: in $free, KiB available on the current folder's file system (POSIX df -P: a header line, then
    # device, size, used, available, ...).
    # shellcheck disable=SC2046  # the fields of df's output become positional parameters
    set -- $(df -Pk . 2>/dev/null)
    free=${11:-}
}

HISTORY_MAX_BYTES=1048576

record_history() {
    # record_history JSON [rotate]: append one line to the host's history (never fatal: the switch
    # already happened). With "rotate" (switches only: @history_written confirms it), a history over
    # HISTORY_MAX_BYTES first becomes history.1.jsonl, so it stays bounded and the new file starts
    # with this switch.
    [ -d .deployer ] || mkdir -p .deployer
    if [ "${2:-}" = rotate ] && [ -f .deployer/history.jsonl ]; then
        rh_size=$(wc -c < .deployer/history.jsonl)
        if [ "${rh_size:-0}" -gt "$HISTORY_MAX_BYTES" ] 2>/dev/null; then
            mv -f .deployer/history.jsonl .deployer/history.1.jsonl || emit warning "history not rotated"
        fi
    fi
    # between records_begin and records_commit, the line is flushed and confirmed by records_commit
    if printf '%s\n' "$1" >> .deployer/history.jsonl && { [ -n "$records_batched" ] || flush .deployer/history.jsonl; }; then
        if [ "${2:-}" = rotate ] && [ -n "$records_batched" ]; then
            records_history=1
        elif [ "${2:-}" = rotate ]; then
            emit history_written
        fi
    else
        emit warning "history not written (disk full?)"
    fi
}

history_event() {
    # history_event OP RELEASE RESULT DETAIL: a non-switch event (hook, health check) in the history.
    record_history "{\"op\": \"$1\", \"release\": \"$2\", \"result\": \"$3\", \"detail\": \"$(json_text "$4")\", \"run\": \"$(json_text "${opt_run:-}")\", \"time\": \"$(json_text "${opt_now:-}")\"}"
}

json_text() {
    # json_text TEXT: TEXT made safe inside a JSON string (quotes, backslashes, control characters).
    printf '%s' "$1" | tr -d '\000-\037' | sed 's/\\/\\\\/g; s/"/\\"/g' | cut -c 1-300
}

# --- the fleet lock: a folder holding "TOKEN\nJSON" in info and this host's boot id in boot ---
# It is made whole under a temporary name, flushed, then renamed into place: the lock is never
# visible without its details, also after a power cut. A lock taken before this host's current
# boot is stale by proof: every session that could act under it died with that boot, and fencing
# stops its run from acting again (its token is no longer the lock's); the next run clears it.

host_boot_id() {
    # host_boot_id: this boot's id (Linux) in $boot_id; "" where the host has none (then no lock is
    # judged by it).
    line=
    [ ! -r /proc/sys/kernel/random/boot_id ] || first_line /proc/sys/kernel/random/boot_id
    boot_id=$line
}

lock_before_boot() {
    # lock_before_boot: whether the lock records a boot of this host other than the current one.
    [ -f .deployer/lock/boot ] || return 1
    host_boot_id
    first_line .deployer/lock/boot
    [ -n "$line" ] && [ -n "$boot_id" ] && [ "$line" != "$boot_id" ]
}

emit_lock_held() {
    # A lock left by an older version of the tool may be a bare folder for a moment: look again once.
    [ -f .deployer/lock/info ] || sleep 1
    held_token='' held_info=''
    if [ -f .deployer/lock/info ]; then
        { IFS= read -r held_token; IFS= read -r held_info; } < .deployer/lock/info || true
    fi
    emit lock held "$held_token" "$held_info"
    if lock_before_boot; then
        emit warning "the lock was taken before this host's last boot: the run that took it can no longer act here, and the next deploy or rollback clears it"
    fi
}

lock_token() {
    # lock_token: the token the lock holds in $token ("" for none), read by the shell itself.
    line=
    [ ! -f .deployer/lock/info ] || first_line .deployer/lock/info
    token=$line
}

lock_take() {
    # lock_take TOKEN INFO: take the lock (or find it already ours); otherwise report who holds it.
    [ -d .deployer ] || mkdir -p .deployer || fail 30 "cannot create $(pwd)/.deployer"
    if [ -d .deployer/lock ]; then
        lock_token
        if [ "$token" = "$1" ]; then
            emit lock taken
            return 0
        fi
        if ! lock_before_boot; then
            emit_lock_held
            return 0
        fi
        first_line .deployer/lock/info
        emit warning "cleared a lock taken before this host's last boot (run ${line%"${line#????????????}"}): no session of that run survived the reboot"
        rm -rf .deployer/lock.stale
        mv .deployer/lock .deployer/lock.stale && rm -rf .deployer/lock.stale
    fi
    lt_new=.deployer/lock.new.$$
    if [ -e "$lt_new" ] || [ -h "$lt_new" ]; then rm -rf "$lt_new"; fi
    host_boot_id
    if ! { mkdir "$lt_new" && exclusive_write "$lt_new/info" '%s\n' "$1
$2" \
        && exclusive_write "$lt_new/boot" '%s\n' "$boot_id" && flush "$lt_new/info"; }; then
        rm -rf "$lt_new"
        fail 30 "cannot write the lock in $(pwd)/.deployer (disk full?)"
    fi
    # Onto a lock another run published meanwhile, mv puts ours inside it: then it is theirs.
    mv "$lt_new" .deployer/lock 2>/dev/null
    lock_token
    if [ "$token" = "$1" ]; then
        # The rename is not flushed here (a process fewer in every operation): lost to a power cut,
        # the lock is simply not there after the reboot, as a lock from before the reboot would be
        # cleared (the run that took it cannot act again: fencing); the switch's flush keeps it.
        emit lock taken
    else
        rm -rf ".deployer/lock/lock.new.$$" "$lt_new"
        emit_lock_held
    fi
}

lock_release() {
    # lock_release TOKEN: remove the lock only if it holds TOKEN (compare-and-delete; "-" stands for
    # a lock without a token: no info file yet). @unlocked confirms; @lock_changed TOKEN says whose
    # lock is there instead (left alone); @lock_absent that there is none.
    if [ ! -d .deployer/lock ]; then
        emit lock_absent
        return 0
    fi
    lr_want=$1
    [ "$lr_want" != - ] || lr_want=
    lock_token
    lr_have=$token
    if [ "$lr_have" != "$lr_want" ]; then
        emit lock_changed "$lr_have"
        return 0
    fi
    stop_recorded_session  # a session still acting under this lock stops first
    [ ! -e .deployer/lock.gone ] || rm -rf .deployer/lock.gone
    if mv .deployer/lock .deployer/lock.gone && rm -rf .deployer/lock.gone; then
        unflushed=.deployer
        emit unlocked
    else
        emit warning "could not remove the lock"
    fi
}

# --- fencing: a session changes this host only while the lock holds its run's token ---

fence_enter() {
    # fence_enter: at the start of a session that changes the host (fence=TOKEN given). Refuses
    # unless the lock holds TOKEN; stops an earlier session of this host still running under the
    # lock (one the controller gave up on: a timeout, a lost connection), with everything it
    # started, before this one acts; then records this session as the one acting.
    [ -n "${opt_fence:-}" ] || return 0
    fence
    stop_recorded_session
    process_start $$
    fence_me=$$${ps_start:+ $ps_start}
    if ! { printf '%s\n' "$fence_me" > ".deployer/lock/session.$$" && mv -f ".deployer/lock/session.$$" .deployer/lock/session; }; then
        fail 30 "cannot record this session in $(pwd)/.deployer/lock"
    fi
}

fence() {
    # fence: immediately before each change to the host: the lock still holds this run's token and
    # no later session took over from this one; otherwise stop, changing nothing more.
    [ -n "${opt_fence:-}" ] || return 0
    lock_token
    if [ "$token" != "$opt_fence" ]; then
        fail 35 "this run no longer holds the lock on this host; nothing more was changed here"
    fi
    if [ -n "${fence_me:-}" ]; then
        line=
        [ ! -f .deployer/lock/session ] || first_line .deployer/lock/session
        [ "$line" = "$fence_me" ] || fail 35 "a later session took over this host; nothing more was changed here"
    fi
}

stop_recorded_session() {
    # stop_recorded_session: the session recorded under the lock (.deployer/lock/session: its pid
    # and start time), if it is not this one, stops (stop_session).
    [ -f .deployer/lock/session ] || return 0
    first_line .deployer/lock/session
    sr_pid=${line%% *}
    sr_start=${line#"$sr_pid"}
    case $sr_pid in
        '' | *[!0-9]* | "$$") return 0 ;;
    esac
    stop_session "$sr_pid" "${sr_start# }"
}

process_start() {
    # process_start PID: when process PID started, in $ps_start ("" when this host cannot tell): the
    # kernel's start time (/proc/PID/stat, field 22, read without a process), else ps's `lstart`
    # (BSD, macOS). A pid and its start time name one process: a pid alone is reused.
    ps_start=
    if [ -r "/proc/$1/stat" ]; then
        IFS= read -r ps_rest < "/proc/$1/stat" 2>/dev/null || return 0
        ps_rest=${ps_rest##*) }  # after the command name, which may hold spaces and parentheses
        ps_field=3
        while [ "$ps_field" -lt 22 ]; do
            ps_rest=${ps_rest#* }
            ps_field=$((ps_field + 1))
        done
        ps_start=${ps_rest%% *}
        case $ps_start in
            '' | *[!0-9]*) ps_start= ;;
        esac
    elif [ ! -d /proc/self ]; then
        ps_start=$(ps -o lstart= -p "$1" 2>/dev/null) || ps_start=
    fi
}

stop_session() {
    # stop_session PID [START]: stop an earlier session of the tool (its process group: sshd makes
    # each session's shell a group leader) if it still runs and is the one recorded: the same start
    # time (when one was recorded: pids are reused, and many hosts of a test fleet share one kernel
    # and its pids) and a command line naming a deployer script; wait until it is gone (at most 10 s).
    if [ -n "${2:-}" ]; then
        process_start "$1"
        [ "$ps_start" = "$2" ] || return 0  # that session ended; its pid is another process's now
    fi
    if [ -r "/proc/$1/cmdline" ]; then
        ss_args=$(tr '\000' ' ' < "/proc/$1/cmdline" 2>/dev/null)
    else  # BusyBox's ps has no -p: the whole list, this pid's line
        ss_args=$(ps -A -o pid= -o args= 2>/dev/null | awk -v pid="$1" '$1 == pid { $1 = ""; print }')
    fi
    case $ss_args in
        *" deployer-"*) ;;
        *) return 0 ;;
    esac
    emit warning "stopping an earlier session of this run still running on this host (pid $1)"
    kill -KILL -"$1" 2>/dev/null || kill -KILL "$1" 2>/dev/null
    ss_waited=0
    while [ "$ss_waited" -lt 10 ] && any_alive "$1"; do
        sleep 1
        ss_waited=$((ss_waited + 1))
    done
}

# --- hooks, health checks and other commands run on the host ---

run_command() {
    # run_command DIR SECONDS LOG COMMAND [sudo]: run COMMAND with sh in DIR, bounded by SECONDS; output to LOG.
    if [ "${5:-}" = sudo ]; then
        run_as_root "$@"
        return
    fi
    (cd "$1" && run_bounded "$2" sh -c "$4") > "$3" 2>&1 < /dev/null
}

run_bounded() {
    # run_bounded SECONDS COMMAND...: COMMAND with its standard input, stopped after SECONDS (TERM,
    # then KILL 5 s later) with exit status 124, with every process it started. A watchdog in POSIX
    # sh on every host: timeout(1) is missing (macOS) or differs (-k, exit status) between hosts.
    # The watchdog also stops it, and this whole script, as soon as the session is gone: every
    # second it writes one NUL byte to the session's stderr (fd 9; the controller drops NULs), and
    # that write fails once the channel is closed (a controller that gave up on the step, was
    # killed or lost the host), instead of the step running on until its next write to stdout.
    rb_seconds=$1
    shift
    exec 3<&0  # an asynchronous command would otherwise read /dev/null
    "$@" <&3 3<&- 9>&- &
    rb_pid=$!
    exec 3<&-
    # The watchdog says whether it fired by its own exit status (124 timed out, 129 session gone),
    # not by a file: a file at a known path could be made by anyone on the host to fake a timeout.
    # Once it fired it finishes its work whatever the command does: the top process may exit on
    # TERM while what it started ignores TERM (and, orphaned, is no longer its descendant), so the
    # tree is the one taken when it fired, and the caller's TERM is ignored from then on; anything
    # of that tree (and what it started since) still there after 5 s gets KILL.
    (
        trap 'kill "$rb_sleep" 2>/dev/null; exit 0' TERM
        trap '' PIPE  # a write to the closed session fails (status) rather than ending the watchdog
        rb_left=$rb_seconds
        rb_code=124
        while [ "$rb_left" -gt 0 ]; do
            sleep 1 &
            rb_sleep=$!
            wait "$rb_sleep"
            rb_left=$((rb_left - 1))
            if ! printf '\000' >&9; then
                rb_code=129
                break
            fi
        done
        trap '' TERM
        rb_tree="$rb_pid $(descendants "$rb_pid")"
        # shellcheck disable=SC2086  # the pids, one word each
        kill -TERM $rb_tree 2>/dev/null
        rb_waited=0
        # shellcheck disable=SC2086
        while [ "$rb_waited" -lt 5 ] && any_alive $rb_tree; do
            sleep 1
            rb_waited=$((rb_waited + 1))
        done
        # shellcheck disable=SC2086
        kill_tree $rb_tree
        # Nobody is left to read what this script would say or do next: it ends too ($$ is its pid).
        [ "$rb_code" != 129 ] || kill -KILL "$$"
        exit "$rb_code"
    ) > /dev/null 2>&1 < /dev/null &
    rb_watchdog=$!
    wait "$rb_pid"
    rb_code=$?
    kill "$rb_watchdog" 2>/dev/null
    wait "$rb_watchdog" 2>/dev/null  # a watchdog stopped before its trap is set is reported "Terminated"
    if [ "$?" = 124 ]; then
        rb_code=124
    fi
    return "$rb_code"
}

descendants() {
    # descendants PID...: the pids of every process these started, and theirs, each after its
    # parent (POSIX ps -A -o).
    ps -A -o pid= -o ppid= 2>/dev/null | awk -v roots="$*" '
        { parent[$1] = $2 }
        END {
            count = split(roots, root, " ")
            for (i = 1; i <= count; i++) found[root[i]] = 1
            do {
                more = 0
                for (pid in parent) if (!(pid in found) && (parent[pid] in found)) {
                    found[pid] = 1; more = 1; printf "%s ", pid
                }
            } while (more)
        }'
}

kill_tree() {
    # kill_tree PID...: KILL these processes and every process they started. All are stopped first
    # (STOP, each parent before its children, then what they had started meanwhile: a stopped
    # process forks nothing), so that none of them sees another die and acts on it in between (a
    # shell whose child was killed first runs its next command before its own KILL arrives).
    kt_tree=$*
    kt_new=$kt_tree
    kt_round=0
    while [ -n "$kt_new" ] && [ "$kt_round" -lt 20 ]; do
        # shellcheck disable=SC2086  # the pids, one word each
        kill -STOP $kt_new 2>/dev/null
        # shellcheck disable=SC2086
        kt_new=$(descendants $kt_tree)
        kt_tree="$kt_tree $kt_new"
        kt_round=$((kt_round + 1))
    done
    # shellcheck disable=SC2086
    kill -KILL $kt_tree 2>/dev/null
}

any_alive() {
    # any_alive PID...: whether any of these processes still runs (a zombie, dead but not yet reaped
    # by a parent or an init that does not reap, does not count where /proc tells).
    for aa_pid in "$@"; do
        kill -0 "$aa_pid" 2>/dev/null || continue
        if [ -r "/proc/$aa_pid/stat" ] && IFS= read -r aa_stat < "/proc/$aa_pid/stat" 2>/dev/null; then
            aa_state=${aa_stat##*) }
            [ "${aa_state%% *}" != Z ] || continue
        fi
        return 0
    done
    return 1
}

# Run as root by sudo: the wrapper loads the variables the command should see from a file only
# this user and root can read (mktemp: mode 600), removes it, and runs the command. The password,
# when there is one, reaches `sudo -S` on a pipe; it is never exported, written or on a command line.
# shellcheck disable=SC2016  # expanded by the root-side sh, not here
SUDO_WRAPPER='while IFS= read -r l; do n=${l%% *}; [ -n "$n" ] && v=$(printf "%b." "${l#* }") && export "$n=${v%.}"; done < "$1"
rm -f "$1"
cd "$2" && exec sh -c "$3" < /dev/null'

octal_escaped() {
    # octal_escaped TEXT: every byte as \0ooo, what printf %b turns back into TEXT (od -b: POSIX).
    printf '%s' "$1" | od -An -v -b | awk '{ for (i = 1; i <= NF; i++) printf "\\0%s", $i }'
}

run_as_root() {
    # run_as_root DIR SECONDS LOG COMMAND: like run_command, as root through sudo.
    if ! command -v sudo >/dev/null 2>&1; then
        printf 'sudo is not installed on this host (the inventory sets sudo: true)\n' > "$3"
        return 126
    fi
    mkdir -p .deployer/tmp
    # A file only this user can read: mktemp where the host has it, else created exclusively (set -C).
    if ! sudo_env=$(umask 077 && mktemp .deployer/tmp/sudo-env.XXXXXX 2>/dev/null); then
        sudo_env=".deployer/tmp/sudo-env.$$"
        rm -f "$sudo_env"
        (umask 077 && set -C && : > "$sudo_env") || return 1
    fi
    {
        printf '%s' "${env_pairs:-}"
        for name in DEPLOYER_RELEASE DEPLOYER_DEPLOY_TO DEPLOYER_OPERATION DEPLOYER_PREVIOUS; do
            eval "value=\${$name-}"
            # shellcheck disable=SC2154  # value is set by the eval above
            printf '%s %s\n' "$name" "$(octal_escaped "$value")"
        done
    } > "$sudo_env"
    sudo_env="$PWD/$sudo_env"
    if [ -n "${sudo_password:-}" ]; then
        printf '%s\n' "$sudo_password" |
            run_bounded "$2" sudo -S -p '' -- sh -c "$SUDO_WRAPPER" deployer-sudo "$sudo_env" "$1" "$4" > "$3" 2>&1
    else
        run_bounded "$2" sudo -n -- sh -c "$SUDO_WRAPPER" deployer-sudo "$sudo_env" "$1" "$4" > "$3" 2>&1 < /dev/null
    fi
    sudo_code=$?
    rm -f "$sudo_env"
    if [ "$sudo_code" != 0 ] && grep -q 'must have a tty' "$3" 2>/dev/null; then
        printf '%s\n' "this host's sudoers requires a terminal (Defaults requiretty): allow the deploy user without one, e.g. 'Defaults:$(id -un) !requiretty'" >> "$3"
    fi
    return "$sudo_code"
}

log_tail() {
    # log_tail LOG: the last lines of a command's output, on one line.
    tail -n 5 "$1" 2>/dev/null | tr '\n\t' '  ' | cut -c 1-400
}

run_hook() {
    # run_hook NAME DIR SECONDS RELEASE COMMAND: run a configured hook; emit @hook NAME ok|failed CODE TAIL.
    [ -n "$5" ] || return 0
    emit progress "$1"
    mkdir -p .deployer/logs
    hook_log="$PWD/.deployer/logs/$4.$1.log"
    if run_command "$2" "$3" "$hook_log" "$5" ${opt_sudo:+sudo}; then
        emit hook "$1" ok 0
        return 0
    else
        hook_code=$?
        emit hook "$1" failed "$hook_code" "$(log_tail "$hook_log")"
        history_event "hook" "$4" failed "$1 exited $hook_code"
        return 1
    fi
}

health_check() {
    # health_check RELEASE COMMAND SECONDS RETRIES INTERVAL [EXPECT]: retry until the command succeeds
    # (and, with EXPECT, its output contains EXPECT: the server runs the release just switched to).
    [ -n "$2" ] || return 0
    emit progress health_check
    health_log="$PWD/.deployer/logs/$1.health.log"
    attempt=1
    while :; do
        if run_command current/ "$3" "$health_log" "$2"; then
            if [ -z "${6:-}" ] || grep -F -q -e "$6" "$health_log"; then
                emit health ok "$attempt"
                return 0
            fi
            printf '%s\n' "deployer: the output does not name $6: the server still runs other code" >> "$health_log"
            health_code=0
        else
            health_code=$?
        fi
        if [ "$attempt" -gt "$4" ]; then
            emit health failed "$attempt" "$health_code" "$(log_tail "$health_log")"
            history_event "health_check" "$1" failed "exit $health_code after $attempt attempts"
            return 1
        fi
        attempt=$((attempt + 1))
        pause "$5"
    done
}

# --- finishing: bad marks, pin, pruning ---

mark_bad() {
    # mark_bad ID JSON: record why release ID is known to be bad (kept with the release, removed with it).
    [ -n "$1" ] || return 0
    [ -d "releases/$1" ] || return 0
    if { [ -d .deployer/bad ] || mkdir -p .deployer/bad; } && write_file ".deployer/bad/$1" "$2"; then
        recorded_as marked_bad "$1"
    else
        emit warning "could not mark $1 bad"
    fi
}

set_pin() {
    # set_pin JSON | set_pin "": pin the fleet to a release, or remove the pin.
    if [ -n "$1" ]; then
        if { [ -d .deployer ] || mkdir -p .deployer; } && write_file .deployer/pin "$1"; then
            recorded_as pinned
        else
            emit warning "could not write the pin (disk full?)"
        fi
    elif [ -f .deployer/pin ] || [ -L .deployer/pin ]; then
        if rm -f .deployer/pin; then
            unflushed=.deployer
            emit unpinned
        else
            emit warning "could not remove the pin"
        fi
    else
        emit not_pinned
    fi
}

prune_releases() {
    # prune_releases "ID ID ...": remove these releases (never current), their metadata, and unused cached artifacts.
    [ -n "$1" ] || return 0
    link_text current 2>/dev/null || true
    keep_current=$link
    [ -d .deployer/trash ] || mkdir -p .deployer/trash
    for id in $1; do
        case $id in
            '' | . | .. | */*) continue ;;
        esac
        [ "releases/$id" != "$keep_current" ] || continue
        [ -d "releases/$id" ] || continue
        if mv "releases/$id" ".deployer/trash/$id.$$" && rm -rf ".deployer/trash/$id.$$"; then
            rm -f ".deployer/meta/$id" ".deployer/bad/$id" ".deployer/logs/$id".* ".deployer/signatures/$id.sig"
            unflushed=.deployer
            emit pruned "$id"
        else
            emit warning "could not remove release $id"
        fi
    done
    in_use=' '
    for meta in .deployer/meta/*; do
        [ -f "$meta" ] || continue
        first_line "$meta"
        in_use="$in_use${line#* } "
    done
    for cached in .deployer/artifacts/*.tar.gz; do
        [ -f "$cached" ] || continue
        digest=${cached#.deployer/artifacts/}
        digest=${digest%.tar.gz}
        case $in_use in
            *" $digest "*) ;;
            *) rm -f "$cached" ;;
        esac
    done
}
