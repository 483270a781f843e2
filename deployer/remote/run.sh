# run DEPLOY_TO release=ID name=NAME command=CMD [timeout=SECONDS] [schema_from=N] [schema_to=N] [record=no]
# Runs a one-off command (database migrations) inside releases/ID, once, on this host; record=no
# (a watch's check on each host, run every few seconds) keeps it out of the history.
# shellcheck disable=SC2154  # opt_* are set by parse_options
deploy_to=$1
shift
opt_release='' opt_name=command opt_command='' opt_timeout=600 opt_schema_from='' opt_schema_to=''
opt_run='' opt_record=yes
parse_options "$@"
read_env
cd -P "$deploy_to" || fail 20 "cannot enter $deploy_to"
fence_enter
[ -d "releases/$opt_release" ] || fail 20 "release $opt_release is not present in $deploy_to/releases"
mkdir -p .deployer/logs
log="$PWD/.deployer/logs/$opt_release.$opt_name.log"
export DEPLOYER_RELEASE="$opt_release" DEPLOYER_DEPLOY_TO="$deploy_to"
export DEPLOYER_SCHEMA_FROM="$opt_schema_from" DEPLOYER_SCHEMA_TO="$opt_schema_to"
fence
if run_command "releases/$opt_release" "$opt_timeout" "$log" "$opt_command"; then
    emit ran "$opt_name" 0 "$(log_tail "$log")"
    [ "$opt_record" = no ] || history_event "$opt_name" "$opt_release" ok "schema $opt_schema_from -> $opt_schema_to"
else
    code=$?
    [ "$opt_record" = no ] || history_event "$opt_name" "$opt_release" failed "exit $code"
    emit ran "$opt_name" "$code" "$(log_tail "$log")"
    exit 64
fi
