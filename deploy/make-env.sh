#!/bin/sh
# Writes a complete .env for docker-compose.yml to stdout: .env.example with
# every required secret filled in from the system's random source.
#
#   sh deploy/make-env.sh > .env              # production: no simulator account
#   sh deploy/make-env.sh --with-sim > .env   # a test estate: `--profile sim` works
#
# Secrets are hex: safe inside the URLs compose builds from them.
set -eu
here=$(dirname "$0")
with_sim=no
[ "${1:-}" = "--with-sim" ] && with_sim=yes

secret() { openssl rand -hex "$1"; }

while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in
        FIRESAFE_ADMIN_TOKEN=) echo "FIRESAFE_ADMIN_TOKEN=$(secret 32)" ;;
        EMQX_COOKIE=) echo "EMQX_COOKIE=$(secret 24)" ;;
        MQTT_SIM_PASSWORD=)
            if [ "$with_sim" = yes ]; then echo "MQTT_SIM_PASSWORD=$(secret 24)"; else echo "$line"; fi ;;
        *_PASSWORD=) echo "$line$(secret 24)" ;;
        *) echo "$line" ;;
    esac
done < "$here/../.env.example"
