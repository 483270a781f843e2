# switch DEPLOY_TO TARGET_ID EXPECTED_CURRENT MODE PREVIOUS_VERSION HISTORY_LINE
# Atomically points `current` at releases/TARGET_ID (temp symlink + rename), then reads it back.
# Refuses when `current` is no longer EXPECTED_CURRENT (the raw link text read by gather, empty
# when there was none). MODE=deploy also records PREVIOUS_VERSION in the target's previousVersion.
deploy_to=$1
target=$2
expected=$3
mode=$4
previous=$5
history_line=$6

cd "$deploy_to" || fail 20 "cannot enter $deploy_to"
if [ ! -d "releases/$target" ] || [ -L "releases/$target" ]; then
    fail 20 "release $target is not present in $deploy_to/releases"
fi
status=$(release_status "$target")
case $status in
    ok\ * | unmanaged\ *) ;;
    *) fail 20 "release $target is not usable (status: ${status%% *})" ;;
esac
if [ -L current ]; then
    before=$(readlink current)
elif [ -e current ]; then
    fail 21 "$deploy_to/current is not a symlink; refusing to replace it"
else
    before=
fi
if [ "$before" != "$expected" ]; then
    fail 22 "current changed since it was read: now '$before', expected '$expected'"
fi
if [ "$mode" = deploy ]; then
    write_file "releases/$target/previousVersion" "$previous" || fail 30 "cannot write previousVersion (disk full?)"
fi

link=".current.$$.tmp"
rm -f "$link"
ln -s "releases/$target" "$link" || fail 30 "cannot create the temporary link"
if ! mv -Tf "$link" current; then
    rm -f "$link"
    fail 30 "cannot rename the temporary link over current"
fi

after=$(readlink current)
resolved=$(cd current/ 2>/dev/null && pwd -P)
expected_dir=$(cd "releases/$target" && pwd -P)
emit after "$after" "$resolved"
if [ "$after" != "releases/$target" ] || [ "$resolved" != "$expected_dir" ]; then
    fail 50 "verification failed: current is '$after' ($resolved), expected releases/$target"
fi
if ! { mkdir -p .deployer && printf '%s\n' "$history_line" >> .deployer/history.jsonl; }; then
    emit warning "history not written"
fi
emit switched "$before" "$after"
