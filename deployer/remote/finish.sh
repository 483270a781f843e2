# finish DEPLOY_TO [unlock=TOKEN|-] [pin=JSON | unpin=1] [mark_bad=ID bad_info=JSON] [prune="ID ..."]
# The end of an operation on a host that is not switched in it (or whose switch already ran):
# bad mark, pin removal, pruning, then releasing the lock. Never touches `current`.
# shellcheck disable=SC2154  # opt_* are set by parse_options
deploy_to=$1
shift
opt_unlock='' opt_pin='' opt_unpin=0 opt_mark_bad='' opt_bad_info='' opt_prune=''
parse_options "$@"
[ -d "$deploy_to" ] || { emit deploy_to missing; exit 0; }
cd "$deploy_to" || fail 30 "cannot enter $deploy_to"
mark_bad "$opt_mark_bad" "$opt_bad_info"
if [ -n "$opt_pin" ]; then
    set_pin "$opt_pin"
elif [ "$opt_unpin" = 1 ]; then
    set_pin ""
fi
prune_releases "$opt_prune"
[ -z "$opt_unlock" ] || lock_release "$opt_unlock"
emit finished
