# stage DEPLOY_TO RELEASE_ID DIGEST SOURCE VALIDATE
# Puts the artifact (SOURCE=upload: read from stdin; SOURCE=cache: the copy kept from an earlier
# upload with the same digest) into releases/RELEASE_ID and runs VALIDATE inside it.
# The release only appears under releases/ once fully unpacked; a failed validation leaves it
# there, marked failed in .deployer/meta/RELEASE_ID, for inspection.
deploy_to=$1
release_id=$2
digest=$3
source=$4
validate=$5

mkdir -p "$deploy_to" || fail 30 "cannot create $deploy_to"
cd "$deploy_to" || fail 30 "cannot enter $deploy_to"
mkdir -p releases .deployer/meta .deployer/logs .deployer/artifacts .deployer/staging || fail 30 "cannot create folders in $deploy_to"
if [ -e "releases/$release_id" ] || [ -L "releases/$release_id" ]; then
    fail 20 "release $release_id already exists on this host; release folders are never reused"
fi

cached=".deployer/artifacts/$digest.tar.gz"
if [ "$source" = upload ]; then
    part=".deployer/artifacts/.$digest.$$.part"
    if ! cat > "$part"; then
        rm -f "$part"
        fail 30 "could not store the artifact in $deploy_to (disk full?): $(df -Pk . | awk 'NR == 2 { print $4 }') KiB free"
    fi
    mv -f "$part" "$cached" || fail 30 "could not store the artifact"
fi
[ -f "$cached" ] || fail 20 "no cached artifact $digest on this host"
actual=$(sha256_of "$cached")
if [ "$actual" != "$digest" ]; then
    rm -f "$cached"
    fail 31 "artifact digest mismatch: expected $digest, got $actual"
fi

staging=".deployer/staging/$release_id"
rm -rf "$staging"
mkdir "$staging" || fail 30 "cannot create $staging"
if ! tar -xzf "$cached" -C "$staging" 2> "$staging.err"; then
    reason=$(tail -n 3 "$staging.err" | tr '\n' ' ')
    rm -rf "$staging" "$staging.err"
    fail 30 "unpacking failed: $reason"
fi
rm -f "$staging.err"
write_file ".deployer/meta/$release_id" "validating $digest" || { rm -rf "$staging"; fail 30 "cannot write release metadata (disk full?)"; }
mv "$staging" "releases/$release_id" || fail 30 "cannot move the release into releases/"

if [ -n "$validate" ]; then
    log=".deployer/logs/$release_id.validate.log"
    release_dir="$(pwd -P)/releases/$release_id"
    if (cd "releases/$release_id" && DEPLOYER_RELEASE=$release_id DEPLOYER_RELEASE_DIR=$release_dir \
            DEPLOYER_DEPLOY_TO=$deploy_to sh -c "$validate") > "$log" 2>&1 < /dev/null; then
        :
    else
        code=$?
        write_file ".deployer/meta/$release_id" "failed $digest" || true
        emit validate_failed "$code"
        tail -n 20 "$log"
        exit 40
    fi
fi
write_file ".deployer/meta/$release_id" "ok $digest" || fail 30 "cannot write release metadata (disk full?)"
emit staged "$release_id" "$digest"
