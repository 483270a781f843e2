# stage DEPLOY_TO release=ID digest=SHA256 source=upload|fetch|cache [validate=CMD] [meta=FIELDS] [shared=PATHS]
#       [revision=TEXT] [signature=TEXT principal=P] [signers=DIGESTS]
#       [signers_place=ESCAPED revoked_place=ESCAPED policy_place=ESCAPED] [fetch_gate=1]
# Puts the artifact (source=upload: read from stdin; source=fetch: fetched by this host from the
# URL in the stdin block, DEPLOYER_ARTIFACT_URL, a pull deploy; source=cache: the copy kept from
# an earlier deploy with the same digest) into releases/ID, links the shared paths (one per line in PATHS; a
# trailing / marks a folder) to DEPLOY_TO/shared/, and runs the validate command inside it.
# The release only appears under releases/ once fully unpacked and linked; a failed validation
# leaves it there, marked failed in .deployer/meta/ID, for inspection.
# Signed releases: a host with its own copy of who may sign (.deployer/signers/, placed by the
# first signed deploy from signers_place=..., or by `deployer place-signers`) checks the artifact's
# signature itself, with its own ssh-keygen, before the release leaves staging; with require=yes in
# that copy's policy it refuses a release that came without one, whatever the controller says.
# signers=DIGESTS is what the controller expects that copy to be: another copy is refused.
# fetch_gate=1 (a cap on hosts fetching at once): before fetching, say fetch-wait and wait for a
# "go" line on stdin from the controller; say fetched when done, so the next host may start.
# shellcheck disable=SC2154  # opt_* are set by parse_options
deploy_to=$1
shift
opt_release='' opt_digest='' opt_source=upload opt_validate='' opt_validate_timeout=900 opt_meta='' opt_shared=''
opt_revision='' opt_signature='' opt_principal='' opt_signers='' opt_signers_place='' opt_revoked_place=''
opt_policy_place='' opt_fetch_timeout=300 opt_fetch_gate=''
parse_options "$@"
read_env
release_id=$opt_release
digest=$opt_digest
if [ -z "$release_id" ] || [ -z "$digest" ]; then
    fail 10 "stage needs release= and digest="
fi

if [ ! -d "$deploy_to/.deployer/staging" ] || [ ! -d "$deploy_to/releases" ]; then
    set --
    for dir in releases .deployer/meta .deployer/logs .deployer/artifacts .deployer/staging; do
        set -- "$@" "$deploy_to/$dir"
    done
    if ! reason=$(mkdir -p "$@" 2>&1); then
        fail 30 "cannot create folders in $deploy_to: $reason"
    fi
fi
cd -P "$deploy_to" || fail 30 "cannot enter $deploy_to"
deploy_abs=$PWD
fence_enter
if [ -e "releases/$release_id" ] || [ -L "releases/$release_id" ]; then
    fail 20 "release $release_id already exists on this host; release folders are never reused"
fi

cached=".deployer/artifacts/$digest.tar.gz"
staging=".deployer/staging/$release_id"
[ ! -e "$staging" ] || rm -rf "$staging"
mkdir "$staging" || fail 30 "cannot create $staging"

fetched=0
if [ "$opt_source" = fetch ]; then
    [ -n "${artifact_url:-}" ] || fail 10 "source=fetch needs DEPLOYER_ARTIFACT_URL in the stdin block"
    if [ "$opt_fetch_gate" = 1 ]; then
        emit progress fetch-wait
        fetch_go=
        IFS= read -r fetch_go || true
        [ "$fetch_go" = go ] || { rm -rf "$staging"; fail 10 "the controller never gave this host its turn to fetch"; }
    fi
    emit progress fetching
    part=".deployer/artifacts/.$digest.$$.part"
    if ! fetch_artifact "$part" "$opt_fetch_timeout" ".deployer/logs/$release_id.fetch.log"; then
        rm -rf "$staging" "$part"
        fail 33 "could not fetch the artifact: $fetch_reason"
    fi
    if [ "$opt_fetch_gate" = 1 ]; then emit progress fetched; fi
    sha256_of "$part"
    actual=$sha256
    if [ "$actual" != "$digest" ]; then
        rm -rf "$staging" "$part"
        fail 31 "artifact digest mismatch: expected $digest, the URL served $actual"
    fi
    mv -f "$part" "$cached" || { rm -rf "$staging"; fail 30 "could not store the artifact"; }
    fetched=1
fi
if [ "$opt_source" = upload ]; then
    # One pass over the stream: tee keeps the tarball (for later redeploys) while tar unpacks it;
    # the kept copy is hashed afterwards (from the page cache). Nothing is trusted until the digest
    # matches; until then the release exists only under .deployer/staging/. tee writes to stderr
    # only when it fails (disk full), so a non-empty upload log is the failure signal.
    part=".deployer/artifacts/.$digest.$$.part"
    upload_log=".deployer/logs/$release_id.upload.log"
    unpack_log=".deployer/logs/$release_id.unpack.log"
    # gzip and tar separately, tar inside the folder: tar -z and -C are not in every tar.
    # When the unpacking stops early (not gzip, not tar), cat drains the rest so tee still keeps
    # the whole upload: its digest is checked as sent, and the verdict names the unpacking.
    # Both write their complaints to one log, opened once (no second file to merge and remove).
    tee "$part" 2> "$upload_log" | (
        { gzip -dc | (cd "$staging" && tar -xof -); } 2> "$unpack_log"
        status=$?
        cat > /dev/null
        exit "$status"
    )
    unpacked=$?
    reason=
    if [ "$unpacked" != 0 ] || [ -s "$upload_log" ] || [ ! -f "$part" ]; then
        # Empty on a full disk: the tools' own error messages could not be written there either.
        reason="$(tail -n 4 "$upload_log" "$unpack_log" 2>/dev/null | grep -v -e '^==>' -e '^$' | tr '\n' ' ')"
        case $reason in
            *"No space left"* | *"Disk quota"* | *"File too large"* | "")
                rm -rf "$staging" "$part"
                free_kb
                fail 30 "could not store the artifact in $deploy_to (disk full?): $free KiB free; $reason" ;;
        esac
    fi
    sha256_of "$part"
    actual=$sha256
    if [ "$actual" != "$digest" ]; then
        rm -rf "$staging" "$part"
        fail 31 "artifact digest mismatch: expected $digest, got $actual"
    fi
    if [ -n "$reason" ]; then
        rm -rf "$staging" "$part"
        fail 30 "unpacking failed: $reason"
    fi
    mv -f "$part" "$cached" || fail 30 "could not store the artifact"
else
    [ -f "$cached" ] || fail 20 "no cached artifact $digest on this host"
    [ "$fetched" = 1 ] || { sha256_of "$cached"; actual=$sha256; }
    if [ "$actual" != "$digest" ]; then
        rm -f "$cached"
        rm -rf "$staging"
        fail 31 "artifact digest mismatch: expected $digest, got $actual"
    fi
    if ! gzip -dc < "$cached" 2> "$staging.gzip" | (cd "$staging" && tar -xof -) 2> "$staging.err" ||
        [ -s "$staging.gzip" ]; then
        reason=$(tail -n 3 "$staging.gzip" "$staging.err" 2>/dev/null | grep -v -e '^==>' -e '^$' | tr '\n' ' ')
        rm -rf "$staging" "$staging.err" "$staging.gzip"
        fail 30 "unpacking failed (disk full?): $reason"
    fi
    rm -f "$staging.err" "$staging.gzip"
fi

# What the controller could not check (a pull deploy's artifact never reaches it), the host checks
# in what it unpacked (without the archive's owners: tar -o): no device files, FIFOs or sockets, no
# file of the deployer's own shipped at the top, and no set-id bits (removed, and said). One walk
# of the tree finds either; only a release that has one is walked again to tell which.
suspect=$(find "$staging" \( -type b -o -type c -o -type p -o -type s -o \
    \( -type f \( -perm -4000 -o -perm -2000 \) \) \) -print 2>/dev/null | head -n 1)
odd=
[ -z "$suspect" ] || odd=$(find "$staging" \( -type b -o -type c -o -type p -o -type s \) -print 2>/dev/null | head -n 1)
if [ -n "$odd" ]; then
    rm -rf "$staging"
    fail 20 "the artifact holds a device file, FIFO or socket (${odd#"$staging"/}): not allowed in a release"
fi
for reserved in "$staging"/previousVersion "$staging"/previousVersion.*; do
    if [ -e "$reserved" ] || [ -L "$reserved" ]; then
        rm -rf "$staging"
        fail 20 "the artifact ships ${reserved#"$staging"/}: previousVersion is written by the deployer"
    fi
done
setid=
[ -z "$suspect" ] || setid=$(find "$staging" -type f \( -perm -4000 -o -perm -2000 \) -print 2>/dev/null | head -n 1)
if [ -n "$setid" ]; then
    find "$staging" -type f \( -perm -4000 -o -perm -2000 \) -exec chmod ug-s {} + ||
        { rm -rf "$staging"; fail 30 "cannot remove set-id bits in the release"; }
    emit warning "set-user-id and set-group-id bits were removed from the release (${setid#"$staging"/} and others)"
fi

refuse_signature() {
    rm -rf "$staging" "$staging.sig"
    fail 32 "$1"
}

signer='- -'
if [ -n "$opt_signers_place" ] && [ ! -f .deployer/signers/policy ]; then
    place_signers "$opt_signers_place" "$opt_revoked_place" "$opt_policy_place" ||
        { rm -rf "$staging"; fail 30 "cannot write $deploy_to/.deployer/signers (disk full?)"; }
    emit signers_placed
fi
if [ -d .deployer/signers ]; then
    signers_state
    if [ -n "$opt_signers" ] && [ "$signers" != "$opt_signers" ]; then
        refuse_signature "this host's allowed signers (.deployer/signers) are not the inventory's: changed on this host or in the inventory (\`deployer place-signers\` puts the inventory's there)"
    fi
    require=yes namespace=deployer-release
    if [ -f .deployer/signers/policy ]; then
        first_line .deployer/signers/policy
        for word in $line; do
            case $word in
                require=no) require=no ;;
                namespace=*) namespace=${word#namespace=} ;;
            esac
        done
    fi
    if [ -n "$opt_signature" ]; then
        printf '%s\n' "$opt_signature" > "$staging.sig" || refuse_signature "cannot write the signature (disk full?)"
        verify_signature "$cached" "$staging.sig" "$opt_principal" "$namespace" ||
            refuse_signature "signature refused by this host: $refusal"
        [ -d .deployer/signatures ] || mkdir .deployer/signatures || refuse_signature "cannot create .deployer/signatures"
        mv -f "$staging.sig" ".deployer/signatures/$release_id.sig" || refuse_signature "cannot keep the signature"
        emit signed "$signer" "$signer_fingerprint"
        signer="$signer $signer_fingerprint"
    elif [ "$require" = yes ]; then
        refuse_signature "this host takes only signed releases (.deployer/signers/policy), and this one came without a signature"
    fi
elif [ -n "$opt_signature" ]; then
    refuse_signature "a signature came, but this host has no allowed signers to check it with"
fi

link_shared() {
    # link_shared PATH: replace PATH in the staged release by a link to shared/PATH (seeded from the release once).
    name=${1%/}
    shared_path="$deploy_abs/shared/$name"
    in_release="$staging/$name"
    # No folder on the way may be a link: the release's own `storage -> /etc` would turn the
    # removal and copy below into operations outside the release.
    ls_parent=$staging
    ls_rest=$name
    while [ "${ls_rest#*/}" != "$ls_rest" ]; do
        ls_parent="$ls_parent/${ls_rest%%/*}"
        ls_rest=${ls_rest#*/}
        if [ -L "$ls_parent" ]; then
            rm -rf "$staging"
            fail 20 "shared path $name: ${ls_parent#"$staging"/} is a link in the release; shared paths go through folders only"
        fi
    done
    if [ ! -e "$shared_path" ] && [ ! -L "$shared_path" ]; then
        mkdir -p "$(dirname "$shared_path")" || return 1
        if [ "$name" != "$1" ]; then
            if [ -d "$in_release" ] && [ ! -L "$in_release" ]; then
                cp -pPR "$in_release" "$shared_path" || return 1
            else
                mkdir -p "$shared_path" || return 1
            fi
        elif [ -f "$in_release" ] && [ ! -L "$in_release" ]; then
            cp -p "$in_release" "$shared_path" || return 1
        else
            rm -rf "$staging"
            fail 20 "shared file $name is missing: create $deploy_abs/shared/$name on this host (the release has none to start it from)"
        fi
    fi
    if [ "$name" != "$1" ] && [ ! -d "$shared_path" ]; then
        rm -rf "$staging"
        fail 20 "shared folder $name: $shared_path exists but is not a folder"
    fi
    if [ "$name" = "$1" ] && [ -d "$shared_path" ]; then
        rm -rf "$staging"
        fail 20 "shared file $name: $shared_path is a folder"
    fi
    rm -rf "$in_release" && mkdir -p "$(dirname "$in_release")" && ln -s "$shared_path" "$in_release"
}

if [ -n "$opt_shared" ]; then
    shared_list="$deploy_abs/.deployer/staging/.$release_id.shared"
    printf '%s\n' "$opt_shared" > "$shared_list" || fail 30 "cannot write in $deploy_to/.deployer (disk full?)"
    while IFS= read -r path; do
        [ -n "$path" ] || continue
        if ! link_shared "$path"; then
            rm -rf "$staging"
            fail 30 "cannot link shared path $path (disk full or permission?)"
        fi
    done < "$shared_list"
    rm -f "$shared_list"
fi

# What people call this release (commit, version), in the release itself unless it ships its own.
if [ -n "$opt_revision" ] && [ ! -e "$staging/REVISION" ] && [ ! -L "$staging/REVISION" ]; then
    printf '%s\n' "$opt_revision" > "$staging/REVISION" || { rm -rf "$staging"; fail 30 "cannot write REVISION (disk full?)"; }
fi
meta="$digest ${opt_meta:-- - - - -} $signer"
# "validating" until the release is validated and on stable storage: only then "ok", the one status
# a later deploy reuses or a rollback switches to (a power cut in between leaves "validating").
fence
write_file ".deployer/meta/$release_id" "validating $meta" || { rm -rf "$staging"; fail 30 "cannot write release metadata (disk full?)"; }
if ! reason=$(mv "$staging" "releases/$release_id" 2>&1); then
    rm -rf "$staging" ".deployer/meta/$release_id"
    fail 30 "cannot move the release into $deploy_to/releases/: $reason"
fi

if [ -n "$opt_validate" ]; then
    fence
    emit progress validating
    log="$deploy_abs/.deployer/logs/$release_id.validate.log"
    export DEPLOYER_RELEASE="$release_id" DEPLOYER_RELEASE_DIR="$deploy_abs/releases/$release_id"
    export DEPLOYER_DEPLOY_TO="$deploy_to"
    if run_command "releases/$release_id" "$opt_validate_timeout" "$log" "$opt_validate"; then
        :
    else
        code=$?
        fence
        write_file ".deployer/meta/$release_id" "failed $meta" || true
        emit validate_failed "$code" "$(log_tail "$log")"
        exit 40
    fi
fi
# Durable before usable: every file of the release is on stable storage before its status says
# "ok" (itself written durably), so no host switches to it, now or after a power cut, and a later
# deploy never reuses a release whose files a cut emptied.
flush "releases/$release_id" || fail 30 "cannot flush the release to disk"
fence
write_file ".deployer/meta/$release_id" "ok $meta" || fail 30 "cannot write release metadata (disk full?)"
emit staged "$release_id" "$digest"
