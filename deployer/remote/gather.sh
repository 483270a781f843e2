# gather DEPLOY_TO: report this host's deployment state as records; changes nothing.
deploy_to=$1
emit hostname "$(uname -n)"
if [ ! -d "$deploy_to" ]; then
    emit deploy_to missing
    exit 0
fi
cd "$deploy_to" || fail 30 "cannot enter $deploy_to"
emit deploy_to present "$(pwd -P)"
if [ -d releases ]; then
    emit releases_dir "$(cd releases && pwd -P)"
fi
if [ -L current ]; then
    emit current link "$(readlink current)"
    if [ -d current/ ]; then
        emit current_resolved "$(cd current/ && pwd -P)"
        if [ -f current/previousVersion ]; then
            emit previous_version "$(head -n 1 current/previousVersion)"
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
    # shellcheck disable=SC2046
    emit release "$id" $(release_status "$id")
done
if [ -f .deployer/history.jsonl ]; then
    emit last_op "$(tail -n 1 .deployer/history.jsonl)"
fi
for cached in .deployer/artifacts/*.tar.gz; do
    [ -f "$cached" ] || continue
    name=${cached#.deployer/artifacts/}
    emit cached "${name%.tar.gz}"
done
emit free_kb "$(df -Pk . | awk 'NR == 2 { print $4 }')"
