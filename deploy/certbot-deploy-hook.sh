#!/usr/bin/env bash
# certbot deploy hook for the certificate of mailtrail's host name: certbot keeps its keys
# readable by root only, so copy them where the mailtrail user can read them, then restart
# mailtrail (SMTP STARTTLS loads the certificate at start) and reload nginx (HTTPS).
# Give it to certbot for that one certificate (stored in its renewal configuration):
#   certbot certonly --webroot -w /var/www/certbot -d mail.example.com \
#     --deploy-hook /opt/mailtrail/deploy/certbot-deploy-hook.sh
# and in /etc/mailtrail/mailtrail.env:
#   TLS_KEY=/etc/mailtrail/tls/privkey.pem
#   TLS_CERT=/etc/mailtrail/tls/fullchain.pem
set -euo pipefail
: "${RENEWED_LINEAGE:?this runs as a certbot --deploy-hook, which sets RENEWED_LINEAGE}"

dest=/etc/mailtrail/tls
install -d -m 0750 -o root -g mailtrail "$dest"
install -m 0640 -o root -g mailtrail "$RENEWED_LINEAGE/privkey.pem" "$dest/privkey.pem"
install -m 0644 -o root -g mailtrail "$RENEWED_LINEAGE/fullchain.pem" "$dest/fullchain.pem"

# try-restart: only if it is running (the first issuance may come before mailtrail is set up).
systemctl try-restart mailtrail.service
if systemctl is-active --quiet nginx; then systemctl reload nginx; fi
