"""Model sources in object stores: the environment that configures them, and what a failed call to
a store means. Both sides use the same words: the operator's pre-flight check reports a reason and
the spec field to fix, the runtime's termination message the variable to fix, for the same cause.

Pure and standard library only (both images carry this package; the SDKs are not needed to read
their error codes).
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMES = ("s3", "gs")

# Runtime settings the operator renders from spec.model.s3 / spec.model.gcs.
S3_ENDPOINT_ENV = "MODELDEPLOY_S3_ENDPOINT"
S3_REGION_ENV = "MODELDEPLOY_S3_REGION"
S3_ADDRESSING_ENV = "MODELDEPLOY_S3_ADDRESSING"
GCS_ENDPOINT_ENV = "MODELDEPLOY_GCS_ENDPOINT"
S3_ADDRESSING = ("auto", "path", "virtual")

# The keys a credentials Secret holds: each SDK's own names, read by the SDK itself.
AWS_ACCESS_KEY_ID = "AWS_ACCESS_KEY_ID"
AWS_SECRET_ACCESS_KEY = "AWS_SECRET_ACCESS_KEY"
AWS_SESSION_TOKEN = "AWS_SESSION_TOKEN"  # optional
S3_SECRET_KEYS = (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)
GCS_SECRET_KEY = "key.json"  # a service account's JSON key
GCS_CREDENTIALS_ENV = "GOOGLE_APPLICATION_CREDENTIALS"
GCS_CREDENTIALS_MOUNT = "/var/run/secrets/modeldeploy/gcs"  # the Secret, mounted read-only

# Reasons (the Degraded condition's reason) and the part of the source each one blames.
NOT_FOUND = "ModelSourceNotFound"
ACCESS_DENIED = "ModelSourceAccessDenied"
INVALID_CREDENTIALS = "ModelSourceInvalidCredentials"
WRONG_REGION = "ModelSourceWrongRegion"
UNREACHABLE = "ModelSourceUnreachable"
SECRET_INVALID = "ModelSourceSecretInvalid"
CHECK_FAILED = "ModelSourceCheckFailed"
REASONS = (NOT_FOUND, ACCESS_DENIED, INVALID_CREDENTIALS, WRONG_REGION, UNREACHABLE, SECRET_INVALID, CHECK_FAILED)

BUCKET, KEY, CREDENTIALS, PERMISSION, REGION, ENDPOINT, UNKNOWN = (
    "bucket",
    "key",
    "credentials",
    "permission",
    "region",
    "endpoint",
    "unknown",
)


@dataclass(frozen=True)
class Diagnosis:
    reason: str
    part: str  # which of bucket, key, credentials, permission, region, endpoint is wrong
    detail: str  # what the store said, e.g. "NoSuchBucket (HTTP 404)"


S3_CODES = {
    "NoSuchBucket": (NOT_FOUND, BUCKET),
    "NoSuchKey": (NOT_FOUND, KEY),
    "InvalidAccessKeyId": (INVALID_CREDENTIALS, CREDENTIALS),
    "SignatureDoesNotMatch": (INVALID_CREDENTIALS, CREDENTIALS),
    "InvalidToken": (INVALID_CREDENTIALS, CREDENTIALS),
    "ExpiredToken": (INVALID_CREDENTIALS, CREDENTIALS),
    "TokenRefreshRequired": (INVALID_CREDENTIALS, CREDENTIALS),
    "InvalidClientTokenId": (INVALID_CREDENTIALS, CREDENTIALS),
    "AccessDenied": (ACCESS_DENIED, PERMISSION),
    "AllAccessDisabled": (ACCESS_DENIED, PERMISSION),
    "AccountProblem": (ACCESS_DENIED, PERMISSION),
    "PermanentRedirect": (WRONG_REGION, REGION),
    "AuthorizationHeaderMalformed": (WRONG_REGION, REGION),
    "IllegalLocationConstraintException": (WRONG_REGION, REGION),
    "InvalidBucketName": (NOT_FOUND, BUCKET),
}
# botocore's own exceptions, raised before or instead of an answer from the store.
CLIENT_FAILURES = {
    "EndpointConnectionError": (UNREACHABLE, ENDPOINT),
    "ConnectTimeoutError": (UNREACHABLE, ENDPOINT),
    "ReadTimeoutError": (UNREACHABLE, ENDPOINT),
    "ConnectionClosedError": (UNREACHABLE, ENDPOINT),
    "SSLError": (UNREACHABLE, ENDPOINT),
    "ProxyConnectionError": (UNREACHABLE, ENDPOINT),
    "InvalidEndpointError": (UNREACHABLE, ENDPOINT),
    "NoCredentialsError": (INVALID_CREDENTIALS, CREDENTIALS),
    "PartialCredentialsError": (INVALID_CREDENTIALS, CREDENTIALS),
    "NoRegionError": (WRONG_REGION, REGION),
    # google-auth / requests
    "DefaultCredentialsError": (INVALID_CREDENTIALS, CREDENTIALS),
    "RefreshError": (INVALID_CREDENTIALS, CREDENTIALS),
    "ConnectionError": (UNREACHABLE, ENDPOINT),
    "Timeout": (UNREACHABLE, ENDPOINT),
    "ConnectTimeout": (UNREACHABLE, ENDPOINT),
}


def classify_s3(code: str, status: int | None, *, bucket_missing: bool | None = None) -> Diagnosis:
    """An S3 error code (or botocore exception name) and HTTP status, as a reason and a part.
    A HEAD has no body, so S3 answers it with a bare status: 404 is a missing key unless the bucket
    is known to be missing (``bucket_missing``, from a HEAD of the bucket), and 400 on a HEAD is
    how S3 says the region in the signature is wrong."""
    detail = f"{code} (HTTP {status})" if status else code
    if code in S3_CODES:
        reason, part = S3_CODES[code]
    elif code in CLIENT_FAILURES:
        reason, part = CLIENT_FAILURES[code]
    elif status == 404 or code in ("404", "NotFound"):
        reason, part = NOT_FOUND, BUCKET if bucket_missing else KEY
    elif status == 403 or code in ("403", "Forbidden"):
        reason, part = ACCESS_DENIED, PERMISSION
    elif status in (301, 400) or code in ("301", "400", "BadRequest"):
        reason, part = WRONG_REGION, REGION
    elif status is not None and status >= 500:
        reason, part = UNREACHABLE, ENDPOINT
    else:
        reason, part = CHECK_FAILED, UNKNOWN
    return Diagnosis(reason, part, detail)


def classify_gcs(status: int | None, name: str = "", *, bucket_missing: bool | None = None) -> Diagnosis:
    """A Google Cloud Storage failure (HTTP status of the JSON API, or the exception's class name
    when no answer came), as a reason and a part."""
    detail = f"{name} (HTTP {status})" if status else name
    if name in CLIENT_FAILURES:
        reason, part = CLIENT_FAILURES[name]
    elif status == 404:
        reason, part = NOT_FOUND, BUCKET if bucket_missing else KEY
    elif status == 401:
        reason, part = INVALID_CREDENTIALS, CREDENTIALS
    elif status == 403:
        reason, part = ACCESS_DENIED, PERMISSION
    elif status is not None and status >= 500:
        reason, part = UNREACHABLE, ENDPOINT
    else:
        reason, part = CHECK_FAILED, UNKNOWN
    return Diagnosis(reason, part, detail)
