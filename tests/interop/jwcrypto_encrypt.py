"""Encrypts standard input as a compact JWE (RSA-OAEP-256 + A256GCM) for the
public JWK given as the first argument, with jwcrypto: an implementation
independent of casesync's."""
import json
import sys

from jwcrypto import jwe, jwk

key = jwk.JWK(**json.loads(sys.argv[1]))
protected = {"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": key.get("kid")}
token = jwe.JWE(sys.stdin.buffer.read(), protected=json.dumps(protected))
token.add_recipient(key)
sys.stdout.write(token.serialize(compact=True))
