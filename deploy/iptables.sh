#!/usr/bin/env bash
# Redirects TCP port 25 to mailtrail's SMTP_PORT (default 2525), for setups that keep mailtrail
# unprivileged without CAP_NET_BIND_SERVICE (PM2, a plain `npm start`). The systemd unit does not
# need it: it may bind port 25 itself.
#   sudo SMTP_PORT=2525 deploy/iptables.sh        add the redirect (again: no change)
#   sudo SMTP_PORT=2525 deploy/iptables.sh --remove
# Persisted with netfilter-persistent (Debian/Ubuntu package iptables-persistent) when installed.
# A firewall in front (ufw, the cloud's security group) must let in port 25, and on this host
# SMTP_PORT too: after the redirect the INPUT chain sees the packet addressed to SMTP_PORT.
set -euo pipefail

SMTP_PORT="${SMTP_PORT:-2525}"
case "${1:-}" in
  "") action=add ;;
  --remove) action=remove ;;
  *) echo "usage: [SMTP_PORT=2525] $0 [--remove]" >&2; exit 2 ;;
esac
if ! [[ "$SMTP_PORT" =~ ^[0-9]+$ ]] || ((SMTP_PORT < 1 || SMTP_PORT > 65535)); then
  echo "SMTP_PORT must be a port number such as 2525, not '$SMTP_PORT'" >&2
  exit 2
fi

# Connections from outside (PREROUTING), and from this host to its own addresses (OUTPUT on lo),
# so that `swaks --server localhost:25` takes the same path. Mail that mailtrail sends out to other
# servers' port 25 leaves through another interface and is left alone.
rules=(
  "PREROUTING -p tcp --dport 25 -j REDIRECT --to-ports $SMTP_PORT"
  "OUTPUT -o lo -p tcp --dport 25 -j REDIRECT --to-ports $SMTP_PORT"
)

apply() {
  local ipt=$1 rule
  for rule in "${rules[@]}"; do
    read -ra args <<<"$rule"
    if "$ipt" -t nat -C "${args[@]}" 2>/dev/null; then
      if [[ $action == remove ]]; then
        "$ipt" -t nat -D "${args[@]}"
        echo "$ipt: removed: $rule"
      else
        echo "$ipt: already present: $rule"
      fi
    elif [[ $action == add ]]; then
      "$ipt" -t nat -I "${args[@]}"
      echo "$ipt: added: $rule"
    fi
  done
}

if ! command -v iptables >/dev/null; then
  echo "iptables is not installed: apt-get install iptables, then run this again" >&2
  exit 1
fi
apply iptables
# IPv6 NAT needs kernel support that some VMs lack; IPv4 alone is still useful then.
if command -v ip6tables >/dev/null && ip6tables -t nat -L PREROUTING -n >/dev/null 2>&1; then
  apply ip6tables
else
  echo "ip6tables: no IPv6 NAT here; port 25 over IPv6 is not redirected (bind SMTP_PORT=25 with the systemd unit instead)" >&2
fi

if command -v netfilter-persistent >/dev/null; then
  netfilter-persistent save
else
  echo "not persisted: apt-get install iptables-persistent and run this again, or the rules are gone after a reboot" >&2
fi
