# finish DEPLOY_TO [unlock=TOKEN|-] [pin=JSON | unpin=1] [mark_bad=ID bad_info=JSON] [prune="ID ..."]
#        [signers=place signers_place=ESCAPED revoked_place=ESCAPED policy_place=ESCAPED | signers=remove]
# The end of an operation on a host that is not switched in it (or whose switch already ran):
# bad mark, pin removal, pruning, this host's copy of who may sign replaced (`deployer
# place-signers`), then releasing the lock. Never touches `current`.
# shellcheck disable=SC2154  # opt_* are set by parse_options
deploy_to=$1
shift
opt_unlock='' opt_pin='' opt_unpin=0 opt_mark_bad='' opt_bad_info='' opt_prune=''
opt_signers='' opt_signers_place='' opt_revoked_place='' opt_policy_place=''
parse_options "$@"
[ -d "$deploy_to" ] || { emit deploy_to missing; exit 0; }
cd -P "$deploy_to" || fail 30 "cannot enter $deploy_to"
fence_enter
mark_bad "$opt_mark_bad" "$opt_bad_info"
if [ -n "$opt_pin" ]; then
    set_pin "$opt_pin"
elif [ "$opt_unpin" = 1 ]; then
    set_pin ""
fi
prune_releases "$opt_prune"
case $opt_signers in
    place)
        # the old policy goes first and the new one comes last: a copy cut short has no policy,
        # which staging reads as "signed releases only" and whose digests differ from the inventory's
        rm -f .deployer/signers/policy
        if place_signers "$opt_signers_place" "$opt_revoked_place" "$opt_policy_place"; then
            signers_state
            emit signers "$signers"
        else
            emit warning "could not write $deploy_to/.deployer/signers (disk full?)"
        fi ;;
    remove)
        if rm -rf .deployer/signers; then
            emit signers_removed
        else
            emit warning "could not remove $deploy_to/.deployer/signers"
        fi ;;
esac
[ -z "$opt_unlock" ] || lock_release "$opt_unlock"
emit finished
