"""Fleets to try the tool on, apart from the engine: the local fleet of real sshd hosts in their own
namespaces (`localfleet`, with other userlands and login shells: `userlands`), the Vagrant VM fleet
(`vmfleet`, `vagrant`), the sample app they deploy (`sample_app/`), and the commands that drive them
(`handlers`: demo, fleet-up/down, vm-fleet-up/down, build-sample). The engine never imports this."""
