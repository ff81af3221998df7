#!/bin/sh
# Writes Mosquitto's password file from the environment, then runs the
# command (the broker). Passwords never sit in the repository or a volume:
# rotating one is changing it in .env and recreating the container.
#
#   MQTT_PLATFORM_PASSWORD     account `firesafe` (ingest)        required
#   MQTT_HEALTHCHECK_PASSWORD  account `healthcheck`              required
#   MQTT_SIM_PASSWORD          account `sim` (simulator)          optional: unset, no account
#   MQTT_GB26875_PASSWORD      account `gb26875` (GB 26875 gateway) optional: unset, no account
#   $MOSQUITTO_ACCOUNTS/*.passwd  device and gateway accounts, one
#                              `username:password` per line (# comments);
#                              usernames `{site}/{device}` or
#                              `{site}/gateway/{gateway}` (see ../acl)
#   $MOSQUITTO_TLS/{ca.crt,server.crt,server.key}  the TLS listener's files
#                              (copied for the broker's user; see docs/production.md)
set -eu

run_dir=${MOSQUITTO_RUN_DIR:-/mosquitto/run}
accounts=${MOSQUITTO_ACCOUNTS:-/mosquitto/accounts}
tls=${MOSQUITTO_TLS:-/mosquitto/tls}
passwd="$run_dir/passwd"
# A password must be at least this long (openssl rand -hex 24 gives 48).
min_password=16

fail() { echo "mosquitto entrypoint: $*" >&2; exit 1; }

umask 077
mkdir -p "$run_dir"
: > "$passwd.plain"

# An id of the contract: [A-Za-z0-9_-]{1,64}.
is_id() {
    case "$1" in ''|*[!A-Za-z0-9_-]*) return 1 ;; esac
    [ "${#1}" -le 64 ]
}

check_password() {
    [ -n "$2" ] || fail "account $1 has an empty password"
    case "$2" in
        *change-me*|*CHANGE-ME*) fail "account $1 still has a change-me placeholder password" ;;
    esac
    [ "${#2}" -ge "$min_password" ] || \
        fail "account $1: password shorter than $min_password characters (openssl rand -hex 24)"
}

add() {
    check_password "$1" "$2"
    printf '%s:%s\n' "$1" "$2" >> "$passwd.plain"
}

# A device's or gateway's account: its site is part of the username, which
# is what lets the ACL keep it to that site's topics.
add_device() {
    name=$1
    rest=${name#*/}
    site=${name%%/*}
    [ "$rest" != "$name" ] || \
        fail "bad account name '$name': use {site}/{device} or {site}/gateway/{gateway}"
    is_id "$site" || fail "bad site in account name '$name'"
    case "$rest" in
        gateway/*) is_id "${rest#gateway/}" || fail "bad gateway id in account name '$name'" ;;
        *) is_id "$rest" || fail "bad device id in account name '$name'" ;;
    esac
    add "$name" "$2"
}

add firesafe "${MQTT_PLATFORM_PASSWORD:-}"
add healthcheck "${MQTT_HEALTHCHECK_PASSWORD:-}"
if [ -n "${MQTT_SIM_PASSWORD:-}" ]; then
    add sim "$MQTT_SIM_PASSWORD"
fi
if [ -n "${MQTT_GB26875_PASSWORD:-}" ]; then
    add gb26875 "$MQTT_GB26875_PASSWORD"
fi
for file in "$accounts"/*.passwd; do
    [ -e "$file" ] || continue
    while IFS= read -r line || [ -n "$line" ]; do
        case "$line" in ''|'#'*) continue ;; esac
        add_device "${line%%:*}" "${line#*:}"
    done < "$file"
done

# The TLS listener's certificate and key, readable by the broker's user only.
if [ -d "$tls" ]; then
    for f in ca.crt server.crt server.key; do
        [ -s "$tls/$f" ] || fail "$tls/$f is missing (generate with deploy/tls/make-certs.sh)"
    done
    mkdir -p "$run_dir/tls"
    cp "$tls/ca.crt" "$tls/server.crt" "$tls/server.key" "$run_dir/tls/"
else
    fail "no TLS directory $tls (the certs service or deploy/tls/make-certs.sh makes one)"
fi

# Hash every password in place (PBKDF2-SHA512) and swap the file in.
mosquitto_passwd -U "$passwd.plain"
mv "$passwd.plain" "$passwd"
echo "mosquitto entrypoint: $(wc -l < "$passwd") accounts"

# The broker drops root for the `mosquitto` user: let it read its files.
if [ "$(id -u)" = 0 ] && id mosquitto >/dev/null 2>&1; then
    chown -R mosquitto:mosquitto "$run_dir"
    [ -d /mosquitto/data ] && chown -R mosquitto:mosquitto /mosquitto/data
fi

exec "$@"
