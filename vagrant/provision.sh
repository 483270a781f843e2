#!/bin/sh
# provision.sh DEPLOY_TO PORT: make a Debian VM a deploy target for the sample app.
# - a `deploy` user that owns DEPLOY_TO and logs in with the same key as the `vagrant` user;
# - the app: a static HTTP server on PORT serving DEPLOY_TO/current/public (it follows the
#   `current` link on every request, so a switch is live at once), with /health answering
#   from the release that is live;
# - sudo for the deploy user limited to reloading that service (for an after_switch hook).
# Safe to run again.
set -eu
deploy_to=${1:-/srv/app}
port=${2:-8080}

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq python3 curl sudo >/dev/null

if ! id deploy >/dev/null 2>&1; then
    useradd --create-home --shell /bin/bash deploy
fi
install -d -m 700 -o deploy -g deploy /home/deploy/.ssh
if [ -f /home/vagrant/.ssh/authorized_keys ]; then
    install -m 600 -o deploy -g deploy /home/vagrant/.ssh/authorized_keys /home/deploy/.ssh/authorized_keys
fi
install -d -o deploy -g deploy "$deploy_to"

cat > /etc/systemd/system/sample-app.service <<UNIT
[Unit]
Description=deployer sample app (serves $deploy_to/current/public)
After=network.target

[Service]
User=deploy
ExecStart=/usr/bin/python3 -m http.server $port --bind 0.0.0.0 --directory $deploy_to/current/public
ExecReload=/bin/kill -HUP \$MAINPID
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
UNIT

cat > /etc/sudoers.d/deploy-sample-app <<SUDO
deploy ALL=(root) NOPASSWD: /bin/systemctl restart sample-app, /bin/systemctl reload sample-app
SUDO
chmod 440 /etc/sudoers.d/deploy-sample-app

systemctl daemon-reload
systemctl enable sample-app >/dev/null 2>&1
systemctl restart sample-app
echo "provisioned $(hostname): deploy user, $deploy_to, sample-app on :$port"
