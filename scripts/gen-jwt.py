#!/usr/bin/env python3
"""Makes a JWKS and signed tokens for RequestAuthentication, in the shape
of Istio's samples (security/tools/jwt/samples): issuer and subject
testing@secure.istio.io, `demo.jwt` with claim foo=bar, `groups-scope.jwt`
with groups and scope. Keys are made fresh: RSA (RS256, PS256), EC P-256
(ES256) and Ed25519 (EdDSA). Usage: gen-jwt.py DIR [ISSUER]

Writes DIR/jwks.json and DIR/<name>.jwt for: demo, groups-scope, ps256,
es256, eddsa, expired, wrong-key (right kid, other key), alg-none,
other-issuer, audience (aud: weft-test), short (expires in 5 s).
"""
import json
import os
import sys
import time

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

out = sys.argv[1]
issuer = sys.argv[2] if len(sys.argv) > 2 else "testing@secure.istio.io"
os.makedirs(out, exist_ok=True)

rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
other_rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ec_key = ec.generate_private_key(ec.SECP256R1())
ed_key = ed25519.Ed25519PrivateKey.generate()


def jwk(alg, key, kid):
    k = json.loads(alg.to_jwk(key.public_key()))
    k["kid"] = kid
    return k


keys = [
    jwk(RSAAlgorithm, rsa_key, "rsa-1"),
    jwk(ECAlgorithm, ec_key, "ec-1"),
    jwk(OKPAlgorithm, ed_key, "ed-1"),
]
with open(os.path.join(out, "jwks.json"), "w") as f:
    json.dump({"keys": keys}, f)

now = int(time.time())
far = now + 10 * 365 * 24 * 3600
base = {"iss": issuer, "sub": issuer, "iat": now, "exp": far}


def write(name, claims, key, alg, kid):
    token = jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})
    with open(os.path.join(out, name + ".jwt"), "w") as f:
        f.write(token)


write("demo", {**base, "foo": "bar"}, rsa_key, "RS256", "rsa-1")
write("groups-scope", {**base, "groups": ["group1", "group2"], "scope": "scope1 scope2"},
      rsa_key, "RS256", "rsa-1")
write("ps256", base, rsa_key, "PS256", "rsa-1")
write("es256", base, ec_key, "ES256", "ec-1")
write("eddsa", base, ed_key, "EdDSA", "ed-1")
write("expired", {**base, "exp": now - 3600}, rsa_key, "RS256", "rsa-1")
write("wrong-key", base, other_rsa, "RS256", "rsa-1")
write("other-issuer", {**base, "iss": "someone@else"}, rsa_key, "RS256", "rsa-1")
write("audience", {**base, "aud": "weft-test"}, rsa_key, "RS256", "rsa-1")
write("short", {**base, "exp": now + 5}, rsa_key, "RS256", "rsa-1")
with open(os.path.join(out, "alg-none.jwt"), "w") as f:
    f.write(jwt.encode(base, None, algorithm="none"))
