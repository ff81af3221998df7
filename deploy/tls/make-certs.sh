#!/bin/sh
# Makes a private CA and one server certificate for the compose stack's TLS
# endpoints (Mosquitto 8883, the HTTPS proxy of the API and Grafana, the
# database), unless they exist already: run it again and nothing changes.
#
#   deploy/tls/make-certs.sh DIR [HOSTNAME...]
#
# The certificate names `localhost`, the compose service names and every
# HOSTNAME given (or listed in $TLS_HOSTNAMES, space separated): devices and
# browsers must reach the stack by one of them. Give devices DIR/ca.crt to
# verify the broker. To use certificates of your own CA instead, put
# ca.crt, server.crt and server.key in DIR before the first start.
#
# Also writes DIR/db.key, a copy of the key owned by the database's user
# (uid 70 in the timescale/timescaledb image, which is Alpine's postgres):
# PostgreSQL refuses a key that its user does not own or that others can read.
set -eu

dir=${1:?usage: make-certs.sh DIR [HOSTNAME...]}
shift
names="localhost mosquitto api grafana timescaledb proxy ${TLS_HOSTNAMES:-} $*"
# Server certificates: 825 days, the longest most clients accept; the CA: 10 years.
server_days=825
ca_days=3650
db_uid=${DB_UID:-70}

mkdir -p "$dir"
cd "$dir"
umask 077

if [ ! -s server.key ] || [ ! -s server.crt ] || [ ! -s ca.crt ]; then
    if [ ! -s ca.key ]; then
        openssl req -x509 -newkey rsa:3072 -nodes -sha256 -days "$ca_days" \
            -subj "/CN=firesafe local CA" -keyout ca.key -out ca.crt 2>/dev/null
    fi
    san=""
    for name in $names; do
        case "$name" in
            *[!0-9.]*) san="$san,DNS:$name" ;;
            *) san="$san,IP:$name" ;;
        esac
    done
    san="${san#,},IP:127.0.0.1"
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' \
        "$san" > server.ext
    openssl req -newkey rsa:3072 -nodes -sha256 -subj "/CN=firesafe" \
        -keyout server.key -out server.csr 2>/dev/null
    openssl x509 -req -sha256 -days "$server_days" -in server.csr -CA ca.crt -CAkey ca.key \
        -CAcreateserial -extfile server.ext -out server.crt 2>/dev/null
    rm -f server.csr server.ext
    echo "make-certs: server certificate for: $names"
fi

# Public parts readable by all; keys by their owner only.
chmod 644 ca.crt server.crt
chmod 600 server.key
[ -e ca.key ] && chmod 600 ca.key
cp server.key db.key
if [ "$(id -u)" = 0 ]; then
    chown "$db_uid:$db_uid" db.key
fi
chmod 600 db.key
echo "make-certs: $(pwd) ready"
