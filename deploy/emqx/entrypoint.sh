#!/bin/sh
# EMQX for firesafe: writes the built-in database's bootstrap accounts from the
# environment (the same accounts, checks and files as
# deploy/mosquitto/entrypoint.sh), copies the TLS files for the broker's
# user, then runs EMQX's own entrypoint as that user.
#
#   EMQX_NODE__COOKIE          the cluster's Erlang cookie            required (EMQX_COOKIE in .env)
#   MQTT_PLATFORM_PASSWORD     account `firesafe` (ingest)            required
#   MQTT_HEALTHCHECK_PASSWORD  account `healthcheck`                  required
#   MQTT_SIM_PASSWORD          account `sim` (simulator)              optional: unset, no account
#   MQTT_GB26875_PASSWORD      account `gb26875` (GB 26875 gateway) optional: unset, no account
#   $MQTT_ACCOUNTS/*.passwd    device and gateway accounts, `username:password` per line
#   $MQTT_TLS/{ca.crt,server.crt,server.key}
#   EMQX_PREPARE_ONLY=1        write the files and stop (tests/test_compose.py)
set -eu

data=${EMQX_DATA_DIR:-/opt/emqx/data}
etc=${EMQX_ETC_DIR:-/opt/emqx/etc}
acl=${FIRESAFE_ACL:-/firesafe/acl.conf}
accounts=${MQTT_ACCOUNTS:-/firesafe/accounts}
tls=${MQTT_TLS:-/firesafe/tls}
csv="$data/firesafe-accounts.csv"
min_secret=16

fail() { echo "emqx entrypoint: $*" >&2; exit 1; }

cookie=${EMQX_NODE__COOKIE:-}
[ "${#cookie}" -ge "$min_secret" ] || \
    fail "set EMQX_COOKIE in .env (openssl rand -hex 24): the nodes of a cluster share it"

is_id() {
    case "$1" in ''|*[!A-Za-z0-9_-]*) return 1 ;; esac
    [ "${#1}" -le 64 ]
}

check_password() {
    [ -n "$2" ] || fail "account $1 has an empty password"
    case "$2" in
        *change-me*|*CHANGE-ME*) fail "account $1 still has a change-me placeholder password" ;;
        *[!A-Za-z0-9_-]*) fail "account $1: use letters, digits, - and _ in passwords" ;;
    esac
    [ "${#2}" -ge "$min_secret" ] || \
        fail "account $1: password shorter than $min_secret characters (openssl rand -hex 24)"
}

add() {
    check_password "$1" "$2"
    printf '%s,%s,false\n' "$1" "$2" >> "$csv.new"
}

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

umask 077
mkdir -p "$data"
echo "user_id,password,is_superuser" > "$csv.new"
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
mv "$csv.new" "$csv"
echo "emqx entrypoint: $(($(wc -l < "$csv") - 1)) accounts"

for f in ca.crt server.crt server.key; do
    [ -s "$tls/$f" ] || fail "$tls/$f is missing (generate with deploy/tls/make-certs.sh)"
done
mkdir -p "$data/firesafe-tls"
cp "$tls/ca.crt" "$tls/server.crt" "$tls/server.key" "$data/firesafe-tls/"
cp "$acl" "$etc/firesafe-acl.conf"
[ "${EMQX_PREPARE_ONLY:-}" != 1 ] || exit 0

[ "$(id -u)" = 0 ] || fail "run as root (user: \"0:0\"); EMQX itself runs as emqx"
chown -R emqx:emqx "$data" "$etc/firesafe-acl.conf"

export HOME=/home/emqx
exec setpriv --reuid=emqx --regid=emqx --init-groups /usr/bin/docker-entrypoint.sh "$@"
