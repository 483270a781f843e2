# switch DEPLOY_TO target=ID expected=LINK mode=deploy|rollback|revert [option=value...]
# The one switch helper of deploy, rollback and automatic revert:
#   1. refuse unless `current` is still EXPECTED (the raw link text gather read; empty for none);
#   2. mode=deploy: run the before_switch hook, record previousVersion in the target;
#   3. point `current` at releases/ID atomically (temp symlink + rename) and read it back;
#   4. append the switch to the history; record schema, pin, bad mark as asked;
#   5. run the after hook (after_switch for deploys, after_rollback otherwise), then the health check;
#   6. when all of that passed (or unlock_always=1): prune the listed releases and release our lock;
#      with await_verdict=1, only once the controller says the whole batch passed ("commit" on stdin):
#      otherwise ("hold", or the controller gone) the lock stays for the revert or the finish.
# mode=revert treats "already on the target" as done, so a revert can always be rerun.
# shellcheck disable=SC2154  # opt_* are set by parse_options
deploy_to=$1
shift
opt_target='' opt_expected='' opt_mode=deploy opt_previous='' opt_history=''
opt_before_switch='' opt_after_switch='' opt_after_rollback='' opt_hook_timeout=60
opt_health='' opt_health_timeout=10 opt_health_retries=0 opt_health_interval=1 opt_health_expect=''
opt_schema='' opt_pin='' opt_unpin=0 opt_mark_bad='' opt_bad_info='' opt_bad_on_failure='' opt_prune=''
opt_unlock='' opt_unlock_always=0
opt_operation=''
opt_run=''
opt_sudo=''
parse_options "$@"
read_env
target=$opt_target
mode=$opt_mode
[ -n "$target" ] || fail 10 "switch needs target="

cd -P "$deploy_to" || fail 20 "cannot enter $deploy_to"
fence_enter
if [ ! -d "releases/$target" ] || [ -L "releases/$target" ]; then
    fail 20 "release $target is not present in $deploy_to/releases"
fi
read_meta "$target"
case $meta in
    ok\ * | unmanaged\ *) ;;
    *) fail 20 "release $target is not usable (status: ${meta%% *})" ;;
esac
if [ -L current ]; then
    link_text current
    before=$link
elif [ -e current ]; then
    fail 21 "$deploy_to/current is not a symlink; refusing to replace it"
else
    before=
fi

export DEPLOYER_RELEASE="$target" DEPLOYER_DEPLOY_TO="$deploy_to" DEPLOYER_OPERATION="${opt_operation:-$mode}"
export DEPLOYER_PREVIOUS="${before#releases/}"
if [ "$mode" = revert ]; then emit progress reverting; fi

if [ "$mode" = revert ] && [ "$before" = "releases/$target" ]; then
    physical_dir current/
    emit after "$before" "$physical"
    emit already "$before"
else
    if [ "$before" != "$opt_expected" ]; then
        fail 22 "current changed since it was read: now '$before', expected '$opt_expected'"
    fi
    if [ "$mode" = deploy ]; then
        fence
        if ! run_hook before_switch "releases/$target" "$opt_hook_timeout" "$target" "$opt_before_switch"; then
            fail 60 "before_switch hook failed; current not changed"
        fi
        fence
        write_file "releases/$target/previousVersion" "$opt_previous" || fail 30 "cannot write previousVersion (disk full?)"
    fi

    # The atomic switch, portable (no GNU mv -T): a new link already named `current`, made in a
    # scratch folder on the same file system, is moved into the folder holding `current`: one
    # rename(2) replaces the old link (Capistrano's form); readers see the old or the new, never none.
    # The scratch folder stays between switches (two processes fewer each time): only the lock's
    # holder switches, and a link a crash left in it is removed first.
    scratch=.deployer/switch
    [ -d "$scratch" ] || mkdir -p "$scratch" || fail 30 "cannot create $deploy_to/$scratch"
    if [ -e "$scratch/current" ] || [ -h "$scratch/current" ]; then rm -rf "$scratch/current"; fi
    ln -s "releases/$target" "$scratch/current" || fail 30 "cannot create the new link"
    fence
    if ! mv -f "$scratch/current" .; then
        rm -f "$scratch/current"
        fail 30 "cannot move the new link over current"
    fi

    # The folder holding `current` is flushed: a verified switch stays switched after a power cut.
    flush . || emit warning "the switch could not be flushed to disk"
    link_text current
    after=$link
    physical_dir current/
    resolved=$physical
    physical_dir "releases/$target"
    expected_dir=$physical
    emit after "$after" "$resolved"
    if [ "$after" != "releases/$target" ] || [ "$resolved" != "$expected_dir" ]; then
        fail 50 "verification failed: current is '$after' ($resolved), expected releases/$target"
    fi
    emit switched "$before" "$after"
    # Records of the switch, written only by the session that switched (never for "already"), and
    # made durable together (records_commit: one flush for all of them).
    fence
    records_begin
    [ -z "$opt_history" ] || record_history "$opt_history" rotate
    if [ -n "$opt_schema" ]; then
        write_file .deployer/schema "$opt_schema" || emit warning "schema version not recorded (disk full?)"
    fi
    if [ -n "$opt_pin" ]; then
        set_pin "$opt_pin"
    elif [ "$opt_unpin" = 1 ]; then
        set_pin ""
    fi
    mark_bad "$opt_mark_bad" "$opt_bad_info"
    records_commit
fi

code=0
fence
if [ "$mode" = deploy ]; then
    run_hook after_switch current/ "$opt_hook_timeout" "$target" "$opt_after_switch" || code=61
else
    run_hook after_rollback current/ "$opt_hook_timeout" "$target" "$opt_after_rollback" || code=63
fi
if [ "$code" = 0 ]; then
    health_check "$target" "$opt_health" "$opt_health_timeout" "$opt_health_retries" "$opt_health_interval" \
        "$opt_health_expect" || code=62
fi
if [ "$code" = 0 ] && [ "${opt_await_verdict:-}" = 1 ]; then
    emit progress verdict-wait
    verdict=
    IFS= read -r verdict || true
    if [ "$verdict" != commit ]; then
        emit held
        exit 0
    fi
fi
fence
if [ "$code" = 0 ]; then
    prune_releases "$opt_prune"
elif [ "$mode" = deploy ] && [ -n "$opt_bad_on_failure" ]; then
    mark_bad "$target" "$opt_bad_on_failure"  # this session switched the host and saw it fail
fi
if [ "$code" = 0 ] || [ "$opt_unlock_always" = 1 ]; then
    [ -z "$opt_unlock" ] || lock_release "$opt_unlock"
fi
exit "$code"
