#!/bin/sh
# Writes Mosquitto's password file from the environment, then runs the
# command (the broker). Passwords never sit in the repository or a volume:
# rotating one is changing it in .env and recreating the container.
#
#   MQTT_PLATFORM_PASSWORD     account `firesafe` (ingest)        required
#   MQTT_HEALTHCHECK_PASSWORD  account `healthcheck`              required
#   MQTT_SIM_PASSWORD          account `sim` (simulator)          optional
#   $MOSQUITTO_ACCOUNTS/*.passwd  device and gateway accounts, one
#                              `username:password` per line (# comments)
set -eu

run_dir=${MOSQUITTO_RUN_DIR:-/mosquitto/run}
accounts=${MOSQUITTO_ACCOUNTS:-/mosquitto/accounts}
passwd="$run_dir/passwd"

fail() { echo "mosquitto entrypoint: $*" >&2; exit 1; }

umask 077
mkdir -p "$run_dir"
: > "$passwd.plain"

add() {
    case "$1" in
        ''|*[!A-Za-z0-9_-]*) fail "bad account name '$1' (ids are [A-Za-z0-9_-])" ;;
    esac
    [ -n "$2" ] || fail "account $1 has an empty password"
    printf '%s:%s\n' "$1" "$2" >> "$passwd.plain"
}

add firesafe "${MQTT_PLATFORM_PASSWORD:-}"
add healthcheck "${MQTT_HEALTHCHECK_PASSWORD:-}"
if [ -n "${MQTT_SIM_PASSWORD:-}" ]; then
    add sim "$MQTT_SIM_PASSWORD"
fi
for file in "$accounts"/*.passwd; do
    [ -e "$file" ] || continue
    while IFS= read -r line || [ -n "$line" ]; do
        case "$line" in ''|'#'*) continue ;; esac
        add "${line%%:*}" "${line#*:}"
    done < "$file"
done

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
