"""A batch job's images from and to an S3 prefix (the team stack's bucket, or any S3-compatible
store: AWS_ENDPOINT_URL / P2P_S3_ENDPOINT / MLFLOW_S3_ENDPOINT_URL): inputs brought to a local
staging folder, only what is new or changed (by ETag); outputs and reports uploaded under the
output prefix with the same relative paths."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pix2pix.errors import Pix2PixError, first_line


class ObjectStoreError(Pix2PixError, RuntimeError):
    """An S3 prefix cannot be read or written; the message says what to check."""


def is_s3(location: str) -> bool:
    return location.startswith("s3://")


def split_s3(location: str) -> tuple[str, str]:
    bucket, _, prefix = location.removeprefix("s3://").partition("/")
    return bucket, prefix.rstrip("/") + "/" if prefix else ""


def s3_client():
    import boto3

    endpoint = (
        os.environ.get("AWS_ENDPOINT_URL")
        or os.environ.get("P2P_S3_ENDPOINT")
        or os.environ.get("MLFLOW_S3_ENDPOINT_URL")
    )
    return boto3.client("s3", endpoint_url=endpoint, region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))


def _s3_error(location: str, e: BaseException) -> ObjectStoreError:
    return ObjectStoreError(
        f"{location}: the object store did not answer ({first_line(e)}); check AWS_ENDPOINT_URL and the "
        "credentials, then run the job again (what is done is kept)"
    )


def stage_inputs(location: str, staging: Path) -> int:
    """Download the prefix's objects into `staging` (keys below the prefix as paths), skipping
    those already there with the same ETag; returns how many objects the prefix holds."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = split_s3(location)
    seen_path = staging / ".etags.json"
    seen = json.loads(seen_path.read_text()) if seen_path.is_file() else {}
    count = 0
    try:
        client = s3_client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(prefix) :]
                if not rel or rel.endswith("/"):
                    continue
                count += 1
                dest = staging / rel
                if seen.get(rel) == obj["ETag"] and dest.is_file():
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmp = dest.with_name(f".{dest.name}.part")
                client.download_file(bucket, obj["Key"], str(tmp))
                tmp.replace(dest)
                seen[rel] = obj["ETag"]
    except (BotoCoreError, ClientError) as e:
        raise _s3_error(location, e) from None
    if count == 0:
        raise ObjectStoreError(f"{location}: no objects under this prefix; check the bucket and prefix")
    staging.mkdir(parents=True, exist_ok=True)
    seen_path.write_text(json.dumps(seen))
    return count


def upload_outputs(local: Path, location: str) -> int:
    """Upload the job's outputs and reports under the prefix (same relative paths)."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = split_s3(location)
    files = [p for p in local.rglob("*") if p.is_file() and ".translate" not in p.relative_to(local).parts]
    try:
        client = s3_client()
        for path in files:
            client.upload_file(str(path), bucket, prefix + path.relative_to(local).as_posix())
    except (BotoCoreError, ClientError) as e:
        raise _s3_error(location, e) from None
    return len(files)
