#!/usr/bin/env bash
# Installs the Debian packages the conformance scripts drive, when missing (apt; sudo when
# not root). certbot comes from PyPI into a cached venv, installed by the scripts.
set -euo pipefail

# Real peers and tools the conformance scripts drive (Debian packages).
missing=()
for tool in curl openssl jq python3; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
# Knot DNS (authoritative server, and kdig) for acme-certbot-dns.sh; knotd lives in /usr/sbin.
command -v knotd >/dev/null 2>&1 || [[ -x /usr/sbin/knotd ]] || missing+=(knot)
command -v kdig >/dev/null 2>&1 || missing+=(knot-dnsutils)
# micromdm's SCEP client (scepclient) for scep-client.sh and pkcs11-softhsm.sh.
command -v scepclient >/dev/null 2>&1 || missing+=(scep)
# certmonger (getcert and its SCEP helper) and dbus-daemon (certmonger's private bus) for
# scep-certmonger.sh.
command -v getcert >/dev/null 2>&1 || missing+=(certmonger)
command -v dbus-daemon >/dev/null 2>&1 || missing+=(dbus)
# Node.js and npm for acme-node.sh (npm's acme-client), where the machine has none.
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
# lego (the Go ACME client) for acme-lego.sh.
command -v lego >/dev/null 2>&1 || missing+=(lego)
# dehydrated and uacme (with ualpn), two more ACME clients, for acme-dehydrated-uacme.sh.
command -v dehydrated >/dev/null 2>&1 || missing+=(dehydrated)
command -v uacme >/dev/null 2>&1 || missing+=(uacme)
# acmetool and lacme (with lacme-accountd), two more ACME clients, for acme-acmetool-lacme.sh;
# lacme lives in /usr/sbin.
command -v acmetool >/dev/null 2>&1 || missing+=(acmetool)
command -v lacme >/dev/null 2>&1 || [[ -x /usr/sbin/lacme ]] || missing+=(lacme)
command -v lacme-accountd >/dev/null 2>&1 || missing+=(lacme-accountd)
# HAProxy, the TCP-level proxy (PROXY protocol v1 and v2) of proxy-protocol-haproxy.sh; in /usr/sbin.
command -v haproxy >/dev/null 2>&1 || [[ -x /usr/sbin/haproxy ]] || missing+=(haproxy)
# Pebble (Let's Encrypt's test ACME CA), the upstream CA of acme-upstream-pebble.sh.
command -v pebble >/dev/null 2>&1 || missing+=(pebble)
# acme-tiny, and Ruby's acme-client gem with WEBrick (its http-01 responder), for acme-tiny-ruby.sh.
command -v acme-tiny >/dev/null 2>&1 || missing+=(acme-tiny)
ruby -e 'require "acme-client"' 2>/dev/null || missing+=(ruby-acme-client)
ruby -e 'require "webrick"' 2>/dev/null || missing+=(ruby-webrick)
# Go and the Go ACME libraries of cert-manager (x/crypto/acme) and Caddy (acmez), as
# Debian source packages built offline in GOPATH mode, for acme-go-libraries.sh.
command -v go >/dev/null 2>&1 || missing+=(golang-go)
[[ -d /usr/share/gocode/src/golang.org/x/crypto/acme ]] || missing+=(golang-golang-x-crypto-dev)
[[ -d /usr/share/gocode/src/github.com/mholt/acmez ]] || missing+=(golang-github-mholt-acmez-dev)
# SoftHSM2, the PKCS#11 token of tests/pkcs11.rs and pkcs11-softhsm.sh (module and softhsm2-util).
{ [[ -f /usr/lib/softhsm/libsofthsm2.so ]] && command -v softhsm2-util >/dev/null 2>&1; } || missing+=(softhsm2)
# OpenSSL headers for josekit (JWS) through openssl-sys.
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
pkg-config --exists openssl 2>/dev/null || missing+=(libssl-dev)
# python3 -m venv for certbot from PyPI.
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if ((${#missing[@]})); then
    SUDO=""
    if [[ "$(id -u)" != 0 ]]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
