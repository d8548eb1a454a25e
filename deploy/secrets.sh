#!/bin/sh
# Creates secrets/ beside docker-compose.yml: one file per secret, mounted by compose at
# /run/secrets/<name>. Generates the passwords and the API keys' pepper; leaves the alert
# channels' files empty (an empty file turns the channel off: write its key there to turn it
# on). Never overwrites a file that exists, so it is safe to run again after adding a secret.
# Usage: deploy/secrets.sh [DIR]   (default: secrets/ beside this script's parent)
set -eu
dir="${1:-$(dirname "$0")/../secrets}"
umask 077
mkdir -p "$dir"
chmod 700 "$dir"  # other users of the host: no way in

generated="db_owner_password db_app_password grafana_reader_password grafana_admin_password api_key_pepper"
optional="alert_link_secret smtp_password alert_webhook_secret telegram_bot_token zalo_access_token zalo_app_secret zalo_refresh_token"
for name in $generated $optional; do
    file="$dir/$name"
    [ -e "$file" ] && continue
    case " $generated " in
        # Hex only: safe in any URL, config file or shell.
        *" $name "*) od -An -N24 -tx1 /dev/urandom | tr -d ' \n' > "$file" ;;
        *) : > "$file" ;;
    esac
    # Readable inside the containers, whose users (postgres, grafana, ioc) own no host file:
    # the directory's mode keeps the host's other users out.
    chmod 644 "$file"
    echo "created $file"
done
