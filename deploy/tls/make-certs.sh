#!/usr/bin/env bash
# A private CA and the certificates gRPC TLS needs, for `make up` with deploy/compose.tls.yml and for the
# Kubernetes overlay deploy/k8s/tls (kubectl create secret generic fashion-tls --from-file=deploy/tls/out/).
# Production: issue these from your own CA (cert-manager, Vault); the file names are what the settings expect.
#   deploy/tls/make-certs.sh [OUT_DIR]      (default deploy/tls/out; needs openssl)
set -euo pipefail
out="${1:-deploy/tls/out}"
mkdir -p "$out"
cd "$out"
# Every name a client dials: the compose service names, the Kubernetes Service names (short and namespaced),
# and loopback for the in-container health check.
names="landmark attributes embedding analysis search ingest admin"
san="DNS:localhost,IP:127.0.0.1"
for n in $names; do san="$san,DNS:$n,DNS:$n.fashion,DNS:$n.fashion.svc,DNS:$n.fashion.svc.cluster.local"; done

openssl req -x509 -newkey rsa:3072 -nodes -days 825 -subj "/CN=fashionnet-ca" -keyout ca.key -out ca.pem 2>/dev/null
openssl req -newkey rsa:3072 -nodes -subj "/CN=fashionnet-server" -keyout server.key -out server.csr 2>/dev/null
printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$san" > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 -extfile server.ext \
  -out server.pem 2>/dev/null
openssl req -newkey rsa:3072 -nodes -subj "/CN=fashionnet-client" -keyout client.key -out client.csr 2>/dev/null
printf 'extendedKeyUsage=clientAuth\n' > client.ext
openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 -extfile client.ext \
  -out client.pem 2>/dev/null
rm -f ./*.csr ./*.ext ca.srl
chmod 0644 ./*.pem ./*.key  # read by the unprivileged container user through a read-only mount
echo "wrote $(pwd): ca.pem (trust), server.pem/server.key, client.pem/client.key"
