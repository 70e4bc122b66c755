"""Schemathesis hooks for casesync (loaded by scripts/schemathesis.sh).

Submissions and attachments are JWEs sent as `application/jose`: text on
the wire, so they are sent as text is.
"""

import schemathesis

schemathesis.serializer.alias("application/jose", "text/plain")
