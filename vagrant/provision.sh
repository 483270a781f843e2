#!/bin/sh
# provision.sh DEPLOY_TO PORT DEPLOY_PUBLIC_KEY: make a Debian VM a deploy target for the sample app.
# - a `deploy` user that owns DEPLOY_TO and logs in with DEPLOY_PUBLIC_KEY (the fleet's deploy key,
#   made next to the Vagrantfile; not the vagrant user's per-VM key);
# - the app: the systemd service `sample-app`, running DEPLOY_TO/current/bin/serve on PORT as the
#   deploy user (it serves the release it started from; /health says which; reload re-executes it
#   from the new `current`). Before the first deploy it waits, retrying every 2 s (a `test`, not python3);
# - sudo for the deploy user limited to reloading/restarting that service (the deploy hooks).
# Installs nothing when the box already has python3, curl and sudo (the local box does: no network
# needed). Safe to run again.
set -eu
deploy_to=${1:-/srv/app}
port=${2:-8080}
deploy_key=${3:-}

missing=
for tool in python3 curl sudo; do
    command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
if [ -n "$missing" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086 # a list of package names
    apt-get install -y -qq $missing >/dev/null
fi

if ! id deploy >/dev/null 2>&1; then
    useradd --create-home --shell /bin/bash deploy
fi
install -d -m 700 -o deploy -g deploy /home/deploy/.ssh
if [ -n "$deploy_key" ]; then
    printf '%s\n' "$deploy_key" > /home/deploy/.ssh/authorized_keys
elif [ -f /home/vagrant/.ssh/authorized_keys ]; then
    cp /home/vagrant/.ssh/authorized_keys /home/deploy/.ssh/authorized_keys
fi
chown deploy:deploy /home/deploy/.ssh/authorized_keys
chmod 600 /home/deploy/.ssh/authorized_keys
install -d -o deploy -g deploy "$deploy_to"

cat > /etc/systemd/system/sample-app.service <<UNIT
[Unit]
Description=deployer sample app (the release $deploy_to/current points at, on :$port)
After=network.target
StartLimitIntervalSec=0

[Service]
User=deploy
WorkingDirectory=$deploy_to
# Before the first release the start fails here, cheaply: a failed python3 start costs ~2 s of CPU
# under QEMU's TCG, every RestartSec, and slows everything else on the VM.
ExecStartPre=/bin/test -e $deploy_to/current/bin/serve
ExecStart=/usr/bin/python3 $deploy_to/current/bin/serve --port $port --app $deploy_to/current
ExecReload=/bin/kill -HUP \$MAINPID
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
UNIT

cat > /etc/sudoers.d/deploy-sample-app <<SUDO
deploy ALL=(root) NOPASSWD: /usr/bin/systemctl reload-or-restart sample-app, /usr/bin/systemctl restart sample-app, /bin/systemctl reload-or-restart sample-app, /bin/systemctl restart sample-app
SUDO
chmod 440 /etc/sudoers.d/deploy-sample-app

systemctl daemon-reload
systemctl enable sample-app >/dev/null 2>&1
systemctl restart --no-block sample-app  # before the first release its start fails (and is retried)
echo "provisioned $(hostname): deploy user, $deploy_to, sample-app on :$port"
